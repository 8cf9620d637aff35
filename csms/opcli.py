"""Operator subcommands of ``csms`` that wrap the HTTP API for the common tasks.

They find the API from ``--url``/``--token``, then ``CSMS_API_URL``/``CSMS_API_TOKEN``, then the
config file (``--config``, ``CSMS_CONFIG`` or ./config.yaml: the api section and its token file).
Exit codes are part of the interface (scripts rely on them); see ``EXIT_CODES``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from csms.clitables import Col, out_console, print_table
from csms.opfields import call_payload, command_help, send_body
from csms.opshow import TX_COLS, composite_text, render_station, transaction_rows, when

EXIT_OK = 0
EXIT_ERROR = 1  # anything unexpected
EXIT_USAGE = 2  # bad command line (argparse)
EXIT_CONFIG = 3  # no usable config / token
EXIT_AUTH = 4  # 401/403: token missing, wrong or without the needed scope
EXIT_NOT_FOUND = 5  # 404: unknown station, transaction, token, transformer, session
EXIT_CONFLICT = 6  # 409: the station is not connected (or not blocked, for unblock)
EXIT_INVALID = 7  # 400/413/422: the request was refused as invalid (the message names the field)
EXIT_STATION_ERROR = 8  # 502: the station answered with a CALLERROR
EXIT_TIMEOUT = 9  # 504: the station did not answer in time
EXIT_UNAVAILABLE = 10  # API unreachable, 503 (part not configured) or another 5xx

EXIT_CODES = {
    EXIT_OK: "success", EXIT_ERROR: "unexpected error", EXIT_USAGE: "bad command line",
    EXIT_CONFIG: "no usable config or token", EXIT_AUTH: "token refused (401/403)", EXIT_NOT_FOUND: "not found (404)",
    EXIT_CONFLICT: "station not connected / conflict (409)", EXIT_INVALID: "invalid request (400/413/422)",
    EXIT_STATION_ERROR: "station answered with a CALLERROR (502)", EXIT_TIMEOUT: "station did not answer (504)",
    EXIT_UNAVAILABLE: "API unreachable or not configured (503/5xx)",
}
_BY_STATUS = {400: EXIT_INVALID, 401: EXIT_AUTH, 403: EXIT_AUTH, 404: EXIT_NOT_FOUND, 405: EXIT_ERROR,
              409: EXIT_CONFLICT, 413: EXIT_INVALID, 422: EXIT_INVALID, 502: EXIT_STATION_ERROR, 504: EXIT_TIMEOUT}
DEFAULT_URL = "http://127.0.0.1:9080"


class CliError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Client:
    url: str
    token: str
    timeout: float = 60.0

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:  # noqa: S310 - operator-given URL
                raw = r.read()
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(EXIT_UNAVAILABLE, f"cannot reach the API at {self.url}: {reason}") from None
        return json.loads(raw) if raw else None

    def stream(self, path: str) -> Any:
        req = urllib.request.Request(self.url.rstrip("/") + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            return urllib.request.urlopen(req, timeout=None)  # noqa: S310 - a live stream has no end
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise CliError(EXIT_UNAVAILABLE, f"cannot reach the API at {self.url}: {getattr(exc, 'reason', exc)}") from None


def _http_error(exc: urllib.error.HTTPError) -> CliError:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        body = {}
    message = body.get("error") or exc.reason
    if body.get("field"):
        message += f" (field: {body['field']})"
    code = _BY_STATUS.get(exc.code, EXIT_UNAVAILABLE if exc.code >= 500 else EXIT_ERROR)
    return CliError(code, f"HTTP {exc.code}: {message}")


def _from_config(path: str | None) -> tuple[str | None, str | None]:
    """API URL and admin token from the daemon's config file (None where it says nothing)."""
    from csms.config import ConfigError, api_token_file, load_config

    path = path or os.environ.get("CSMS_CONFIG") or "config.yaml"
    if not os.path.exists(path):
        return None, None
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise CliError(EXIT_CONFIG, f"invalid configuration {path}:\n{exc}") from None
    from csms.api.auth import TokenFileError, read_token_file
    from csms.api.config import DEFAULT_PORT

    api = config.api
    host = "127.0.0.1" if api.host in ("0.0.0.0", "::") else api.host
    url = f"http://{host if ':' not in host else f'[{host}]'}:{api.port or DEFAULT_PORT}"
    token_file = api_token_file(config)
    token = None
    if os.path.exists(token_file):
        try:
            token = read_token_file(token_file)
        except TokenFileError as exc:
            raise CliError(EXIT_CONFIG, str(exc)) from None
    return url, token


def client_from(args: argparse.Namespace) -> Client:
    url = args.url or os.environ.get("CSMS_API_URL")
    token = args.token or os.environ.get("CSMS_API_TOKEN")
    if not url or not token:
        cfg_url, cfg_token = _from_config(args.config)
        url, token = url or cfg_url or DEFAULT_URL, token or cfg_token
    if not token:
        raise CliError(EXIT_CONFIG, "no API token: pass --token, set CSMS_API_TOKEN, or run where the daemon's "
                                    "config and token file are (--config)")
    return Client(url, token, args.timeout)


# Output ----------------------------------------------------------------------------------------
def _out() -> Console:
    return out_console()


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


# Commands --------------------------------------------------------------------------------------
def cmd_stations(client: Client, args: argparse.Namespace) -> int:
    data = client.request("GET", "/api/stations")
    if args.json:
        _print_json(data)
        return EXIT_OK
    n = len(data['stations'])
    cols = (Col("station", whole=True), Col("connected"), Col("OCPP"), Col("registration"), Col("vendor"),
            Col("model"), Col("firmware"), Col("last seen"))
    rows = [[s["station_id"], "yes" if s["connected"] else "no", _fmt((s.get("ocpp_version") or "").removeprefix("ocpp")
                                                                     or None),
             str(s["registration"]), _fmt(s["vendor"]), _fmt(s["model"]), _fmt(s["firmware_version"]),
             when(s["last_seen"])] for s in data["stations"]]
    print_table(_out(), f"{n} station{'s' * (n != 1)}", cols, rows)
    return EXIT_OK


def _composites(client: Client, s: dict[str, Any], active: list[dict[str, Any]]) -> dict[int, str]:
    """The station's own composite schedule of each EVSE that has a transaction or a profile, asked
    live (GetCompositeSchedule is read-only); 'unknown' with the reason when it cannot tell."""
    evses = sorted({t["evse_id"] for t in active if t.get("evse_id")}
                   | {p["evse_id"] for p in s.get("charging_profiles") or [] if p.get("evse_id")})
    if not s["connected"]:
        return {e: "unknown (station offline)" for e in evses}
    quick = Client(client.url, client.token, min(client.timeout, 10.0))
    out: dict[int, str] = {}
    for evse_id in evses:
        try:
            answer = quick.request("POST", f"/api/stations/{_quote(s['station_id'])}/commands/get-composite-schedule",
                                   {"evse_id": evse_id, "duration_s": 3600})
            out[evse_id] = composite_text(answer["response"])
        except CliError as exc:
            out[evse_id] = f"unknown ({exc.message})"
    return out


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    s = client.request("GET", f"/api/stations/{_quote(args.station)}")
    active = client.request("GET", f"/api/transactions?station_id={_quote(args.station)}&active=true")["transactions"]
    if args.json:
        _print_json({**s, "active_transactions": active})
        return EXIT_OK
    composites = {} if args.no_composite else _composites(client, s, active)
    render_station(_out(), s, active, composites)
    return EXIT_OK


def _since(text: str | None) -> str | None:
    """ISO 8601 as given, or a span back from now: 30m, 2h, 1d."""
    import re
    from datetime import UTC, datetime, timedelta

    if text is None:
        return None
    m = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if m:
        span = timedelta(seconds=int(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]])
        return (datetime.now(UTC) - span).isoformat()
    return text


def cmd_transactions(client: Client, args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    query = {k: v for k, v in (("station_id", args.station), ("active", "true" if args.active else None),
                               ("since", _since(args.since)), ("until", _since(args.until)),
                               ("limit", str(args.limit))) if v}
    data = client.request("GET", "/api/transactions?" + urlencode(query))
    if args.json:
        _print_json(data)
        return EXIT_OK
    txs = data["transactions"]
    print_table(_out(), f"{len(txs)} transaction{'s' * (len(txs) != 1)}", TX_COLS, transaction_rows(txs))
    return EXIT_OK


def _parse_pairs(pairs: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CliError(EXIT_USAGE, f"expected key=value, got {pair!r}")
        try:
            body[key] = json.loads(raw)
        except ValueError:
            body[key] = raw
    return body


def _json_arg(text: str | None, what: str) -> Any:
    if text is None:
        return None
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(EXIT_USAGE, f"{what} is not valid JSON: {exc}") from None


def _print_answer(data: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        _print_json(data)
        return
    _out().print(f"{data['station_id']} answered {data['action']} in {data['latency_ms']:.0f} ms:")
    _print_json(data["response"])


def cmd_send(client: Client, args: argparse.Namespace) -> int:
    body = send_body(_json_arg(args.body, "--body") if args.body is not None else _parse_pairs(args.fields))
    try:
        data = client.request("POST", f"/api/stations/{_quote(args.station)}/commands/{_quote(args.command)}", body)
    except CliError as exc:
        if exc.code == EXIT_NOT_FOUND:
            commands = client.request("GET", "/api/commands")
            if args.command not in (commands.get("typed") or {}):
                raise CliError(EXIT_USAGE, f"unknown command {args.command!r}\n"
                                           + command_help(commands, args.command)) from None
        raise
    _print_answer(data, args)
    return EXIT_OK


def cmd_call(client: Client, args: argparse.Namespace) -> int:
    payload = call_payload(_json_arg(args.payload, "payload"))
    data = client.request("POST", f"/api/stations/{_quote(args.station)}/call/{_quote(args.action)}", payload)
    _print_answer(data, args)
    return EXIT_OK


def cmd_limit(client: Client, args: argparse.Namespace) -> int:
    if args.clear:
        if args.kw is not None or args.payload is not None:
            raise CliError(EXIT_USAGE, "--clear takes no limit and no --payload")
        data = client.request("DELETE", f"/api/grid/transformers/{_quote(args.transformer)}/limit"
                                        f"?source={_quote(args.source)}")
        if args.json:
            _print_json(data)
        else:
            _out().print(f"{args.transformer}: limit {data['cleared']} of {data['source']} cleared", highlight=False)
        return EXIT_OK
    if (args.kw is None) == (args.payload is None):
        raise CliError(EXIT_USAGE, "give a limit in kW or --payload JSON (not both)")
    if args.payload is not None:
        payload = _json_arg(args.payload, "--payload")
    else:
        import uuid

        payload = {"signal_id": args.signal_id or f"cli-{uuid.uuid4().hex[:12]}", "limit_kw": args.kw,
                   "source": args.source}
        if args.until:
            payload["valid_until"] = args.until
    data = client.request("POST", f"/api/grid/transformers/{_quote(args.transformer)}/limit", payload)
    if args.json:
        _print_json(data)
    else:
        first = data["intervals"][0] if data.get("intervals") else {}
        _out().print(f"{args.transformer}: signal {data['signal_id']} accepted "
                     f"({_fmt(first.get('limit_kw'))} kW from {_fmt(first.get('start'))} until "
                     f"{_fmt(first.get('end'))})", highlight=False)
    return EXIT_OK


def cmd_grid(client: Client, args: argparse.Namespace) -> int:
    data = client.request("GET", "/api/grid")
    if args.json:
        _print_json(data)
        return EXIT_OK
    from csms.opgrid import render_grid

    render_grid(_out(), data)
    return EXIT_OK


def cmd_tail(client: Client, args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    query = {k: v for k, v in (("kinds", args.kinds), ("station_id", args.station)) if v}
    response = client.stream("/api/events" + (f"?{urlencode(query)}" if query else ""))
    out = _out()
    seen = 0
    try:
        with response:
            for line in response:
                if not line.startswith(b"data: "):
                    continue
                event = json.loads(line[6:])
                if args.json:
                    sys.stdout.write(json.dumps(event) + "\n")
                    sys.stdout.flush()
                else:
                    details = " ".join(f"{k}={v}" for k, v in event["data"].items()
                                       if not isinstance(v, (dict, list)) and v is not None)
                    out.print(f"{event['at'][11:19]} [bold]{event['kind']}[/] {event['station_id'] or ''} {details}",
                              highlight=False)
                seen += 1
                if args.count and seen >= args.count:
                    break
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="")


# Registration ----------------------------------------------------------------------------------
def _run(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        err = Console(stderr=True, soft_wrap=True)
        try:
            code: int = func(client_from(args), args)
            return code
        except CliError as exc:
            err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
            return exc.code
    return run


def cmd_rotate_password(client: Client, args: argparse.Namespace) -> int:
    body = {"password": sys.stdin.readline().rstrip("\r\n")} if args.password_stdin else {}
    answer = client.request("POST", f"/api/stations/{_quote(args.station)}/password", body)
    if args.json:
        _print_json(answer)
    else:
        _out().print(f"{args.station}: password rotation {answer['result']}"
                     + (f" ({answer['reason']})" if answer.get("reason") else ""))
    return EXIT_OK


def cmd_local_list(client: Client, args: argparse.Namespace) -> int:
    state = client.request("GET", f"/api/stations/{_quote(args.station)}/local-list")
    if args.json:
        _print_json(state)
        return EXIT_OK
    out = _out()
    out.print(f"{args.station}: local list version {state['version']} (station reported "
              f"{_fmt(state['reported_version'])})")
    print_table(out, None, (Col("id token", whole=True), Col("type"), Col("status"), Col("group")),
                [[t["id_token"], _fmt(t["type"]), _fmt(t["status"]), _fmt(t["group_id"])] for t in state["id_tokens"]])
    return EXIT_OK


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="API base URL (default: $CSMS_API_URL, else from the config file, else "
                                 f"{DEFAULT_URL})")
    p.add_argument("--token", help="API token (default: $CSMS_API_TOKEN, else the config's token file)")
    p.add_argument("--config", help="daemon config file to find the API and its token (default: $CSMS_CONFIG "
                                    "or config.yaml)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for an answer (default 60)")
    p.add_argument("--json", action="store_true", help="print the API's JSON instead of tables")


def register(sub: Any) -> None:
    epilog = "exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items())
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("stations", help="list stations (via the operator API)", epilog=epilog, formatter_class=fmt)
    _common(p)
    p.set_defaults(func=_run(cmd_stations))

    p = sub.add_parser("show", help="show one station: boot info, connectors, active transaction, charging "
                                    "profiles and composite schedule, device model", epilog=epilog, formatter_class=fmt)
    p.add_argument("station")
    p.add_argument("--no-composite", action="store_true", help="do not ask the station for its composite schedule")
    _common(p)
    p.set_defaults(func=_run(cmd_show))

    p = sub.add_parser("transactions", help="list transactions, newest first, with filters", epilog=epilog,
                       formatter_class=fmt)
    p.add_argument("--station", help="only this station's")
    p.add_argument("--active", action="store_true", help="only running transactions")
    p.add_argument("--since", help="still going at or after this time (running, or ended since): ISO 8601 with a "
                                   "zone, or a span back from now (30m, 2h, 1d)")
    p.add_argument("--until", help="started at or before this time (same forms as --since)")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    _common(p)
    p.set_defaults(func=_run(cmd_transactions))

    p = sub.add_parser("send", help="send a typed command, e.g. 'send CS-1 reset type=Immediate'", epilog=epilog,
                       formatter_class=fmt)
    p.add_argument("station")
    p.add_argument("command", help="reset, change-availability, unlock-connector, trigger-message, "
                                   "request-start-transaction, ... (GET /api/commands lists them)")
    p.add_argument("fields", nargs="*", help="key=value, keys in camelCase as in OCPP (evseId=1; snake_case "
                                             "evse_id=1 also works); values are JSON when they parse, else strings")
    p.add_argument("--body", help="the whole body as JSON ('-' reads stdin) instead of key=value")
    _common(p)
    p.set_defaults(func=_run(cmd_send))

    p = sub.add_parser("call", help="send any OCPP 2.0.1 action with a JSON payload", epilog=epilog,
                       formatter_class=fmt)
    p.add_argument("station")
    p.add_argument("action", help="e.g. DataTransfer, GetLog, SetNetworkProfile")
    p.add_argument("payload", nargs="?", default="{}", help="JSON payload ('-' reads stdin; default {}); keys in "
                                                            "camelCase, snake_case also accepted")
    _common(p)
    p.set_defaults(func=_run(cmd_call))

    p = sub.add_parser("limit", help="post a transformer limit (same format as the MQTT signal)", epilog=epilog,
                       formatter_class=fmt)
    p.add_argument("transformer")
    p.add_argument("kw", nargs="?", type=float, help="the limit in kW, in force from now")
    p.add_argument("--until", help="ISO 8601 end of validity (default: until replaced)")
    p.add_argument("--source", default="operator", help="who set it (default: operator)")
    p.add_argument("--clear", action="store_true", help="remove the limit of --source instead (for good)")
    p.add_argument("--signal-id", help="id of the signal (default: generated)")
    p.add_argument("--payload", help="the whole signal as JSON instead ('-' reads stdin)")
    _common(p)
    p.set_defaults(func=_run(cmd_limit))

    p = sub.add_parser("grid", help="transformers, limits, load and sessions", epilog=epilog, formatter_class=fmt)
    _common(p)
    p.set_defaults(func=_run(cmd_grid))

    p = sub.add_parser("rotate-password", help="give a connected profile-1/2 station a new password (A01)",
                       epilog=epilog, formatter_class=fmt)
    p.add_argument("station")
    p.add_argument("--password-stdin", action="store_true", help="read the new password from stdin "
                                                                "(default: a generated one the station receives)")
    _common(p)
    p.set_defaults(func=_run(cmd_rotate_password))

    p = sub.add_parser("local-list", help="a station's local authorisation list as it confirmed it", epilog=epilog,
                       formatter_class=fmt)
    p.add_argument("station")
    _common(p)
    p.set_defaults(func=_run(cmd_local_list))

    p = sub.add_parser("tail", help="follow the live event stream", epilog=epilog, formatter_class=fmt)
    p.add_argument("--kinds", help="comma-separated kind prefixes, e.g. grid.,transaction.")
    p.add_argument("--station", help="only this station's events")
    p.add_argument("--count", type=int, default=0, help="stop after this many events (default: follow forever)")
    _common(p)
    p.set_defaults(func=_run(cmd_tail))
