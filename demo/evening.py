"""The demo (`csms demo`, `python -m demo`): the whole system in one command, no broker, under a minute.

It starts the daemon on 127.0.0.1 (temporary SQLite store), a simulated neighbourhood of charge
points behind one transformer that connect over real websockets, and runs an evening and night
from 16:00 to 07:30 at high speed: the residential load peaks, the grid operator's limit drops at
17:00 (each signal posted half an hour ahead, through the grid's limit intake, exactly as an MQTT
or API signal would be), dips below the non-EV load at 18:00 so the bidirectional cars discharge,
and recovers at 20:00; the cars leave between 04:00 and 07:00. The controller, its planner and the
stations all run on the same compressed clock. At the end it writes a PNG of load against limit
and reports like a grid operator and a driver would (profiles/measures.py): energy above the limit
per 15-minute settlement interval and per minute outside the reaction windows, the worst interval,
and each driver's energy at departure against the need, grid side and battery side apart, exported
energy counted. ``--json`` writes those figures for scripts.

It composes the daemon and the simulators from outside: nothing in csms imports this package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from csms.app import Daemon
from csms.config import parse_config
from csms.console import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from csms.grid.service import Grid
from profiles.measures import SessionOutcome, driver_measures, grid_measures
from simulators.clock import Clock
from simulators.ev import EVSession
from simulators.models import EVModel, StationModel
from simulators.station import SimStation

TRANSFORMER = "T1"
CAPACITY_KW = 250.0
BASE_LOAD = [["00:00", 45.0], ["15:00", 70.0], ["16:30", 95.0], ["17:30", 120.0], ["19:30", 100.0], ["21:00", 75.0]]
# Evening signal, as (hour offset from 16:00, limit kW): drop, dip below the base load, recover.
LIMIT_STEPS = [(1.0, 170.0), (2.0, 110.0), (2.5, 170.0), (4.0, CAPACITY_KW)]
SIM_HOURS = 15.5  # until every car has left (departures 04:00-07:00)
ANNOUNCE_AHEAD_H = 0.5  # the grid operator announces each limit this long before it applies
REACTION_WINDOW_MIN_S = 120.0  # simulated seconds after a limit change that are not held against control
GUARANTEED_KWH = 5.0  # the site's guaranteed minimum per session (session_defaults below)


@dataclass
class Sample:
    at: datetime
    limit_kw: float
    base_kw: float
    ev_kw: float
    charging: int
    paused: int
    discharging: int


@dataclass
class Outcome:
    samples: list[Sample] = field(default_factory=list)
    requested_kwh: float = 0.0
    speed: float = 1.0
    # The transformer's energy register: (instant, kWh since the start) of base load plus EV net.
    register: list[tuple[datetime, float]] = field(default_factory=list)
    base_kwh: float = 0.0


def _grid_section(speed: float) -> dict[str, Any]:
    sim_s = speed  # one real second in simulated seconds
    return {
        "transformers": {TRANSFORMER: {
            "capacity_kw": CAPACITY_KW, "members": [{"station": "DEMO-*"}],
            "base_load": {"kind": "profile", "profile": BASE_LOAD, "timezone": "UTC"}}},
        "planning": {"slot_s": 900, "horizon_slots": 24, "replan_interval_s": 0.5, "min_push_interval_s": 0,
                     "verify_after_s": max(10.0, 0.5 * sim_s), "resume_timeout_s": max(60.0, 2 * sim_s),
                     "fail_safe_limit_a": 6.0},
        "session_defaults": {"energy_kwh": 25, "dwell_h": 10, "guaranteed_kwh": GUARANTEED_KWH},
        "station_models": [{"pattern": "DEMO-V2G-*", "v2g": True}],
    }


def _neighbourhood(start: datetime, count: int, seed: int) -> list[tuple[str, StationModel, list[EVSession]]]:
    """Charge points with one evening visit each: commuters arriving 16:00-19:00, a few V2G cars,
    one car that never resumes after a pause."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        v2g = i % 6 == 0
        sid = f"DEMO-V2G-{i:02d}" if v2g else f"DEMO-{i:02d}"
        model = StationModel(name="demo-ac22", v2g=v2g, meter_interval_s=300.0, tick_s=60.0)
        # The bidirectional cars are home before the dip at 18:00 (their discharge is what makes it feasible).
        arrival = start + timedelta(minutes=rng.uniform(0, 60 if v2g else 150))
        departure = start + timedelta(hours=rng.uniform(12, 15))
        ev = EVModel(name="v2g" if v2g else "ev", battery_kwh=rng.choice([50.0, 64.0, 77.0]),
                     max_current_a=rng.choice([16.0, 16.0, 32.0]), iso15118=v2g, bidirectional=v2g,
                     max_discharge_w=7000.0 if v2g else 0.0, resumes_after_pause=i != 3)
        soc = rng.uniform(0.35, 0.6) if v2g else rng.uniform(0.15, 0.5)
        need = min(ev.battery_kwh * (0.95 - soc), rng.uniform(15, 35))
        out.append((sid, model, [EVSession(1, arrival, departure, ev, soc, need, min_soc=0.3 if v2g else 0.0)]))
    return out


@contextlib.asynccontextmanager
async def _daemon(workdir: Path, clock: Clock, speed: float) -> AsyncIterator[tuple[Daemon, Grid]]:
    config = parse_config({"websocket": {"host": "127.0.0.1", "port": 0},
                           "store": {"sqlite_path": str(workdir / "demo.db"), "trace_frames": 0},
                           "registration": {"accept_unknown_id_tokens": True}, "logging": {"level": "WARNING"},
                           "api": {"enabled": False}, "grid": _grid_section(speed)}, "<demo>")
    daemon = Daemon(config, clock=clock.now)
    await daemon.start()
    assert daemon.grid is not None
    try:
        yield daemon, daemon.grid
    finally:
        await daemon.stop()


def _view(clock: Clock, start: datetime, outcome: Outcome, grid: Grid, stations: list[SimStation]) -> Table:
    s = outcome.samples[-1] if outcome.samples else None
    table = Table(title="Netbewust demo: one transformer, an evening under a grid limit", show_header=False,
                  min_width=60)
    table.add_column("what", style="bold")
    table.add_column("value")
    now = clock.now()
    done = min(1.0, (now - start).total_seconds() / (SIM_HOURS * 3600))
    bar = "█" * int(done * 30) + "░" * (30 - int(done * 30))
    table.add_row("simulated time", f"{now:%H:%M} UTC  {bar} {done:4.0%}")
    if s is not None:
        total = s.base_kw + s.ev_kw
        style = "red" if total > s.limit_kw + 0.5 else "green"
        table.add_row("limit", f"{s.limit_kw:6.1f} kW  ({grid.views.groups[TRANSFORMER].limit_source})")
        table.add_row("non-EV load", f"{s.base_kw:6.1f} kW")
        table.add_row("EV load", f"{s.ev_kw:6.1f} kW")
        table.add_row("transformer load", f"[{style}]{total:6.1f} kW[/]")
        table.add_row("cars", f"{s.charging} charging, {s.paused} paused, {s.discharging} discharging "
                              f"(of {len(stations)} charge points)")
    table.add_row("profiles sent / skipped", f"{grid.pusher.sent} / {grid.pusher.skipped}")
    if grid.controller.reaction_s:
        table.add_row("last reaction", f"{grid.controller.reaction_s[-1] * 1000:.0f} ms "
                                       "(limit received -> all stations answered)")
    return table


def _ev_net_kwh(stations: list[SimStation]) -> float:
    """What the cars took from the grid minus what they gave back, so far (their meters, exactly)."""
    return sum(e.import_wh - e.export_wh for st in stations for e in st.core.evses.values()) / 1000.0


def _register(outcome: Outcome, clock: Clock, grid: Grid, stations: list[SimStation]) -> None:
    """One more reading of the transformer's energy register: the cars' meters plus the non-EV load
    integrated minute by minute since the last reading."""
    now = clock.now()
    if outcome.register:
        last = outcome.register[-1][0]
        t = last
        while t < now:
            step = min(60.0, (now - t).total_seconds())
            outcome.base_kwh += grid.limit_book.base_load_kw(TRANSFORMER, t) * step / 3600.0
            t += timedelta(seconds=step)
    outcome.register.append((now, outcome.base_kwh + _ev_net_kwh(stations)))


def _sample(clock: Clock, grid: Grid, stations: list[SimStation]) -> Sample:
    now = clock.now()
    limit, _ = grid.limit_book.limit_at(TRANSFORMER, now)
    powers = [sum(st.power_w.values()) / 1000.0 for st in stations]
    paused = sum(s.setpoint_a == 0 for s in grid.sessions)  # held at 0 by the controller (not merely full)
    return Sample(now, limit, grid.limit_book.base_load_kw(TRANSFORMER, now), sum(powers),
                  sum(p > 0.05 for p in powers), paused, sum(p < -0.05 for p in powers))


def _limit_series(start: datetime) -> list[tuple[datetime, float]]:
    return [(start, CAPACITY_KW)] + [(start + timedelta(hours=h), kw) for h, kw in LIMIT_STEPS]


async def _signals(grid: Grid, clock: Clock, start: datetime, stop: asyncio.Event) -> None:
    """Post the evening's limits half an hour before they apply, as a grid operator announces them:
    each signal is the whole schedule from now (the limit in force until the step, the new one after
    it), because a new signal of a source replaces its previous one."""
    series = _limit_series(start)
    for n, (hours, kw) in enumerate(LIMIT_STEPS):
        at = start + timedelta(hours=hours)
        while clock.now() < at - timedelta(hours=ANNOUNCE_AHEAD_H) and not stop.is_set():
            await asyncio.sleep(0.02)
        if stop.is_set():
            return
        now = clock.now()
        before = series[n][1]  # the limit in force until this step
        await grid.limits.submit(TRANSFORMER, {"signal_id": f"demo-{n}", "source": "dso", "intervals": [
            {"start": now.isoformat(), "end": at.isoformat(), "limit_kw": before},
            {"start": at.isoformat(), "limit_kw": kw}]})


async def run_demo(console: Console, *, stations_n: int, seconds: float, out: Path, seed: int) -> dict[str, Any]:
    """Run the demo; returns the summary figures (and the samples behind the plot)."""
    speed = SIM_HOURS * 3600 / seconds
    today = datetime.now(timezone.utc).replace(hour=16, minute=0, second=0, microsecond=0)
    clock = Clock(speed=speed, start=today)
    start = today
    with tempfile.TemporaryDirectory(prefix="netbewust-demo-") as tmp:
        async with _daemon(Path(tmp), clock, speed) as (daemon, grid):
            url = f"ws://127.0.0.1:{daemon.ws_port}{daemon.config.websocket.path_prefix}"
            specs = _neighbourhood(start, stations_n, seed)
            outcome = Outcome(requested_kwh=sum(s.energy_need_kwh for _, _, sessions in specs for s in sessions),
                              speed=speed)
            stations = [SimStation(sid, url, model, sessions, clock=clock, call_timeout_s=10, reconnect_base_s=0.2)
                        for sid, model, sessions in specs]
            tasks = [asyncio.create_task(st.run(), name=f"demo {st.station_id}") for st in stations]
            stop = asyncio.Event()
            signals = asyncio.create_task(_signals(grid, clock, start, stop))
            try:
                await asyncio.wait_for(asyncio.gather(*(st.accepted.wait() for st in stations)), 20)
                end = start + timedelta(hours=SIM_HOURS)
                with Live(_view(clock, start, outcome, grid, stations), console=console, refresh_per_second=8,
                          transient=False) as live:
                    deadline = time.monotonic() + seconds + 30
                    while clock.now() < end and time.monotonic() < deadline:
                        outcome.samples.append(_sample(clock, grid, stations))
                        _register(outcome, clock, grid, stations)
                        live.update(_view(clock, start, outcome, grid, stations))
                        await asyncio.sleep(0.1)
            finally:
                stop.set()
                await asyncio.gather(signals, return_exceptions=True)
                for st in stations:
                    st.stop()
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
            _plot(outcome, out)
            return _summary(console, outcome, grid, stations, out, start, specs)


def _figure(outcome: Outcome) -> Any:
    """Load against the limit; the legend sits under the axes, where it covers none of the curves
    (inside, it hid the 16:00-17:00 rise), and the time axis reads '30 Nov 16:00'."""
    import matplotlib  # heavy: only when the plot is drawn

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np

    # UTC times as datetime64 (what matplotlib's date axis takes; the simulated evening is in UTC).
    xs = np.array([s.at.astimezone(timezone.utc).replace(tzinfo=None) for s in outcome.samples], dtype="datetime64[ms]")
    base = [s.base_kw for s in outcome.samples]
    total = [s.base_kw + s.ev_kw for s in outcome.samples]
    fig, ax = plt.subplots(figsize=(10, 5.6))
    ax.fill_between(xs, 0, base, step="post", color="#c8c8c8", label="non-EV load")
    ax.fill_between(xs, base, total, step="post", color="#4c9be8", alpha=0.8, label="EV charging (+) / V2G (-)")
    ax.plot(xs, total, color="#1f4e79", linewidth=1.2, label="transformer load")
    ax.step(xs, [s.limit_kw for s in outcome.samples], where="post", color="#d62728", linewidth=2, label="limit")
    ax.set_ylabel("kW")
    ax.set_xlabel("simulated time (UTC)")
    ax.set_title("Netbewust demo: transformer load against the grid operator's limit")
    ax.xaxis.set_major_locator(mdates.HourLocator(interval=2))  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b %H:%M"))  # type: ignore[no-untyped-call]
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, frameon=False)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate(rotation=30)
    fig.tight_layout()
    return fig


def _plot(outcome: Outcome, out: Path) -> None:
    import matplotlib.pyplot as plt

    fig = _figure(outcome)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _outcomes(stations: list[SimStation], specs: list[tuple[str, StationModel, list[EVSession]]],
              end: datetime) -> list[SessionOutcome]:
    """Each driver's session at departure: the station's meter (grid side) and what reached the
    battery (the car's charging efficiency: in with it, out against it)."""
    by_id = {st.station_id: st for st in stations}
    out = []
    for sid, _model, sessions in specs:
        station = by_id[sid]
        for session in sessions:
            evse = station.core.evses[session.evse_id]
            imported, exported = evse.import_wh / 1000.0, evse.export_wh / 1000.0
            eff = session.ev.efficiency
            out.append(SessionOutcome(need_kwh=session.energy_need_kwh,
                                      guaranteed_kwh=min(GUARANTEED_KWH, session.energy_need_kwh),
                                      battery_kwh=imported * eff - exported / eff, grid_import_kwh=imported,
                                      grid_export_kwh=exported, departed=session.departure <= end))
    return out


def _figures(outcome: Outcome, grid: Grid, stations: list[SimStation],
             specs: list[tuple[str, StationModel, list[EVSession]]], start: datetime) -> dict[str, Any]:
    """What a grid operator and the drivers would measure, for the summary and ``--json``."""
    end = outcome.register[-1][0] if outcome.register else start
    slowest = max(grid.controller.reaction_s, default=0.0) * outcome.speed
    reaction_s = max(REACTION_WINDOW_MIN_S, math.ceil(slowest / 60.0) * 60.0)
    measures = grid_measures(outcome.register or [(start, 0.0)], _limit_series(start), start, end, reaction_s)
    drivers = driver_measures(_outcomes(stations, specs, end))
    plugged_h = sum(max(0.0, (min(s.departure, end) - max(s.arrival, start)).total_seconds())
                    for _, _, sessions in specs for s in sessions) / 3600.0
    return {"grid": measures.as_dict(), "drivers": drivers.as_dict(),
            "profiles": {"sent": grid.pusher.sent, "skipped": grid.pusher.skipped,
                         "identical": grid.pusher.identical, "session_hours": round(plugged_h, 3),
                         "per_session_hour": round(grid.pusher.sent / plugged_h, 3) if plugged_h else None}}


def _test_cars(specs: list[tuple[str, StationModel, list[EVSession]]]) -> list[str]:
    """The stations whose car deliberately never resumes after a pause (see _neighbourhood)."""
    return [sid for sid, _, sessions in specs if any(not s.ev.resumes_after_pause for s in sessions)]


def _summary(console: Console, outcome: Outcome, grid: Grid, stations: list[SimStation], out: Path,
             start: datetime, specs: list[tuple[str, StationModel, list[EVSession]]]) -> dict[str, Any]:
    delivered = sum(e.import_wh for st in stations for e in st.core.evses.values()) / 1000.0
    discharged = sum(e.export_wh for st in stations for e in st.core.evses.values()) / 1000.0
    samples = outcome.samples
    pause_h = sum(s.paused * (b.at - s.at).total_seconds() for s, b in zip(samples, samples[1:])) / 3600.0
    paused_sessions = {e["station_id"] for e in grid.journal.events if e["kind"] == "push" and e.get("limit_a") == 0}
    findings = [e for e in grid.journal.events if e["kind"] == "finding" and e.get("finding") != "resumed"]
    figures = _figures(outcome, grid, stations, specs, start)
    g, d, p = figures["grid"], figures["drivers"], figures["profiles"]
    table = Table(show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("limit kept (settlement)",
                  f"{g['over_kwh']:.2f} kWh above the limit in {g['intervals_over']} of {len(g['intervals'])} "
                  f"15-minute intervals; worst interval {g['worst_interval_over_kw']:+.1f} kW against the limit "
                  "on average")
    table.add_row("limit kept (per minute)",
                  f"{g['over_kwh_minutes']:.2f} kWh above the limit in {g['minutes_over']} minutes, outside the "
                  f"{g['reaction_window_s'] / 60:.0f} simulated minutes after each limit change")
    table.add_row("drivers at departure",
                  f"{d['departed']} of {d['sessions']} left ({d['plugged_in_at_end']} still plugged in): "
                  f"{d['battery_kwh']:.1f} kWh into the batteries of {d['need_kwh']:.1f} kWh needed; "
                  f"{d['fully_served']} fully served, {d['below_guarantee']} below the {GUARANTEED_KWH:g} kWh guarantee")
    table.add_row("grid side", f"{d['grid_import_kwh']:.1f} kWh taken, {d['grid_export_kwh']:.1f} kWh given back "
                               "(V2G)")
    table.add_row("paused", f"{len(paused_sessions)} sessions, {pause_h:.1f} car-hours in total")
    if grid.controller.reaction_s:
        table.add_row("reaction time", f"median {statistics.median(grid.controller.reaction_s) * 1000:.0f} ms over "
                                       f"{len(grid.controller.reaction_s)} limit changes")
    table.add_row("profiles", f"{p['sent']} sent ({p['per_session_hour']} per session-hour), {p['skipped']} kept "
                              f"(hysteresis), {p['identical']} identical")
    table.add_row("detected", ", ".join(f"{f['station_id']}: {f['finding']}" for f in findings) or "nothing odd")
    for sid in _test_cars(specs):
        caught = any(f["station_id"] == sid and f["finding"] == "no_resume" for f in findings)
        table.add_row("test car", f"{sid} is a deliberate test: its car does not resume charging after a pause, "
                                  "as some real cars do not. " + (
                                      "Detected (no_resume): the controller stopped pausing it and keeps it at its "
                                      "minimum current while it still needs energy (unless the limit leaves no "
                                      "room)." if caught else
                                      "It was not paused with energy still to take in this run, so there was "
                                      "nothing to detect."))
    table.add_row("plot", str(out))
    # The live view above stays on screen (or in the pipe): a blank line and a rule keep them apart.
    # Piped, rich leaves the last live frame without its line end.
    console.print("" if console.is_terminal else "\n")
    console.rule("Summary")
    console.print(table)
    return {"delivered_kwh": delivered, "requested_kwh": outcome.requested_kwh, "discharged_kwh": discharged,
            "paused_sessions": len(paused_sessions), "over_kwh": g["over_kwh"],
            "worst_interval_over_kw": g["worst_interval_over_kw"], "reactions": list(grid.controller.reaction_s),
            "findings": findings, "samples": samples, "figures": figures}


def cmd_demo(args: argparse.Namespace) -> int:
    console = Console()
    logging.basicConfig(level=logging.ERROR)
    if not 10 <= args.seconds <= 600:
        console.print("[red]--seconds must be between 10 and 600[/]")
        return EXIT_USAGE
    if not 2 <= args.stations <= 200:
        console.print("[red]--stations must be between 2 and 200[/]")
        return EXIT_USAGE
    try:
        result = asyncio.run(run_demo(console, stations_n=args.stations, seconds=args.seconds, out=Path(args.out),
                                      seed=args.seed))
    except OSError as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        return EXIT_ERROR
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": args.seed, "stations": args.stations, "seconds": args.seconds,
                                               **result["figures"]}, indent=2), encoding="utf-8")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="csms demo", description="A simulated evening under a grid limit: the daemon, "
                                "24 simulated charge points and a grid operator's signal, in one process.")
    p.add_argument("--stations", type=int, default=24, help="charge points behind the transformer (default 24)")
    p.add_argument("--seconds", type=float, default=40.0,
                   help="wall-clock length of the simulated 16:00-07:30 (default 40)")
    p.add_argument("--out", default="netbewust-demo.png", help="where to write the plot (default %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="random seed for arrivals and cars")
    p.add_argument("--json", help="also write the grid operator's and the drivers' figures to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    return cmd_demo(build_parser().parse_args(argv))
