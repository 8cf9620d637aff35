"""Part 2, grid reaction time and controller protocol load.

Reaction time: a limit published on MQTT until the stations obey it.

N lean stations (bench/wsclient.py) charge under one transformer at 16 A x 3 phases each. A limit
signal goes to the real Mosquitto on 127.0.0.1:1883 under a topic prefix unique to the run. From
the moment before publishing we time, on the stations' side (same clock): (a) the first and (b) the
last station acknowledging a new TxProfile, and (c) the moment the aggregate power the stations
have metered and reported (MeterValues answered by the server) is under the limit. Each repeat
first restores the full limit and waits until every station runs at full power again and the
server is quiet, so the new limit is always stricter than what the fleet runs. The baseline gets the same
signal and does a plain equal-share SetChargingProfile fan-out (no planning).

Protocol load on a busy evening: the demo's neighbourhood (demo/evening.py: arrivals 16:00-18:30,
limits announced ahead, a dip below the non-EV load, departures 04:00-07:00) on a compressed clock;
the TxProfiles the controller sends per session-hour of plugged-in time (goal: at most 4), and how
many of them prescribed exactly what the station already had (goal: none).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiomqtt

from bench import loadgen
from bench.fleet import CAR_A, CAR_W, KW_PER_A, RESTORE_WAIT_S, Fleet, not_restored_note, quiet, restored
from bench.loadgen import Progress
from bench.plots import figure, save
from bench.report import Section, Table, percentile, ratio, verdict
from bench.servers import ServerProcess, raise_nofile, start

MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
TRANSFORMER = "T1"
LOW_FRACTIONS = (0.5, 0.6, 0.45, 0.55, 0.4)  # of the uncontrolled load, cycled over the repeats


@dataclass(frozen=True)
class ReactionSettings:
    sizes: tuple[int, ...] = (100, 1000, 10000)
    repeats: dict[int, int] = field(default_factory=lambda: {100: 10, 1000: 10, 10000: 3})
    signal_timeout_s: float = 60.0
    quiet_s: float = 1.0
    budget_s: float = 540.0
    kinds: tuple[str, ...] = ("ours", "baseline")
    evening_stations: int = 48  # the busy evening (protocol load)
    evening_seconds: float = 120.0  # wall-clock length of its 15.5 simulated hours

    def only(self, sizes: tuple[int, ...] | None = None, kinds: tuple[str, ...] | None = None) -> ReactionSettings:
        """These settings restricted to some fleet sizes and/or servers (for quick before/after runs)."""
        bad = [k for k in kinds or () if k not in ("ours", "baseline")]
        if bad:
            raise ValueError(f"unknown server {bad[0]!r} (known: ours, baseline)")
        if sizes is not None and any(n < 1 for n in sizes):
            raise ValueError(f"fleet sizes must be positive, got {sizes}")
        repeats = {n: self.repeats.get(n, 3) for n in sizes or self.sizes}
        return replace(self, sizes=tuple(sizes or self.sizes), repeats=repeats, kinds=tuple(kinds or self.kinds))


FULL = ReactionSettings()
SMOKE = ReactionSettings(sizes=(20,), repeats={20: 2}, signal_timeout_s=15.0, quiet_s=0.5, budget_s=40.0,
                         evening_stations=8, evening_seconds=20.0)


async def _publish(client: aiomqtt.Client, prefix: str, limit_kw: float) -> None:
    payload = {"signal_id": f"bench-{uuid.uuid4().hex[:12]}", "source": "bench",
               "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"), "limit_kw": limit_kw}
    await client.publish(f"{prefix}/grid/{TRANSFORMER}/limit", json.dumps(payload).encode(), qos=1)


async def _wait_online(client: aiomqtt.Client, prefix: str, timeout: float) -> None:
    """Our daemon says it is connected to the broker with a retained "online" message."""
    await client.subscribe(f"{prefix}/csms/availability", qos=1)

    async def first_online() -> None:
        async for m in client.messages:
            if bytes(m.payload) == b"online":  # type: ignore[arg-type]
                return

    await asyncio.wait_for(first_online(), timeout)
    await client.unsubscribe(f"{prefix}/csms/availability")


def _grid_config(prefix: str, n: int) -> dict[str, Any]:
    return {
        "transformers": {TRANSFORMER: {"capacity_kw": round(n * CAR_A * KW_PER_A * 1.1, 1),
                                       "members": [{"station": "G*"}]}},
        "mqtt": {"topic_prefix": prefix, "broker_grace_s": 600},
        "planning": {"min_push_interval_s": 0, "replan_interval_s": 600, "verify_after_s": 3600},
        "session_defaults": {"energy_kwh": 30, "dwell_h": 8, "guaranteed_kwh": 0},
    }


async def _one(kind: str, n: int, s: ReactionSettings, work: Path, say: Progress, deadline: float) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    capacity = round(n * CAR_A * KW_PER_A * 1.1, 1)
    full_kw = n * CAR_A * KW_PER_A
    server: ServerProcess = await start(kind, work / f"{kind}-{n}", grid=_grid_config(prefix, n), mqtt_prefix=prefix)
    fleet = Fleet()
    result: dict[str, Any] = {"n": n, "runs": [], "incomplete": 0, "not_restored": 0, "setup_s": 0.0}
    try:
        async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as client:
            if kind == "ours":
                await _wait_online(client, prefix, 20)
            else:
                await asyncio.sleep(1.0)  # the baseline's subscription is not observable; give it a second
            t_setup = time.perf_counter()
            conn = await loadgen.connect_many([f"G{kind[0].upper()}-{i:05d}" for i in range(n)], server.port,
                                              server.prefix, handlers=fleet.handlers(), concurrency=300)
            fleet.stations = conn.stations
            fleet.charging()
            started = await loadgen.start_transactions(fleet.stations, power_w=CAR_W, timeout=120)
            await quiet(fleet, max(s.quiet_s, 1.0), 120)
            result["setup_s"] = time.perf_counter() - t_setup
            say(f"{kind}: {len(fleet.stations)}/{n} stations charging ({started} transactions) after "
                f"{result['setup_s']:.1f} s; {fleet.profiles} profiles so far")
            for k in range(s.repeats.get(n, 3)):
                if time.monotonic() > deadline:
                    say(f"{kind} {n}: stopped after {k} repeats (time budget)")
                    break
                fleet.armed = False
                published = time.perf_counter()
                await _publish(client, prefix, capacity)
                if not await restored(fleet, RESTORE_WAIT_S):
                    result["not_restored"] += 1
                    say(f"{kind} {n}: the fleet did not run the full limit again within {RESTORE_WAIT_S:.0f} s")
                await quiet(fleet, s.quiet_s, 60, since=published)
                low = round(full_kw * LOW_FRACTIONS[k % len(LOW_FRACTIONS)], 1)
                fleet.arm(low)
                await _publish(client, prefix, low)
                end = time.monotonic() + s.signal_timeout_s
                while time.monotonic() < end and (len(fleet.acks) < len(fleet.stations) or fleet.under_at is None):
                    await asyncio.sleep(0.01)
                fleet.armed = False
                acks = sorted(fleet.acks.values())
                run = {"limit_kw": low, "acked": len(acks), "first_s": acks[0] if acks else float("nan"),
                       "last_s": acks[-1] if len(acks) == len(fleet.stations) else float("nan"),
                       "under_s": fleet.under_at if fleet.under_at is not None else float("nan")}
                if len(acks) < len(fleet.stations) or fleet.under_at is None:
                    result["incomplete"] += 1
                result["runs"].append(run)
                say(f"{kind} {n}: limit {low:,.0f} kW -> first ack {run['first_s'] * 1000:.0f} ms, last "
                    f"{run['last_s'] * 1000:.0f} ms ({len(acks)}/{len(fleet.stations)}), under the limit "
                    f"{run['under_s'] * 1000:.0f} ms")
                await quiet(fleet, s.quiet_s, 60)
            result["stations"] = len(fleet.stations)
            result["connect_failures"] = dict(conn.failures)
            result["rejected"] = fleet.rejected
            loadgen.close_all(fleet.stations)
            await loadgen.wait_closed(fleet.stations, 10)
    finally:
        await server.stop()
        await _clear_retained(prefix)
    return result


async def _clear_retained(prefix: str) -> None:
    """Leave the shared broker as we found it: no retained messages under our run's prefix."""
    try:
        async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as client:
            for topic in (f"{prefix}/csms/availability", f"{prefix}/grid/{TRANSFORMER}/status"):
                await client.publish(topic, b"", qos=1, retain=True)
    except aiomqtt.MqttError:
        pass


async def run(settings: ReactionSettings, out_dir: Path, say: Progress) -> Section:
    started = time.monotonic()
    raise_nofile()
    deadline = started + settings.budget_s
    work = Path(__import__("tempfile").mkdtemp(prefix="bench-reaction-"))
    res: dict[str, dict[int, dict[str, Any]]] = {"ours": {}, "baseline": {}}
    for n in settings.sizes:
        for kind in settings.kinds:
            if time.monotonic() > deadline:
                say(f"skipped {kind} at {n} stations (time budget)")
                continue
            res[kind][n] = await _one(kind, n, settings, work, say, deadline)
    section = _section(settings, res, out_dir)
    _evening(section, await _busy_evening(settings, out_dir, say))
    section.seconds = time.monotonic() - started
    return section


async def _busy_evening(s: ReactionSettings, out_dir: Path, say: Progress) -> dict[str, Any]:
    """The demo's evening, in-process: profiles pushed per session-hour and identical pushes."""
    import io

    from rich.console import Console

    from demo.evening import run_demo

    say(f"busy evening: {s.evening_stations} stations, 15.5 simulated hours in {s.evening_seconds:.0f} s")
    result = await run_demo(Console(file=io.StringIO(), width=120), stations_n=s.evening_stations,
                            seconds=s.evening_seconds, out=out_dir / "busy-evening.png", seed=7)
    figures: dict[str, Any] = result["figures"]
    p = figures["profiles"]
    say(f"busy evening: {p['sent']} profiles over {p['session_hours']:.0f} session-hours "
        f"({p['per_session_hour']} per session-hour), {p['identical']} identical")
    return figures


def _evening(sec: Section, figures: dict[str, Any]) -> None:
    p, g = figures["profiles"], figures["grid"]
    sec.tables.append(Table(
        "Controller protocol load on a busy evening (demo neighbourhood, compressed clock)",
        ["session-hours", "profiles sent", "per session-hour", "kept by hysteresis", "identical pushes",
         "kWh over the limit (15-min settlement)"],
        [[p["session_hours"], p["sent"], p["per_session_hour"], p["skipped"], p["identical"], g["over_kwh"]]]))
    rate = p["per_session_hour"]
    sec.verdicts.append(verdict("at most 4 TxProfiles per session-hour on a busy evening",
                                rate is not None and rate <= 4.0, f"{rate} per session-hour"))
    sec.verdicts.append(verdict("no identical pushes", p["identical"] == 0, f"{p['identical']} identical"))
    sec.data["busy_evening"] = figures


def _stat(runs: list[dict[str, Any]], key: str, q: float) -> float:
    return percentile([r[key] for r in runs], q)


def _section(s: ReactionSettings, res: dict[str, dict[int, dict[str, Any]]], out_dir: Path) -> Section:
    sec = Section("reaction", "2. Grid reaction time: MQTT limit signal to obeying stations")
    sec.intro = ("Real Mosquitto on 127.0.0.1:1883, a topic prefix unique to the run; server on core 0, stations "
                 "(lean websocket clients answering GetVariables/SetChargingProfile and reporting MeterValues) on "
                 "core 1. Every station charges at 16 A x 3 phases (11 kW); each repeat restores the full limit, "
                 "waits until every station runs at full power again and the server is quiet, then publishes a "
                 "limit of 40-60 % of the uncontrolled load. Times are from "
                 "just before the publish. Ours: SignalListener -> GridController immediate cut -> TxProfile to "
                 "every session. Baseline: equal-share SetChargingProfile to every charging station. "
                 "p99 over this few repeats is the worst repeat.")
    cols = ["stations", "server", "repeats", "first ack p50 ms", "last ack p50 ms", "last ack p99 ms",
            "under limit p50 ms", "under limit p99 ms", "incomplete", "last ack p99 baseline / ours"]
    rows = []
    for n in s.sizes:
        for kind in s.kinds:
            r = res[kind].get(n)
            if r is None:
                rows.append([n, kind, 0, None, None, None, None, None, "not run (time budget)", None])
                continue
            runs = r["runs"]
            rel = None
            if kind == "baseline" and n in res["ours"]:
                rel = ratio(_stat(runs, "last_s", 99), _stat(res["ours"][n]["runs"], "last_s", 99))
            rows.append([n, kind, len(runs), _stat(runs, "first_s", 50) * 1000, _stat(runs, "last_s", 50) * 1000,
                         _stat(runs, "last_s", 99) * 1000, _stat(runs, "under_s", 50) * 1000,
                         _stat(runs, "under_s", 99) * 1000, r["incomplete"], rel])
    sec.tables.append(Table("Publish -> first / last station acknowledging its new profile, and -> reported "
                            "aggregate power under the limit", cols, rows))
    for n, target in ((1000, 0.3), (10000, 2.5)):
        r = res["ours"].get(n)
        if r is None:
            if n in s.sizes:
                sec.verdicts.append(f"**not measured**: all of {n:,} acknowledged within {target} s (time budget)")
            continue
        p99 = _stat(r["runs"], "last_s", 99)
        sec.verdicts.append(verdict(f"all of {n:,} acknowledged within {target} s of publish (p99)",
                                    p99 <= target and r["incomplete"] == 0 and not r.get("not_restored"),
                                    f"p99 {p99:.3f} s over {len(r['runs'])} repeats, {r['incomplete']} incomplete"
                                    + not_restored_note(r.get("not_restored"))))
    sec.figures.append(("Reaction time by fleet size", _plot(s, res, out_dir / "reaction.png")))
    sec.data = {"res": res}
    return sec


def _plot(s: ReactionSettings, res: dict[str, dict[int, dict[str, Any]]], path: Path) -> Path:
    fig, ax = figure()
    for kind, style in (("ours", "o-"), ("baseline", "s--")):
        ns = [n for n in s.sizes if n in res[kind]]
        ax.plot(ns, [_stat(res[kind][n]["runs"], "last_s", 99) for n in ns], style, label=f"{kind}: last ack p99")
        ax.plot(ns, [_stat(res[kind][n]["runs"], "first_s", 50) for n in ns], style, alpha=0.4,
                label=f"{kind}: first ack p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("stations under the transformer")
    ax.set_ylabel("seconds after publish")
    ax.legend(fontsize=8)
    return save(fig, path)
