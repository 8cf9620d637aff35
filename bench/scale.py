"""Part 1, protocol scale: our daemon against the baseline, server on core 0, load generator on core 1.

Four measurements per server, each on a fresh server process:
- sustained validated messages/s in a closed loop over the realistic mix (persistence on for ours);
- latency p50/p99 of station-initiated calls at fixed offered rates (open loop);
- idle connections held and RSS per connection, in steps as far as the fd limit and time allow;
- a reconnect storm: every station drops at once and comes back, booting and delivering one queued
  offline TransactionEvent; time until all are back, and whether anything was lost.
"""

from __future__ import annotations

import asyncio
import random
import resource
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import loadgen
from bench import messages as msg
from bench.loadgen import Progress
from bench.plots import figure, save
from bench.report import Section, Table, percentile, ratio, verdict
from bench.servers import raise_nofile, start
from bench.wsclient import HandshakeError, LeanStation, open_station

KINDS = ("ours", "baseline")
FD_MARGIN = 300  # fds kept free in each process for the store, logs, the event loop


@dataclass(frozen=True)
class ScaleSettings:
    stations: int = 1000  # fleet for throughput (closed loop over `throughput_stations`) and latency
    throughput_stations: int = 500
    warmup_s: float = 2.0
    measure_s: float = 12.0
    rates: tuple[float, ...] = (250, 500, 1000, 2000, 4000)
    rate_s: float = 8.0
    idle_steps: tuple[int, ...] = (1000, 5000, 10000, 15000, 19500)
    idle_budget_s: float = 150.0
    storm_stations: int = 5000
    storm_timeout_s: float = 90.0


FULL = ScaleSettings()
SMOKE = ScaleSettings(stations=30, throughput_stations=20, warmup_s=0.3, measure_s=1.0, rates=(100,), rate_s=1.0,
                      idle_steps=(50,), idle_budget_s=15.0, storm_stations=30, storm_timeout_s=15.0)


# --------------------------------------------------------------------------------------- throughput + latency
async def _throughput_and_latency(kind: str, s: ScaleSettings, work: Path, say: Progress) -> dict[str, Any]:
    server = await start(kind, work / f"{kind}-throughput")
    try:
        fleet = await loadgen.connect_many(loadgen.ids(f"S{kind[0].upper()}", s.stations), server.port, server.prefix)
        started = await loadgen.start_transactions(fleet.stations)
        say(f"{kind}: {len(fleet.stations)} stations up, {started} transactions; closed loop over "
            f"{min(s.throughput_stations, len(fleet.stations))}")
        loop_stations = fleet.stations[:s.throughput_stations]
        tp = await loadgen.closed_loop(loop_stations, s.warmup_s, s.measure_s, server.cpu_seconds)
        say(f"{kind}: {tp.per_s:,.0f} msgs/s (server CPU {tp.server_cpu_s / tp.seconds:.0%}, "
            f"load generator CPU {tp.loadgen_cpu_s / tp.seconds:.0%})")
        rates = []
        for rate in s.rates:
            r = await loadgen.fixed_rate(fleet.stations, rate, s.rate_s)
            rates.append(r)
            say(f"{kind}: {rate:,.0f} msgs/s offered -> p50 {percentile(r.latencies_ms, 50):.1f} ms, "
                f"p99 {percentile(r.latencies_ms, 99):.1f} ms, unanswered {r.unanswered}")
        loadgen.close_all(fleet.stations)
        await loadgen.wait_closed(fleet.stations, 10)
        return {"throughput": tp, "rates": rates, "connect_failures": fleet.failures, "stations": len(fleet.stations)}
    finally:
        await server.stop()


# --------------------------------------------------------------------------------------- idle connections
async def _idle(kind: str, s: ScaleSettings, work: Path, say: Progress) -> dict[str, Any]:
    server = await start(kind, work / f"{kind}-idle")
    limit = raise_nofile() - FD_MARGIN
    steps = sorted({min(n, limit) for n in s.idle_steps})
    points: list[tuple[int, float]] = []
    failures: Counter[str] = Counter()
    deadline = time.monotonic() + s.idle_budget_s
    held: list[LeanStation] = []
    try:
        await asyncio.sleep(0.5)
        rss0 = server.rss_kib()
        for target in steps:
            if time.monotonic() > deadline:
                say(f"{kind}: idle steps stopped at {len(held):,} connections (time budget)")
                break
            ids = [f"I{kind[0].upper()}-{i:06d}" for i in range(len(held), target)]
            fleet = await loadgen.connect_many(ids, server.port, server.prefix, concurrency=300, deadline=deadline)
            held += fleet.stations
            failures += fleet.failures
            await asyncio.sleep(1.0)  # let the server finish the boots' writes
            if not server.alive():
                failures["server died"] += 1
                break
            alive = sum(st.is_open for st in held)
            rss = server.rss_kib()
            points.append((alive, (rss - rss0) / max(alive, 1)))
            say(f"{kind}: {alive:,} idle booted stations held, RSS +{(rss - rss0) / 1024:.0f} MiB "
                f"({points[-1][1]:.1f} KiB per connection)")
            if fleet.failures:
                say(f"{kind}: connect failures {dict(fleet.failures)}")
                break
        return {"points": points, "failures": failures, "rss0_kib": rss0, "fd_limit": limit}
    finally:
        loadgen.close_all(held, abort=True)
        await server.stop()


# --------------------------------------------------------------------------------------- reconnect storm
#: How a station comes back, the same for both servers: a connect + websocket handshake it gives up
#: after STORM_HANDSHAKE_S, a call after STORM_CALL_S; then it drops the socket and tries again after
#: a backoff that doubles from 1 s to 8 s, each wait drawn from 0.5x-1.5x of it. Every station keeps
#: trying until the part's deadline, so a station is lost only when the server did not take it back.
STORM_HANDSHAKE_S = 10.0
STORM_CALL_S = 30.0
STORM_BACKOFF_S = (1.0, 2.0, 4.0, 8.0)


def storm_backoff(attempt: int) -> float:
    """The wait before attempt ``attempt + 1`` (``attempt`` >= 1 failed), with jitter."""
    return STORM_BACKOFF_S[min(attempt, len(STORM_BACKOFF_S)) - 1] * random.uniform(0.5, 1.5)


def _retry_reason(exc: BaseException, stage: str) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"{stage} timed out"
    if isinstance(exc, HandshakeError):
        return f"handshake refused ({str(exc).split(': ', 1)[-1]})"
    if "connection lost during handshake" in str(exc):
        return "connection closed during the handshake"
    return f"{stage}: {type(exc).__name__}"


async def _storm(kind: str, s: ScaleSettings, work: Path, say: Progress) -> dict[str, Any]:
    server = await start(kind, work / f"{kind}-storm")
    try:
        ids = [f"R{kind[0].upper()}-{i:06d}" for i in range(s.storm_stations)]
        fleet = await loadgen.connect_many(ids, server.port, server.prefix, concurrency=300)
        await loadgen.start_transactions(fleet.stations)
        n = len(fleet.stations)
        say(f"{kind}: {n:,} stations charging; dropping every connection at once")
        loadgen.close_all(fleet.stations, abort=True)
        await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        deadline = time.monotonic() + s.storm_timeout_s
        done_at: list[float] = []
        lost: Counter[str] = Counter()
        retried: Counter[str] = Counter()  # failed attempts, by reason
        stations_retried = 0
        back: list[LeanStation] = []

        def left(cap: float) -> float:
            return max(0.1, min(cap, deadline - time.monotonic()))

        async def come_back(sid: str) -> None:
            nonlocal stations_retried
            attempt = 0
            while time.monotonic() < deadline:
                attempt += 1
                st: LeanStation | None = None
                stage = "handshake"
                try:
                    st = await open_station(sid, "127.0.0.1", server.port, server.prefix, timeout=left(STORM_HANDSHAKE_S))
                    stage = "BootNotification"
                    boot = await st.request("BootNotification", msg.boot("Unknown"), left(STORM_CALL_S))
                    if boot[0] != 3 or boot[2].get("status") != "Accepted":
                        raise _NotAccepted(f"boot {boot[2]}")
                    stage = "queued TransactionEvent"
                    queued = await st.request("TransactionEvent", msg.transaction_event(
                        "Updated", f"TX-{sid}", 1, "EVCommunicationLost", 1.0, 0.0, "SuspendedEV", offline=True),
                        left(STORM_CALL_S))
                    if queued[0] != 3:
                        lost[f"queued event: CALLERROR {queued[2]}"] += 1  # refused, not delayed: a loss
                        back.append(st)
                        return
                    done_at.append(time.perf_counter() - t0)
                    back.append(st)
                    return
                except (OSError, asyncio.TimeoutError, _NotAccepted) as exc:
                    retried[str(exc) if isinstance(exc, _NotAccepted) else _retry_reason(exc, stage)] += 1
                    if st is not None:
                        st.abort()
                if attempt == 1:
                    stations_retried += 1
                await asyncio.sleep(min(storm_backoff(attempt), max(0.0, deadline - time.monotonic())))
            lost[f"not back in {s.storm_timeout_s:g} s"] += 1

        await asyncio.gather(*(come_back(st.station_id) for st in fleet.stations))
        all_back_s = max(done_at) if len(done_at) == n else float("nan")
        retries = sum(retried.values())
        say(f"{kind}: {len(done_at):,}/{n:,} back and delivered their queued event"
            + (f" in {all_back_s:.2f} s" if len(done_at) == n else "")
            + f"; {stations_retried} stations retried ({retries} failed attempts: {dict(retried)})")
        loadgen.close_all(back)
        await loadgen.wait_closed(back, 10)
    finally:
        await server.stop()
    stored = None
    if kind == "ours" and server.db_path is not None:
        with sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True) as db:
            stored = db.execute("SELECT COUNT(*) FROM transaction_events WHERE offline = 1 AND station_id LIKE ?",
                                (f"R{kind[0].upper()}-%",)).fetchone()[0]
    return {"stations": n, "back": len(done_at), "all_back_s": all_back_s, "p50_s": percentile(done_at, 50),
            "p99_s": percentile(done_at, 99), "lost": lost, "retries": retries, "retried": retried,
            "stations_retried": stations_retried, "stored_offline_events": stored}


class _NotAccepted(Exception):
    """The server answered the boot with something other than Accepted: the station boots again later."""


def storm_table(res: dict[str, dict[str, Any]]) -> Table:
    """The reconnect storm row of both servers (``res[kind]["storm"]``)."""
    rows = []
    for k in KINDS:
        st = res[k]["storm"]
        reasons = "; ".join(f"{reason}: {count:,}" for reason, count in st["retried"].most_common()) or "none"
        rows.append([k, st["stations"], st["back"], st["p50_s"], st["p99_s"], st["all_back_s"], st["stations_retried"],
                     sum(st["lost"].values()),
                     st["stored_offline_events"] if st["stored_offline_events"] is not None else "not persisted",
                     reasons])
    rows.append(["baseline / ours (time all back)", "", "", "", "", ratio(res["baseline"]["storm"]["all_back_s"],
                                                                          res["ours"]["storm"]["all_back_s"]),
                 "", "", "", ""])
    return Table("Reconnect storm: every station drops at once, reconnects, boots, delivers one queued "
                 "offline TransactionEvent (s since the reconnect started; a station gives up a handshake after "
                 f"{STORM_HANDSHAKE_S:g} s and a call after {STORM_CALL_S:g} s, then retries with backoff "
                 f"{STORM_BACKOFF_S[0]:g}-{STORM_BACKOFF_S[-1]:g} s and jitter, until the deadline)",
                 ["server", "stations", "back", "p50 s", "p99 s", "all back s", "stations that retried", "lost",
                  "queued events in the store", "failed attempts by reason"], rows)


async def run_storm(settings: ScaleSettings, out_dir: Path, say: Progress) -> Section:
    """Only the reconnect storm row (`python -m bench storm`), both servers, one after the other."""
    started = time.monotonic()
    raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="bench-storm-"))
    res: dict[str, dict[str, Any]] = {k: {"storm": await _storm(k, settings, work, say)} for k in KINDS}
    sec = Section("scale", "1. Protocol scale: our daemon vs the baseline")
    sec.tables.append(storm_table(res))
    sec.data = {"res": res}
    sec.seconds = time.monotonic() - started
    return sec


# --------------------------------------------------------------------------------------- the part
async def run(settings: ScaleSettings, out_dir: Path, say: Progress) -> Section:
    started = time.monotonic()
    raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    res: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
    for kind in KINDS:
        res[kind]["tl"] = await _throughput_and_latency(kind, settings, work, say)
    for kind in KINDS:
        res[kind]["idle"] = await _idle(kind, settings, work, say)
    for kind in KINDS:
        res[kind]["storm"] = await _storm(kind, settings, work, say)
    section = _section(settings, res, out_dir)
    section.seconds = time.monotonic() - started
    return section


def _section(s: ScaleSettings, res: dict[str, dict[str, Any]], out_dir: Path) -> Section:
    sec = Section("scale", "1. Protocol scale: our daemon vs the baseline")
    sec.intro = ("Server pinned to core 0 (`taskset -c 0`), load generator pinned to core 1, 127.0.0.1. "
                 "Ours: `python -m csms serve` with its default settings, SQLite persistence on (every message "
                 "stored before its answer), logging at WARNING, operator API off. Baseline: `bench/baseline`, "
                 "the `ocpp` package's example style (in-memory, default validation), logging at WARNING. "
                 "The load generator is `bench/wsclient.py` (raw websocket frames, no validation, "
                 "no compression offered).")
    tp = {k: res[k]["tl"]["throughput"] for k in KINDS}
    rows = []
    for k in KINDS:
        t = tp[k]
        rows.append([k, round(t.per_s), round(t.per_server_cpu_s), f"{t.server_cpu_s / t.seconds:.0%}",
                     f"{t.loadgen_cpu_s / t.seconds:.0%}", sum(t.errors.values())])
    rows.append(["ours / baseline", ratio(tp["ours"].per_s, tp["baseline"].per_s),
                 ratio(tp["ours"].per_server_cpu_s, tp["baseline"].per_server_cpu_s), "", "", ""])
    sec.tables.append(Table(
        f"Sustained validated messages/s, closed loop, {s.throughput_stations} stations, mix of MeterValues / "
        f"TransactionEvent / StatusNotification / Heartbeat (8:6:3:3), {s.measure_s:g} s",
        ["server", "msgs/s", "msgs per server CPU-s", "server CPU", "load generator CPU", "errors"], rows))
    lat_rows = []
    for i, rate in enumerate(s.rates):
        row: list[Any] = [f"{res['ours']['tl']['stations']:,} x {rate:,.0f}/s"]
        p99 = {}
        for k in KINDS:
            r = res[k]["tl"]["rates"][i]
            p99[k] = percentile(r.latencies_ms, 99)
            row += [round(r.achieved), percentile(r.latencies_ms, 50), p99[k], r.unanswered + sum(r.errors.values())]
        row.append(ratio(p99["baseline"], p99["ours"]))
        lat_rows.append(row)
    sec.tables.append(Table(
        f"Latency of station-initiated calls at fixed offered rates (ms, from the scheduled send time; {s.rate_s:g} s each)",
        ["stations x offered rate", "ours answered/s", "ours p50", "ours p99", "ours errors",
         "baseline answered/s", "baseline p50", "baseline p99", "baseline errors", "p99 baseline / ours"], lat_rows))
    idle_rows = []
    for k in KINDS:
        pts = res[k]["idle"]["points"]
        n, per = pts[-1] if pts else (0, float("nan"))
        idle_rows.append([k, n, per, res[k]["idle"]["rss0_kib"] / 1024, dict(res[k]["idle"]["failures"]) or "none"])
    ours_idle = res["ours"]["idle"]["points"][-1] if res["ours"]["idle"]["points"] else (0, float("nan"))
    base_idle = res["baseline"]["idle"]["points"][-1] if res["baseline"]["idle"]["points"] else (0, float("nan"))
    idle_rows.append(["ours / baseline", ratio(ours_idle[0], base_idle[0]), ratio(ours_idle[1], base_idle[1]), "", ""])
    sec.tables.append(Table("Idle booted connections held (most reached) and memory per connection",
                            ["server", "connections", "KiB per connection (RSS delta / n)", "RSS at start MiB",
                             "failures"], idle_rows))
    sec.tables.append(storm_table(res))
    sec.figures += _plots(s, res, out_dir)
    # Verdicts against the targets.
    o = tp["ours"]
    sec.verdicts.append(verdict(">= 10,000 validated msgs/s per core with persistence", o.per_s >= 10_000,
                                f"measured {o.per_s:,.0f} msgs/s; {o.per_server_cpu_s:,.0f} per server CPU-second"
                                + ("" if o.per_s >= 10_000 else f"; {o.per_s / 10_000:.0%} of the target")))
    r = ratio(o.per_s, tp["baseline"].per_s)
    sec.verdicts.append(verdict("about 9x the baseline", r >= 9, f"measured {r:.1f}x"))
    sec.verdicts.append(verdict("<= 16 KiB per idle connection", ours_idle[1] <= 16,
                                f"{ours_idle[1]:.1f} KiB at {ours_idle[0]:,} connections"))
    sec.verdicts.append(verdict("50,000 idle stations in one process", ours_idle[0] >= 50_000,
                                f"{ours_idle[0]:,} held; the machine's hard RLIMIT_NOFILE is "
                                f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]:,} per process and cannot be raised "
                                "without CAP_SYS_RESOURCE" if ours_idle[0] < 50_000 else f"{ours_idle[0]:,} held"))
    if 1000.0 in s.rates:
        i = s.rates.index(1000.0)
        p99 = percentile(res["ours"]["tl"]["rates"][i].latencies_ms, 99)
        sec.verdicts.append(verdict(f"p99 < 50 ms at {res['ours']['tl']['stations']:,} stations x 1,000 msg/s",
                                    p99 < 50, f"p99 {p99:.1f} ms"))
    sec.data = {"res": res}
    return sec


def _plots(s: ScaleSettings, res: dict[str, dict[str, Any]], out_dir: Path) -> list[tuple[str, Path]]:
    figs = []
    fig, ax = figure()
    for k, style in zip(KINDS, ("o-", "s--")):
        rates = [r.rate for r in res[k]["tl"]["rates"]]
        ax.plot(rates, [percentile(r.latencies_ms, 99) for r in res[k]["tl"]["rates"]], style, label=f"{k} p99")
        ax.plot(rates, [percentile(r.latencies_ms, 50) for r in res[k]["tl"]["rates"]], style, alpha=0.5,
                label=f"{k} p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(50, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("offered msgs/s")
    ax.set_ylabel("latency ms")
    ax.set_title("Latency of station-initiated calls")
    ax.legend(fontsize=8)
    figs.append(("Latency vs offered rate", save(fig, out_dir / "scale_latency.png")))
    fig, ax = figure()
    for k, style in zip(KINDS, ("o-", "s--")):
        pts = res[k]["idle"]["points"]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=k)
    ax.axhline(16, color="grey", lw=0.8, ls=":", label="target 16 KiB")
    ax.set_xlabel("idle booted connections")
    ax.set_ylabel("KiB per connection")
    ax.set_title("Server memory per idle connection")
    ax.legend(fontsize=8)
    figs.append(("Memory per idle connection", save(fig, out_dir / "scale_memory.png")))
    return figs
