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
from rich.table import Table

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
    return Console(soft_wrap=True)


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
    table = Table(title=f"{n} station{'s' * (n != 1)}")
    for col in ("station", "connected", "OCPP", "registration", "vendor", "model", "firmware", "last seen"):
        table.add_column(col)
    for s in data["stations"]:
        table.add_row(s["station_id"], "[green]yes[/]" if s["connected"] else "[red]no[/]",
                      _fmt(s.get("ocpp_version")), s["registration"],
                      _fmt(s["vendor"]), _fmt(s["model"]), _fmt(s["firmware_version"]),
                      _fmt((s["last_seen"] or "")[:19] or None))
    _out().print(table)
    return EXIT_OK


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    s = client.request("GET", f"/api/stations/{_quote(args.station)}")
    if args.json:
        _print_json(s)
        return EXIT_OK
    out = _out()
    out.print(f"[bold]{s['station_id']}[/]  {'[green]connected[/]' if s['connected'] else '[red]offline[/]'}  "
              f"OCPP {_fmt(s.get('ocpp_version'))}  registration {s['registration']}  "
              f"security profile {s['security_profile']}")
    out.print(f"{_fmt(s['vendor'])} {_fmt(s['model'])}, firmware {_fmt(s['firmware_version'])}, serial "
              f"{_fmt(s['serial_number'])}; last boot {_fmt(s['last_boot'])} ({_fmt(s['boot_reason'])}), "
              f"last seen {_fmt(s['last_seen'])}", highlight=False)
    table = Table(title="EVSEs and connectors")
    for col in ("EVSE", "connector", "status", "since"):
        table.add_column(col)
    for e in s["evses"]:
        for c in e["connectors"]:
            table.add_row(str(e["evse_id"]), str(c["connector_id"]), _fmt(c["status"]), _fmt(c["updated_at"]))
    out.print(table)
    if s["variables"]:
        table = Table(title="device model")
        for col in ("component", "variable", "value"):
            table.add_column(col)
        for v in s["variables"]:
            table.add_row(_fmt(v.get("component")), _fmt(v.get("variable")), _fmt(v.get("value")))
        out.print(table)
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
    body = _json_arg(args.body, "--body") if args.body is not None else _parse_pairs(args.fields)
    data = client.request("POST", f"/api/stations/{_quote(args.station)}/commands/{_quote(args.command)}", body)
    _print_answer(data, args)
    return EXIT_OK


def cmd_call(client: Client, args: argparse.Namespace) -> int:
    payload = _json_arg(args.payload, "payload")
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
    out = _out()
    for g in data["transformers"].values():
        flag = " [bold red]SAFE MODE[/]" if g["safe_mode"] else ""
        out.print(f"[bold]{g['transformer']}[/]: limit {_fmt(g['limit_kw'])} kW ({g['limit_source']}){flag}, "
                  f"measured {_fmt(g['measured_kw'])} kW, planned {_fmt(g['planned_kw'])} kW")
        table = Table()
        for col in ("station", "EVSE", "state", "setpoint kW", "actual kW", "delivered kWh", "need kWh"):
            table.add_column(col)
        for s in g["sessions"]:
            table.add_row(s["station_id"], str(s["evse_id"]), s["state"], _fmt(s["setpoint_kw"]),
                          _fmt(s["actual_kw"]), _fmt(s["delivered_kwh"]), _fmt(s["need_kwh"]))
        out.print(table)
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
    table = Table("id token", "type", "status", "group")
    for t in state["id_tokens"]:
        table.add_row(t["id_token"], _fmt(t["type"]), _fmt(t["status"]), _fmt(t["group_id"]))
    out.print(table)
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

    p = sub.add_parser("show", help="show one station: boot info, connectors, device model", epilog=epilog,
                       formatter_class=fmt)
    p.add_argument("station")
    _common(p)
    p.set_defaults(func=_run(cmd_show))

    p = sub.add_parser("send", help="send a typed command, e.g. 'send CS-1 reset type=Immediate'", epilog=epilog,
                       formatter_class=fmt)
    p.add_argument("station")
    p.add_argument("command", help="reset, change-availability, unlock-connector, trigger-message, "
                                   "request-start-transaction, ... (GET /api/commands lists them)")
    p.add_argument("fields", nargs="*", help="key=value (values are JSON when they parse, else strings)")
    p.add_argument("--body", help="the whole body as JSON ('-' reads stdin) instead of key=value")
    _common(p)
    p.set_defaults(func=_run(cmd_send))

    p = sub.add_parser("call", help="send any OCPP 2.0.1 action with a JSON payload", epilog=epilog,
                       formatter_class=fmt)
    p.add_argument("station")
    p.add_argument("action", help="e.g. DataTransfer, GetLog, SetNetworkProfile")
    p.add_argument("payload", nargs="?", default="{}", help="JSON payload ('-' reads stdin; default {})")
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
