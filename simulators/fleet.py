"""Many stations in one process, sharing one clock, one event loop and one set of load figures.

The fleet samples every station's net energy register each `sample_interval_s` simulated
seconds, so the power series are exact interval averages (what a grid meter settles on), not
instantaneous snapshots.

The stations' clock is the wall clock unless the scenario pins a date (or `start` pins one);
`clock_offset_s` skews it on purpose. The sessions move with the clock: the scenario's timeline
begins when the simulated clock does, so the same seed gives the same evening on any clock.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from simulators.clock import Clock, utc_now
from simulators.errors import ScenarioError
from simulators.ev import EVSession
from simulators.models import EVModel
from simulators.scenario import Scenario, StationPlan
from simulators.security import StationCredentials
from simulators.station import SimStation
from simulators.stats import LinkStats

LOG = logging.getLogger("simulators.fleet")


@dataclass
class FleetResult:
    """Interval-average power per station (kW) at the end of each sample interval, plus figures."""

    scenario: str
    start: datetime
    sample_interval_s: float
    times: list[datetime]  # end of each interval: the instant all stations were read (the "cut")
    station_ids: list[str]
    transformers: list[str]
    capacity_kw: dict[str, float]
    power_kw: np.ndarray  # shape (stations, samples), float32
    load: dict
    counters: dict[str, int] = field(default_factory=dict)
    energy_kwh: np.ndarray | None = None  # net energy per station over the run (end of the last interval)
    first_cut: datetime | None = None  # start of the first interval
    clock: dict = field(default_factory=dict)  # Clock.info(): wall / offset / pinned, start, speed, skew
    versions: dict[str, int] = field(default_factory=dict)  # stations per OCPP version

    def aggregate_kw(self) -> dict[str, np.ndarray]:
        """Sum per transformer, and 'total'."""
        out: dict[str, np.ndarray] = {}
        names = np.asarray(self.transformers)
        for transformer in self.capacity_kw:
            out[transformer] = self.power_kw[names == transformer].sum(axis=0)
        out["total"] = self.power_kw.sum(axis=0) if len(self.station_ids) else np.zeros(len(self.times))
        return out


class Fleet:
    """N `SimStation`s from a scenario plan. `await run()` returns a `FleetResult`."""

    def __init__(self, url: str, scenario: Scenario, *, stations: int | None = None, speed: float = 1.0,
                 validate: bool = False, connect_rate_per_s: float = 500.0, loadtest: bool = False,
                 call_timeout_s: float = 30.0, station_kwargs: dict | None = None, clock_offset_s: float = 0.0,
                 start: datetime | None = None) -> None:
        """`start` pins the stations' clocks to that instant (overriding the scenario); `clock_offset_s`
        shifts whichever clock applies (negative: the stations are behind)."""
        if speed > scenario.max_speed:
            raise ScenarioError(f"--speed {speed} is above what this scenario allows (clock.max_speed = "
                                f"{scenario.max_speed})", file=scenario.file, key="clock.max_speed")
        if speed <= 0:
            raise ScenarioError("--speed must be > 0", file=scenario.file)
        if start is not None and start.tzinfo is None:
            raise ScenarioError("a pinned start needs a UTC offset", key="--start")
        self.scenario = scenario
        self.speed = speed
        self.loadtest = loadtest
        self.clock_offset_s = float(clock_offset_s)
        self.pinned_start = start
        self.clock = self._new_clock()
        self.stats = LinkStats()
        self.connect_rate_per_s = connect_rate_per_s
        plans = scenario.plan(stations)
        if loadtest:
            plans = [_plug_everything(plan, scenario.start) for plan in plans]
        shift = self.clock.start - scenario.start
        self.plans = [_shifted(plan, shift) for plan in plans]
        _check_url_fits_security(url, scenario)
        kwargs = {"validate": validate, "call_timeout_s": call_timeout_s, **(station_kwargs or {})}
        self.stations = [SimStation(p.station_id, url, p.model, p.sessions, self.clock, stats=self.stats, **kwargs)
                         for p in self.plans]
        self._tasks: list[asyncio.Task] = []

    def _new_clock(self) -> Clock:
        """Pinned (the `start` given, or the scenario's date) or the wall clock, plus the offset."""
        offset = timedelta(seconds=self.clock_offset_s)
        if self.pinned_start is not None or self.scenario.pinned:
            return Clock(self.speed, (self.pinned_start or self.scenario.start) + offset, origin="pinned")
        if not offset:
            return Clock(self.speed, origin="wall")
        return Clock(self.speed, utc_now() + offset, origin="offset")

    def versions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for plan in self.plans:
            counts[plan.model.ocpp_version] = counts.get(plan.model.ocpp_version, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def connected(self) -> int:
        return self.stats.connections_up

    def active_sessions(self) -> int:
        return sum(1 for s in self.stations for e in s.core.evses.values() if e.ev is not None)

    def total_power_kw(self) -> float:
        return sum(s.core.total_power_w for s in self.stations) / 1000.0

    async def run(self, *, duration_s: float | None = None,
                  on_sample: Callable[[Fleet], None] | None = None) -> FleetResult:
        """Run for `duration_s` simulated seconds (default: the scenario's), then stop every station."""
        duration = self.scenario.duration_s if duration_s is None else duration_s
        previous, self.clock = self.clock, self._new_clock()
        delta = self.clock.start - previous.start  # the wall clock moved on since the plans were made
        self.plans = [_shifted(plan, delta) for plan in self.plans]
        for station in self.stations:
            station.clock = station.core.clock = self.clock
            station.core.last = self.clock.now()
            station.core.shift_upcoming(delta)
        LOG.info("fleet of %d stations (%s); %s", len(self.stations),
                 ", ".join(f"OCPP {v}: {n}" for v, n in self.versions().items()), self.clock.describe())
        interval = self.scenario.sample_interval_s
        samples = max(1, int(duration // interval))
        power = np.zeros((len(self.stations), samples), dtype=np.float32)
        times: list[datetime] = []
        starter = asyncio.create_task(self._start_all())
        first_cut = last_cut = self.clock.now()
        first_energy = last_energy = np.fromiter((s.core.net_energy_wh for s in self.stations), dtype=float,
                                                 count=len(self.stations))
        try:
            for k in range(samples):
                target = (k + 1) * interval
                while self.clock.elapsed() < target:
                    await asyncio.sleep(min(0.5, self.clock.real_seconds(target - self.clock.elapsed()) + 0.001))
                    if on_sample is not None:
                        on_sample(self)
                # A consistent cut: every station advanced to the same instant (none can be past it),
                # averaged over the exact simulated time since the previous cut.
                cut = self.clock.now()
                energy = np.fromiter((s.core.net_energy_wh for s in self._advanced(cut)), dtype=float,
                                     count=len(self.stations))
                span_h = max(1e-9, (cut - last_cut).total_seconds() / 3600.0)
                power[:, k] = (energy - last_energy) / 1000.0 / span_h
                last_energy, last_cut = energy, cut
                times.append(cut)
            load = self.stats.snapshot()  # before stopping: connections still up
        finally:
            starter.cancel()
            await self.stop()
        counters: dict[str, int] = {}
        for station in self.stations:
            for key, value in station.core.counters.items():
                counters[key] = counters.get(key, 0) + value
        return FleetResult(
            scenario=self.scenario.name, start=self.clock.start, sample_interval_s=interval, times=times,
            station_ids=[p.station_id for p in self.plans], transformers=[p.transformer for p in self.plans],
            capacity_kw={t.id: t.capacity_kw for t in self.scenario.transformers}, power_kw=power,
            load=load, counters=counters, energy_kwh=(last_energy - first_energy) / 1000.0,
            first_cut=first_cut, clock=self.clock.info(), versions=self.versions())

    def _advanced(self, now: datetime):
        for station in self.stations:
            station.core.advance(now)
            yield station

    async def _start_all(self) -> None:
        """Connect at a bounded rate: a thundering herd measures the accept queue, not the CSMS."""
        batch = max(1, int(self.connect_rate_per_s / 10))
        for i in range(0, len(self.stations), batch):
            for station in self.stations[i:i + batch]:
                self._tasks.append(asyncio.create_task(station.run(), name=f"station:{station.station_id}"))
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for station in self.stations:
            station.stop()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=15)
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    self.stats.error(f"station_crashed:{type(task.exception()).__name__}")
                    LOG.error("station task failed: %r", task.exception())
        self._tasks.clear()


def _check_url_fits_security(url: str, scenario: Scenario) -> None:
    """ws:// for profile 1 (and no security), wss:// for 2 and 3: say which model's profile clashes with --url."""
    for name, model in scenario.station_models.items():
        if model.security is None:  # no credentials: any URL (wss:// then trusts the system store)
            continue
        problem = StationCredentials("", model.security).check_url(url)
        if problem is not None:
            file, key = scenario.security_origins.get(name, {}).get("profile", (scenario.file, "security.profile"))
            raise ScenarioError(f"station model {name!r}: {problem} (--url {url})", file=file, key=key)


def _plug_everything(plan: StationPlan, start: datetime) -> StationPlan:
    """Load-test plan: every EVSE gets one long session right at the start (staggered 0-10 s)."""
    template = plan.sessions[0] if plan.sessions else None
    sessions = []
    for evse_id in range(1, plan.model.evse_count + 1):
        offset = timedelta(seconds=(zlib.crc32(f"{plan.station_id}/{evse_id}".encode()) % 10_000) / 1000.0)
        if template is not None:
            sessions.append(replace(template, evse_id=evse_id, arrival=start + offset,
                                    departure=start + timedelta(days=30)))
        else:
            sessions.append(EVSession(evse_id=evse_id, arrival=start + offset, departure=start + timedelta(days=30),
                                      ev=EVModel(battery_kwh=200), soc_start=0.1, energy_need_kwh=150))
    return replace(plan, sessions=tuple(sessions))


def _shifted(plan: StationPlan, delta: timedelta) -> StationPlan:
    if not delta:
        return plan
    return replace(plan, sessions=tuple(replace(s, arrival=s.arrival + delta, departure=s.departure + delta)
                                        for s in plan.sessions))


def wall_clock_note(speed: float, start: datetime) -> str:
    """How simulated time maps to the central system's wall clock (printed by the CLI)."""
    return (f"simulated time starts at {start.isoformat()} and runs {speed:g}x real time; message timestamps are "
            f"simulated time, heartbeats/timeouts/retries are real seconds")
