"""Discrete-time simulation of one transformer over weeks: 15-minute slots, numpy bookkeeping.

Controlled policies go through the planner's public API (`profiles.planner.plan`, or any
`PlanInput -> Plan` callable such as `immediate_cut` or a `profiles.baselines` policy) in a
rolling horizon, the way the daemon runs it: every slot, the sessions present with what they still
need, the transformer limit and the base load over the next `horizon_slots`; slot 0 is applied.

Two shortcuts keep eight weeks of a few hundred charge points within seconds to a minute, and
neither changes what a car gets (tests/test_bench_study.py checks both against the plain loop):

- *Headroom*: when every car present fits at its full current under the limit in this slot, the
  planner's slot 0 is known without asking it (everyone at the maximum it can use: it never leaves
  usable capacity idle), so it is not called.
- *Plan following* (`refresh_slots` > 1): between arrivals, the cars follow the last plan for up
  to `refresh_slots` slots, as stations follow the charging profiles they were sent, instead of a
  fresh plan every slot. This one can change results slightly; the default is 1 (off).

A car given 0 A while it still wants energy and cannot be paused (it does not resume, or the
variant forbids pausing) falls asleep: it takes nothing more in that session. Discharge is not
a pause.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.study.fleet import Fleet
from bench.study.inputs import SLOT_H
from profiles.planner import Plan, PlanInput, SessionNeed, ceil_tenth, floor_tenth

SLOT_S = SLOT_H * 3600.0
EPS_KWH = 1e-6
SERVED_TOLERANCE_KWH = 0.05
OVER_TOLERANCE_KW = 0.01
Policy = Callable[[PlanInput], Plan]


@dataclass(frozen=True)
class Control:
    """How the fleet is controlled."""

    policy: Policy | None  # None: uncontrolled (every car at its maximum from arrival until full)
    allow_pause: bool = True  # False: "smart without pause", a car given 0 A falls asleep
    horizon_slots: int = 32  # the daemon's default (grid.planning.horizon_slots)
    refresh_slots: int = 1
    headroom_shortcut: bool = True  # False: ask the planner in every slot (for checking the shortcut)


@dataclass(frozen=True)
class StopRule:
    """Stop a run as soon as it can no longer be "hosted" (saves most of a failing run)."""

    served_min: float = 0.99
    stop_on_overload: bool = True


@dataclass
class Run:
    """What happened: per slot and per session arrays (sessions in the fleet's order)."""

    ev_kw: np.ndarray
    base_kw: np.ndarray
    limit_kw: np.ndarray
    delivered_kwh: np.ndarray
    fleet: Fleet
    asleep: np.ndarray
    stopped_at: int | None = None  # slot where a StopRule ended the run early
    stop_reason: str = ""
    planner_calls: int = 0
    planner_s: float = 0.0
    wall_s: float = 0.0
    cp_peak_kw: np.ndarray | None = None  # each charge point's highest draw (for the diversity factor)
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.fleet.n_slots if self.stopped_at is None else self.stopped_at + 1

    @property
    def total_kw(self) -> np.ndarray:
        return self.ev_kw + self.base_kw

    @property
    def over_kw(self) -> np.ndarray:
        """kW above the limit per counted slot (up to where the run ended)."""
        s = slice(self.fleet.count_from, self.end)
        return np.maximum(0.0, self.total_kw[s] - self.limit_kw[s])

    @property
    def max_over_kw(self) -> float:
        return float(self.over_kw.max(initial=0.0))

    @property
    def slots_over(self) -> int:
        return int(np.count_nonzero(self.over_kw > OVER_TOLERANCE_KW))

    @property
    def judged(self) -> np.ndarray:
        """Counted sessions that had left by the end of the run (a stopped run judges only those)."""
        return self.fleet.counted & (self.fleet.departure <= self.end)

    @property
    def served(self) -> np.ndarray:
        return self.delivered_kwh >= self.fleet.need_kwh - SERVED_TOLERANCE_KWH

    @property
    def served_share(self) -> float:
        j = self.judged
        return float(self.served[j].mean()) if j.any() else 1.0

    @property
    def unserved(self) -> int:
        return int(np.count_nonzero(self.judged & ~self.served))

    @property
    def guarantee_violations(self) -> int:
        short = self.delivered_kwh < self.fleet.guarantee_kwh - SERVED_TOLERANCE_KWH
        return int(np.count_nonzero(self.judged & short))

    @property
    def energy_share(self) -> float:
        j = self.judged
        need = float(self.fleet.need_kwh[j].sum())
        return float(np.minimum(self.delivered_kwh[j], self.fleet.need_kwh[j]).sum()) / need if need else 1.0


def uncontrolled(fleet: Fleet, base_kw: np.ndarray, limit_kw: np.ndarray) -> Run:
    """Every car at its maximum from arrival until full, vectorised (what `baselines.uncontrolled`
    does in a rolling horizon, without calling it: a test checks they agree)."""
    t0 = time.perf_counter()
    kw = floor_tenth(fleet.max_a) * fleet.kw_per_a
    per_slot = kw * SLOT_H
    full = np.floor(fleet.need_kwh / per_slot + 1e-9).astype(int)
    rest = fleet.need_kwh - full * per_slot
    ev = np.zeros(fleet.n_slots)
    lengths = full
    starts = fleet.arrival
    idx = np.repeat(starts, lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    np.add.at(ev, idx, np.repeat(kw, lengths))
    last = fleet.arrival + full
    ok = (rest > EPS_KWH) & (last < fleet.departure)
    np.add.at(ev, last[ok], rest[ok] / SLOT_H)
    cp_peak = np.zeros(int(fleet.cp.max(initial=-1)) + 1)
    np.maximum.at(cp_peak, fleet.cp, np.where(full > 0, kw, rest / SLOT_H))
    return Run(ev, base_kw, limit_kw, fleet.need_kwh.copy(), fleet, np.zeros(fleet.size, dtype=bool),
               wall_s=time.perf_counter() - t0, cp_peak_kw=cp_peak)


def _full_current(fleet: Fleet, rows: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """The planner's slot-0 current when nothing binds: each car at the most it can use, on the
    0.1 A grid, never in the 0-6 A gap (see `profiles.planner.run_slots`)."""
    imax = floor_tenth(fleet.max_a[rows])
    imin = np.minimum(ceil_tenth(fleet.min_a[rows]), imax)
    need_a = remaining / np.maximum(fleet.kw_per_a[rows] * SLOT_H, 1e-12)
    amps = floor_tenth(np.clip(np.minimum(imax, np.maximum(need_a, imin)), 0.0, None))
    return np.where(amps < imin - 1e-9, 0.0, amps)


@dataclass(frozen=True)
class State:
    """The fleet at the start of a slot (arrays indexed like the fleet; `present` = cars connected
    and wanting to charge or able to discharge)."""

    t: int
    present: np.ndarray
    remaining_kwh: np.ndarray
    delivered_kwh: np.ndarray
    dischargeable_kwh: np.ndarray


def session_needs(fleet: Fleet, state: State, allow_pause: bool) -> list[SessionNeed]:
    """The planner's view of the cars present at `state.t` (departures relative to that slot)."""
    t, rem, got, dis = state.t, state.remaining_kwh, state.delivered_kwh, state.dischargeable_kwh
    return [SessionNeed(
        session_id=str(int(i)), phases=int(fleet.phases[i]), min_current_a=float(fleet.min_a[i]),
        max_current_a=float(fleet.max_a[i]), energy_needed_kwh=float(max(0.0, rem[i])),
        guaranteed_kwh=float(max(0.0, min(rem[i], fleet.guarantee_kwh[i] - got[i]))),
        departure_s=float(fleet.departure[i] - t) * SLOT_S,
        can_pause=bool(allow_pause and fleet.can_pause[i]), v2g=bool(fleet.v2g[i]),
        max_discharge_kw=float(fleet.discharge_kw[i]), dischargeable_kwh=float(max(0.0, dis[i])))
        for i in state.present]


def plan_input(fleet: Fleet, state: State, base_kw: np.ndarray, limit_kw: np.ndarray, horizon_slots: int,
               allow_pause: bool) -> PlanInput:
    """The PlanInput the daemon would build at `state.t`: present cars, the next `horizon_slots`."""
    t = state.t
    horizon = int(min(horizon_slots, fleet.departure[state.present].max(initial=t + 1) - t, len(limit_kw) - t))
    return PlanInput(sessions=session_needs(fleet, state, allow_pause), limit_kw=limit_kw[t:t + horizon].tolist(),
                     base_load_kw=base_kw[t:t + horizon].tolist(), slot_s=SLOT_S)


def simulate(fleet: Fleet, base_kw: np.ndarray, limit_kw: np.ndarray, control: Control,
             stop: StopRule | None = None, watch: Sequence[int] = (),
             on_watch: Callable[[State], None] | None = None) -> Run:
    """Run the fleet slot by slot under `control` (see the module docstring). `on_watch` sees the
    state at the start of every slot in `watch` (before that slot is planned)."""
    if control.policy is None:
        return uncontrolled(fleet, base_kw, limit_kw)
    watched = set(watch)
    cp_peak = np.zeros(int(fleet.cp.max(initial=-1)) + 1)
    t_start = time.perf_counter()
    n = fleet.n_slots
    remaining = fleet.need_kwh.astype(float).copy()
    delivered = np.zeros(fleet.size)
    dis_left = fleet.dischargeable_kwh.astype(float).copy()
    asleep = np.zeros(fleet.size, dtype=bool)
    ev = np.zeros(n)
    kpa, max_kw = fleet.kw_per_a, fleet.max_kw
    sleeps = ~fleet.can_pause if control.allow_pause else np.ones(fleet.size, dtype=bool)
    allowed_unserved = None
    if stop is not None:
        allowed_unserved = int(np.floor((1.0 - stop.served_min) * int(fleet.counted.sum()) + 1e-9))
    by_departure = np.argsort(fleet.departure, kind="stable")
    dep_ptr = 0
    unserved = 0
    next_arrival = 0
    active = np.zeros(0, dtype=int)
    stored: tuple[int, dict[int, np.ndarray]] | None = None
    calls, planner_s = 0, 0.0
    run = Run(ev, base_kw, limit_kw, delivered, fleet, asleep)
    for t in range(n):
        arrived = next_arrival
        while next_arrival < fleet.size and fleet.arrival[next_arrival] <= t:
            next_arrival += 1
        if next_arrival > arrived:
            active = np.concatenate([active, np.arange(arrived, next_arrival)])
            stored = None
        if active.size:
            active = active[(fleet.departure[active] > t) & ~asleep[active]]
        present = active[(remaining[active] > EPS_KWH) | (fleet.v2g[active] & (dis_left[active] > EPS_KWH))]
        if t in watched and on_watch is not None:
            on_watch(State(t, present.copy(), remaining.copy(), delivered.copy(), dis_left.copy()))
        if present.size:
            cap = float(limit_kw[t] - base_kw[t])
            wanting = present[remaining[present] > EPS_KWH]
            amps = np.zeros(present.size)
            # Room for every car at full power: what the planner would give (within 0.1 %, never more:
            # tests/test_bench_study.py), without asking it.
            if control.headroom_shortcut and cap >= 0 and float(max_kw[wanting].sum()) <= cap:
                amps[remaining[present] > EPS_KWH] = _full_current(fleet, wanting, remaining[wanting])
                stored = None
            elif stored is not None and t - stored[0] < control.refresh_slots and all(
                    int(i) in stored[1] for i in present):
                amps = np.array([stored[1][int(i)][t - stored[0]] for i in present])
            else:
                inp = plan_input(fleet, State(t, present, remaining, delivered, dis_left), base_kw, limit_kw,
                                 control.horizon_slots, control.allow_pause)
                c0 = time.perf_counter()
                result = control.policy(inp)
                planner_s += time.perf_counter() - c0
                calls += 1
                rows = {int(i): np.asarray(result.sessions[str(int(i))].current_a) for i in present}
                stored = (t, rows) if control.refresh_slots > 1 else None
                amps = np.array([rows[int(i)][0] for i in present])
            kw = amps * kpa[present]
            kwh = np.where(kw >= 0, np.minimum(kw * SLOT_H, np.maximum(remaining[present], 0.0)),
                           -np.minimum(-kw * SLOT_H, dis_left[present]))
            dis_left[present] += np.minimum(kwh, 0.0)
            remaining[present] -= kwh
            delivered[present] += kwh
            ev[t] = float(kwh.sum()) / SLOT_H
            np.maximum.at(cp_peak, fleet.cp[present], kwh / SLOT_H)
            falls = (amps == 0.0) & (remaining[present] > EPS_KWH) & sleeps[present]
            if falls.any():
                asleep[present[falls]] = True
        # Judge sessions as they leave; stop once the run cannot be hosted any more.
        while dep_ptr < fleet.size and fleet.departure[by_departure[dep_ptr]] <= t + 1:
            i = by_departure[dep_ptr]
            dep_ptr += 1
            if fleet.counted[i] and delivered[i] < fleet.need_kwh[i] - SERVED_TOLERANCE_KWH:
                unserved += 1
        if stop is not None and t >= fleet.count_from:
            if stop.stop_on_overload and ev[t] + base_kw[t] > limit_kw[t] + 0.01:
                run.stopped_at, run.stop_reason = t, "overload"
                break
            if allowed_unserved is not None and unserved > allowed_unserved:
                run.stopped_at, run.stop_reason = t, "unserved"
                break
    run.planner_calls, run.planner_s, run.cp_peak_kw = calls, planner_s, cp_peak
    run.wall_s = time.perf_counter() - t_start
    return run
