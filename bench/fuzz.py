"""Fuzz the station edge from the outside: schema-valid messages and the oddities of issue 16.

``run`` drives a running daemon over its websocket and operator API only. Several stations each
send cases from :mod:`bench.fuzzgen` one after the other (a station waits for each answer, as
OCPP-J requires) and every answer is checked against the case's expectation:

- no InternalError for schema-valid input, and every CALLERROR carries the frame's id (``"-1"``
  only when the id cannot be read), the expected code and, for refusals of a field, its name;
- a binary frame closes the socket with 1003 (the station reconnects);
- afterwards every stored row reads back through the API (stations, traces, transactions with
  their events and meter series, time-filtered lists, commands, id tokens);
- the live event stream opened at the start still delivers an event caused at the end.

The test suite runs it small (tests/test_fuzz_edge.py); ``python -m bench fuzz`` runs it large
against ``python -m csms serve`` and writes bench/results/fuzz-<backend>.json and .md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import websockets
from websockets.asyncio.client import ClientConnection

from bench.fuzzgen import Case, CaseMaker

# Refusals the daemon documents for schema-valid input (docs/protocol.md): an action without a
# handler, and sampled values it cannot use (multiplier outside -9..9, not finite once scaled).
ALLOWED_FOR_VALID = {"NotImplemented", "NotSupported"}
MAX_VIOLATIONS = 50  # kept in the report (all are counted)


@dataclass(frozen=True)
class FuzzSettings:
    frames: int = 3000
    stations: int = 8
    seed: int = 16
    odd_share: float = 0.4
    deadline_s: float = 45.0
    reply_timeout_s: float = 10.0


@dataclass
class FuzzReport:
    settings: dict[str, Any]
    sent: int = 0
    seconds: float = 0.0
    frames_per_s: float = 0.0
    answers: dict[str, dict[str, int]] = field(default_factory=dict)  # case kind -> answer -> count
    violations: int = 0
    examples: list[str] = field(default_factory=list)
    reconnects: int = 0
    readback_requests: int = 0
    readback_errors: list[str] = field(default_factory=list)
    stream_events: int = 0
    stream_alive: bool = False
    rss_mib: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.violations == 0 and not self.readback_errors and self.stream_alive

    def violation(self, text: str) -> None:
        self.violations += 1
        if len(self.examples) < MAX_VIOLATIONS:
            self.examples.append(text[:600])

    def count(self, kind: str, answer: str) -> None:
        per_kind = self.answers.setdefault(kind, {})
        per_kind[answer] = per_kind.get(answer, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


class EventStream:
    """An open ``/api/events`` stream read in the background; every event is kept in order."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.events: list[dict[str, Any]] = []
        self.ended = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, api_url: str, token: str, query: str = "") -> EventStream:
        response = await session.get(f"{api_url}/api/events{query}", headers={"Authorization": f"Bearer {token}"},
                                     timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        if response.status != 200:
            raise RuntimeError(f"/api/events answered {response.status}")
        return cls(response)

    async def _read(self) -> None:
        try:
            async for line in self.response.content:
                if line.startswith(b"data: "):
                    self.events.append(json.loads(line[6:]))
        except (aiohttp.ClientError, asyncio.CancelledError, ConnectionError):
            pass
        finally:
            self.ended.set()

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0,
                       start: int = 0) -> dict[str, Any]:
        """The first event from index ``start`` on that matches; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events[start:]:
                if predicate(ev):
                    return ev
            if self.ended.is_set():
                raise AssertionError("the event stream ended")
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching event within {timeout} s (got {len(self.events)} events)")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        self.response.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


BOOT = {"reason": "PowerUp", "chargingStation": {"vendorName": "Fuzz", "model": "F1"}}


async def _connect(ws_url: str, station_id: str, timeout: float) -> ClientConnection:
    ws = await websockets.connect(f"{ws_url}/{quote(station_id, safe='')}",
                                  subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                                  max_size=None, compression=None, open_timeout=timeout)
    await ws.send(json.dumps([2, "boot", "BootNotification", BOOT]))
    reply = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    if reply[:2] != [3, "boot"] or reply[2].get("status") != "Accepted":
        raise RuntimeError(f"{station_id} was not accepted: {reply}")
    return ws


async def _reply(ws: ClientConnection, timeout: float) -> Any:
    """The next answer, answering (with NotImplemented) any call the daemon makes meanwhile."""
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if isinstance(msg, list) and msg and msg[0] == 2:
            await ws.send(json.dumps([4, msg[1], "NotImplemented", "fuzz station", {}]))
            continue
        return msg


def check(case: Case, reply: Any, report: FuzzReport, station_id: str) -> None:
    """Count the answer and record a violation of the case's expectation."""
    where = f"{station_id} {case.kind}: sent {case.frame[:200]!r}, got {str(reply)[:300]}"
    if not (isinstance(reply, list) and len(reply) >= 3 and reply[0] in (3, 4)):
        report.count(case.kind, "malformed answer")
        report.violation(f"malformed answer: {where}")
        return
    answer = "result" if reply[0] == 3 else str(reply[2])
    report.count(case.kind, answer)
    if reply[1] != case.uid:
        report.violation(f"answer carries id {reply[1]!r}, expected {case.uid!r}: {where}")
    if reply[0] == 4:
        if len(reply) != 5 or not isinstance(reply[3], str) or len(reply[3]) > 255 or not isinstance(reply[4], dict):
            report.violation(f"malformed CALLERROR: {where}")
            return
        if reply[2] == "InternalError":
            report.violation(f"InternalError: {where}")
            return
    if case.expect == "ok":
        if reply[0] == 4 and reply[2] not in ALLOWED_FOR_VALID and not _documented_refusal(reply):
            report.violation(f"schema-valid input refused: {where}")
        return
    if reply[0] != 4 or reply[2] != case.expect:
        report.violation(f"expected {case.expect}: {where}")
    elif case.field is not None and reply[4].get("field") != case.field:
        report.violation(f"expected field {case.field!r}: {where}")


def _documented_refusal(reply: list[Any]) -> bool:
    """A sampled value the daemon cannot use: PropertyConstraintViolation naming meterValue."""
    return reply[2] == "PropertyConstraintViolation" and str(reply[4].get("field", "")).startswith("meterValue")


async def _station(index: int, ws_url: str, s: FuzzSettings, report: FuzzReport, budget: list[int],
                   deadline: float) -> str:
    station_id = f"FUZZ-{index}"
    maker = CaseMaker(s.seed * 1000 + index, station_id, s.odd_share)
    ws = await _connect(ws_url, station_id, s.reply_timeout_s)
    try:
        while budget[0] > 0 and time.monotonic() < deadline:
            budget[0] -= 1
            case = maker.next()
            report.sent += 1
            try:
                await ws.send(case.frame)
                if case.expect.startswith("close:"):
                    await asyncio.wait_for(ws.wait_closed(), s.reply_timeout_s)
                    code = ws.close_code
                    report.count(case.kind, f"close {code}")
                    if f"close:{code}" != case.expect:
                        report.violation(f"{station_id} {case.kind}: expected {case.expect}, closed with {code}")
                else:
                    check(case, await _reply(ws, s.reply_timeout_s), report, station_id)
                    continue
            except websockets.ConnectionClosed:
                report.count(case.kind, f"closed {ws.close_code}")
                report.violation(f"{station_id} {case.kind}: connection closed ({ws.close_code}, {ws.close_reason}) "
                                 f"after {case.frame[:200]!r}")
            except asyncio.TimeoutError:
                report.count(case.kind, "no answer")
                report.violation(f"{station_id} {case.kind}: no answer within {s.reply_timeout_s} s to "
                                 f"{case.frame[:200]!r}")
            await ws.close()
            report.reconnects += 1
            ws = await _connect(ws_url, station_id, s.reply_timeout_s)
    finally:
        await ws.close()
    return station_id


async def readback(session: aiohttp.ClientSession, api_url: str, token: str, station_ids: list[str],
                   report: FuzzReport) -> None:
    """Every stored row must read back through the API: any answer but 200 is an error."""
    headers = {"Authorization": f"Bearer {token}"}

    async def get(path: str) -> Any:
        report.readback_requests += 1
        async with session.get(api_url + path, headers=headers) as r:
            body = await r.read()
            if r.status != 200:
                report.readback_errors.append(f"GET {path}: {r.status} {body[:200]!r}")
                return None
            return json.loads(body)

    for path in ("/api/stations", "/api/commands?limit=10000", "/api/id-tokens",
                 "/api/transactions?limit=10000", "/api/transactions?active=true&limit=10000",
                 "/api/transactions?since=1970-01-01T00:00:00Z&until=2200-01-01T00:00:00Z&limit=10000",
                 "/api/transactions?since=2025-01-01T00:00:00%2B02:00&limit=10000"):
        await get(path)
    for station_id in station_ids:
        sid = quote(station_id, safe="")
        await get(f"/api/stations/{sid}")
        await get(f"/api/stations/{sid}/trace")
        listed = await get(f"/api/transactions?station_id={sid}&limit=10000")
        for tx in (listed or {}).get("transactions", []):
            await get(f"/api/transactions/{sid}/{quote(tx['transaction_id'], safe='')}")


async def run(ws_url: str, api_url: str, token: str, settings: FuzzSettings = FuzzSettings(),
              rss: Callable[[], int] | None = None, say: Callable[[str], None] = lambda _: None) -> FuzzReport:
    """Fuzz the daemon at ``ws_url`` / ``api_url``; ``rss`` reads its resident memory in bytes."""
    report = FuzzReport(settings=asdict(settings))
    mib = 1024 * 1024
    async with aiohttp.ClientSession() as session:
        stream = await EventStream.open(session, api_url, token)
        try:
            if rss is not None:
                report.rss_mib["start"] = rss() / mib
            budget = [settings.frames]
            started = time.monotonic()
            deadline = started + settings.deadline_s
            progress = asyncio.create_task(_progress(report, settings, say))
            try:
                station_ids = await asyncio.gather(*(_station(i, ws_url, settings, report, budget, deadline)
                                                     for i in range(settings.stations)))
            finally:
                progress.cancel()
            report.seconds = time.monotonic() - started
            report.frames_per_s = report.sent / report.seconds if report.seconds else 0.0
            if rss is not None:
                report.rss_mib["end"] = rss() / mib
            say(f"{report.sent} frames in {report.seconds:.1f} s; reading everything back")
            await readback(session, api_url, token, list(station_ids), report)
            report.stream_events = len(stream.events)
            mark = len(stream.events)
            probe = await _connect(ws_url, "FUZZ-PROBE", settings.reply_timeout_s)
            await probe.close()
            try:
                await stream.wait_for(lambda e: e.get("station_id") == "FUZZ-PROBE", timeout=10, start=mark)
                report.stream_alive = True
            except AssertionError as exc:
                report.readback_errors.append(f"live stream: {exc}")
        finally:
            await stream.close()
    return report


async def _progress(report: FuzzReport, s: FuzzSettings, say: Callable[[str], None]) -> None:
    while True:
        await asyncio.sleep(5)
        say(f"{report.sent}/{s.frames} frames, {report.violations} violations")


def summary(report: FuzzReport) -> str:
    """The report as Markdown: totals, then answers per case kind."""
    lines = [f"# Fuzz run ({report.settings.get('backend', 'daemon')}): "
             f"{'no violation' if report.ok else 'VIOLATIONS FOUND'}", "",
             "Written by `python -m bench fuzz`: cases from bench/fuzzgen.py, every answer checked by bench/fuzz.py "
             "(docs/benchmarks.md, \"Edge fuzz run\").", "",
             f"{report.sent:,} frames from {report.settings['stations']} stations in {report.seconds:.1f} s "
             f"({report.frames_per_s:,.0f} frames/s, seed {report.settings['seed']}); {report.reconnects} reconnects; "
             f"{report.readback_requests} API reads, {len(report.readback_errors)} failed; "
             f"{report.stream_events} live events, stream alive at the end: {report.stream_alive}; "
             f"RSS MiB {', '.join(f'{k} {v:.0f}' for k, v in report.rss_mib.items()) or 'not measured'}.", "",
             "| case | answers |", "|---|---|"]
    for kind, answers in sorted(report.answers.items()):
        lines.append(f"| {kind} | {', '.join(f'{a}: {n:,}' for a, n in sorted(answers.items()))} |")
    if report.examples or report.readback_errors:
        lines += ["", f"## Violations ({report.violations})", ""]
        lines += [f"- `{e}`" for e in report.examples + report.readback_errors]
    return "\n".join(lines) + "\n"


def write(report: FuzzReport, out_dir: Path) -> tuple[Path, Path]:
    """bench/results/fuzz-<backend>.json and .md (one pair per store backend)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"fuzz-{report.settings.get('backend', 'daemon')}"
    data, text = out_dir / f"{name}.json", out_dir / f"{name}.md"
    data.write_text(json.dumps(report.to_json(), indent=1, ensure_ascii=False), encoding="utf-8")
    text.write_text(summary(report), encoding="utf-8")
    return data, text


def tally(report: FuzzReport) -> collections.Counter[str]:
    """Answers over all case kinds (for a quick look)."""
    out: collections.Counter[str] = collections.Counter()
    for answers in report.answers.values():
        out.update(answers)
    return out


# `python -m bench fuzz`: the large run against the daemon in its own process ----------------------
LARGE = FuzzSettings(frames=24000, stations=16, seed=16, deadline_s=600.0)


async def run_against_daemon(settings: FuzzSettings, backend: str, out_dir: Path,
                             say: Callable[[str], None]) -> FuzzReport:
    """Start ``python -m csms serve`` (own ports, own store), fuzz it, stop it, write the results."""
    import secrets
    import tempfile
    import uuid

    import yaml

    from bench.servers import ServerProcess, _spawn, _wait_listening, free_port

    token = secrets.token_urlsafe(24)
    prefix = f"nbfuzz:{uuid.uuid4().hex}:"
    with tempfile.TemporaryDirectory(prefix="netbewust-fuzz-") as tmp:
        workdir = Path(tmp)
        port, api_port = free_port(), free_port()
        store: dict[str, Any] = ({"backend": "sqlite", "sqlite_path": str(workdir / "fuzz.db")} if backend == "sqlite"
                                 else {"backend": "redis", "redis_prefix": prefix})
        cfg = {"websocket": {"host": "127.0.0.1", "port": port, "call_timeout_s": 10},
               "registration": {"accept_unknown_id_tokens": True}, "store": store, "logging": {"level": "WARNING"},
               "api": {"port": api_port, "generate_token": False,
                       "tokens": [{"name": "fuzz", "scope": "admin", "token": token}]}}
        cfg_path = workdir / "fuzz.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        log_path = workdir / "csms.log"
        proc = _spawn([sys.executable, "-m", "csms", "serve", "--config", str(cfg_path)], log_path)
        server = ServerProcess("ours", port, "/ocpp", proc, workdir, log_path=log_path)
        try:
            await _wait_listening(server, 30)
            say(f"daemon pid {server.pid} on {backend}; {settings.frames:,} frames from {settings.stations} stations")
            report = await run(f"ws://127.0.0.1:{port}/ocpp", f"http://127.0.0.1:{api_port}", token, settings,
                               rss=lambda: server.rss_kib() * 1024, say=say)
            report.settings["backend"] = backend
        finally:
            exit_code = await server.stop()
            if backend == "redis":
                await _delete_prefix(prefix)
        if exit_code != 0:
            report.readback_errors.append(f"daemon exited with {exit_code}: {server.log_tail()}")
    write(report, out_dir)
    return report


async def _delete_prefix(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url("redis://127.0.0.1:6379/0", decode_responses=True)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def main(argv: list[str]) -> int:
    import argparse

    from rich.console import Console

    parser = argparse.ArgumentParser(prog="python -m bench fuzz",
                                     description="Fuzz the station edge of `python -m csms serve` (issue 16); "
                                                 "results to bench/results/fuzz-<backend>.md and .json")
    parser.add_argument("--frames", type=int, default=LARGE.frames)
    parser.add_argument("--stations", type=int, default=LARGE.stations)
    parser.add_argument("--seed", type=int, default=LARGE.seed)
    parser.add_argument("--backend", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="directory for fuzz.json and fuzz.md (default: bench/results)")
    args = parser.parse_args(argv)
    settings = FuzzSettings(frames=args.frames, stations=args.stations, seed=args.seed, deadline_s=LARGE.deadline_s)
    console = Console(stderr=True)
    started = time.monotonic()

    def say(text: str) -> None:
        console.print(f"[dim]{time.monotonic() - started:6.0f}s[/] [cyan]fuzz[/] {text}", highlight=False)

    report = asyncio.run(run_against_daemon(settings, args.backend, args.out, say))
    console.print(summary(report), highlight=False)
    console.print(f"wrote {args.out}/fuzz-{args.backend}.json and .md")
    return 0 if report.ok else 1
