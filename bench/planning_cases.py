"""Congested single-horizon planning instances (issue 11) and an honest way to score a plan.

Families (every instance: 32 slots of 15 minutes, 30-400 sessions all plugged in now, 20 % of
cars that do not resume after a pause, 30 % single-phase cars on a known transformer phase, EV
room = limit minus base load between 12 % and 40 % of the fleet's combined maximum):

- ``mixed``: only those mixes;
- ``phase``: plus a per-phase limit that binds on L1 (base load split 45/33/22 %);
- ``v2g``: plus 30 % V2G cars and a window of 2-8 slots where the limit is below the base load.

`clean` turns an instance into its "clean" twin: every car may pause, no V2G, no phase limit,
and no slot below the base load (the limit there is raised to the base load).

`score` executes a plan's schedule the way the cars would: a car that does not resume and is
given 0 A while it still wants energy takes nothing more (even if the plan says otherwise), and
it counts as "paused then resumed" when the plan gives it current again later. Energy is net
(charged minus discharged, battery side); a discharge never goes past the car's budget.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from bench import daymodel as dm
from profiles.planner import KNOWN, RESUMES, SUSPECTED, Plan, PlanInput, SessionNeed

FAMILIES = ("mixed", "phase", "v2g")
N_SLOTS = 32
SLOT_S = 900.0
NO_RESUME_SHARE = 0.2
ONE_PHASE_SHARE = 0.3
V2G_SHARE = 0.3
ROOM_SHARE = (0.12, 0.40)
#: A session counts as short of its guarantee when it misses it by more than this (kWh).
SHORT_KWH = 0.05


def instance(rng: np.random.Generator, family: str, n: int | None = None,
             sizes: tuple[int, int] = (30, 400)) -> PlanInput:
    """One congested instance of `family` (see the module doc) with `n` sessions, or a number
    drawn from `sizes`."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    n = int(rng.integers(sizes[0], sizes[1] + 1)) if n is None else n
    sessions = []
    fleet_kw = 0.0
    for k in range(n):
        phases = 1 if rng.uniform() < ONE_PHASE_SHARE else 3
        wiring = (("L1", "L2", "L3")[int(rng.integers(3))],) if phases == 1 else ("L1", "L2", "L3")
        max_a = float(rng.choice([16.0, 32.0]))
        need = float(rng.uniform(2.0, 40.0))
        doubt = RESUMES
        if rng.uniform() < NO_RESUME_SHARE:
            doubt = KNOWN if rng.uniform() < 0.5 else SUSPECTED
        v2g = family == "v2g" and rng.uniform() < V2G_SHARE
        max_kw = max_a * phases * 0.23
        fleet_kw += max_kw
        sessions.append(SessionNeed(
            f"s{k}", phases=phases, phase_wiring=wiring, min_current_a=float(rng.choice([6.0, 6.0, 6.0, 8.0])),
            max_current_a=max_a, energy_needed_kwh=need, guaranteed_kwh=min(need, float(rng.uniform(2.0, 10.0))),
            departure_s=float(rng.uniform(1.0, 10.0)) * 3600.0, no_resume=doubt, v2g=v2g,
            max_discharge_kw=min(max_kw, float(rng.uniform(7.0, 11.0))) if v2g else 0.0,
            dischargeable_kwh=float(rng.uniform(5.0, 30.0)) if v2g else 0.0,
            discharged_kwh=float(rng.uniform(0.0, 3.0)) if v2g else 0.0,
        ))
    share = float(rng.uniform(ROOM_SHARE[0] / 0.85, ROOM_SHARE[1] / 1.15))
    room = share * fleet_kw * (1.0 + 0.15 * np.sin(np.arange(N_SLOTS) / N_SLOTS * 2 * np.pi * rng.uniform(0.5, 1.5)))
    base = dm.base_load(float(rng.uniform(1.0, 3.0)) * share * fleet_kw, N_SLOTS, start_hour=float(rng.uniform(14, 18)))
    limit = base + room
    phase_limit = None
    split = (1 / 3, 1 / 3, 1 / 3)
    if family == "v2g":
        start, width = int(rng.integers(4, 20)), int(rng.integers(2, 9))
        give = _v2g_power(sessions, start, width)
        limit[start:start + width] = base[start:start + width] - float(rng.uniform(0.1, 0.8)) * give
    if family == "phase":
        split = (0.45, 0.33, 0.22)
        phase_limit = float(base.max() * 0.45 * 1000 / 230 + rng.uniform(0.6, 0.9) * share * fleet_kw * 1000 / 230 / 3)
    return PlanInput(sessions, limit.tolist(), base.tolist(), SLOT_S, phase_limit, split)


def _v2g_power(sessions: list[SessionNeed], start: int, width: int) -> float:
    """kW the V2G cars can keep up through slots start..start+width (present to its end, and
    with the budget for it): the deficit is a share of this, so the LP can always meet it."""
    hours = width * SLOT_S / 3600.0
    end_s = (start + width) * SLOT_S
    return sum(min(s.max_discharge_kw, (s.dischargeable_kwh - s.discharged_kwh) / hours)
               for s in sessions if s.v2g and s.departure_s >= end_s)


def clean(inp: PlanInput) -> PlanInput:
    """The same instance without what makes it hard: see the module doc."""
    sessions = [dataclasses.replace(s, can_pause=True, no_resume=RESUMES, v2g=False, max_discharge_kw=0.0,
                                    dischargeable_kwh=0.0, discharged_kwh=0.0) for s in inp.sessions]
    limit = np.maximum(np.asarray(inp.limit_kw), np.asarray(inp.base_load_kw))
    return PlanInput(sessions, limit.tolist(), list(inp.base_load_kw), inp.slot_s)


@dataclass
class Score:
    """What a plan comes to when the cars follow it."""

    delivered_kwh: float  # net, as executed
    claimed_kwh: float  # what the plan says it delivers
    short_sessions: int  # sessions missing their guarantee by more than SHORT_KWH
    short_kwh: float
    resumed: int  # cars that do not resume, planned at 0 A while wanting energy, then given current
    resumed_claimed_served: int  # ... of which the plan reports as served
    max_over_kw: float  # worst kW over the limit in any slot
    max_phase_over_a: float  # worst A over a phase limit
    gap_values: int  # setpoints strictly between 0 and the car's minimum
    off_grid_values: int  # setpoints not on the 0.1 A grid


def _hours(s: SessionNeed, n_slots: int, slot_s: float) -> np.ndarray:
    starts = np.arange(n_slots) * slot_s
    return np.clip((s.departure_s - starts) / slot_s, 0.0, 1.0) * slot_s / 3600.0


def score(plan: Plan, inp: PlanInput, *, realisable: bool = True) -> Score:
    """Execute `plan` (see the module doc). `realisable=False` (the relaxed LP) keeps the plan's
    own energy and guarantee figures (the bound it is) and skips the setpoint checks (gap values
    and 0.1 A steps are what it relaxes); resumes are still counted."""
    n_slots = len(inp.limit_kw)
    delivered = claimed = short_kwh = 0.0
    short = resumed = resumed_served = gaps = off_grid = 0
    for s in inp.sessions:
        sp = plan.sessions[s.session_id]
        claimed += sp.delivered_kwh
        if s.fixed_kw is not None:
            delivered += sp.delivered_kwh
            continue
        need = max(s.energy_needed_kwh, s.guaranteed_kwh)
        budget = max(0.0, s.dischargeable_kwh - s.discharged_kwh / s.efficiency) if s.v2g else 0.0
        kpa = s.phases * 0.23
        net, asleep, paused = 0.0, False, False
        counted = False
        amps = np.asarray(sp.current_a, dtype=float)
        if realisable:
            mag = np.abs(amps)
            gaps += int(np.sum((mag > 1e-9) & (mag < s.min_current_a - 1e-9)))
            off_grid += int(np.sum(np.abs(mag * 10 - np.round(mag * 10)) > 1e-6))
        for t, h in enumerate(_hours(s, n_slots, inp.slot_s)):
            if h <= 0:
                break
            a = float(amps[t])
            wants = need - net > 1e-6
            if a == 0 and wants and not s.pausable:
                paused = True
            elif a != 0 and paused:
                if not counted:
                    resumed += 1
                    resumed_served += sp.unmet_kwh <= SHORT_KWH
                    counted = True
                asleep = True
            if asleep:
                continue
            if a > 0 and wants:
                net += min(need - net, a * kpa * s.efficiency * h)
            elif a < 0:
                out = min(budget, -a * kpa * h / s.efficiency)
                budget -= out
                net -= out
        if not realisable:
            net = sp.delivered_kwh
        delivered += net
        gap = s.guaranteed_kwh - net
        if gap > SHORT_KWH:
            short += 1
            short_kwh += gap
    total = np.asarray(plan.total_kw)
    over = float(np.max(total + np.asarray(inp.base_load_kw) - np.asarray(inp.limit_kw), initial=0.0))
    return Score(delivered, claimed, short, short_kwh, resumed, resumed_served, max(over, 0.0),
                 _phase_over(plan, inp), gaps, off_grid)


def _phase_over(plan: Plan, inp: PlanInput) -> float:
    if inp.phase_limit_a is None:
        return 0.0
    n_slots = len(inp.limit_kw)
    split = np.asarray(inp.base_load_phase_split)
    drawn = split[:, None] * np.asarray(inp.base_load_kw)[None, :] * 1000 / 230
    names = ("L1", "L2", "L3")
    for s in inp.sessions:
        amps = np.asarray(plan.sessions[s.session_id].current_a, dtype=float)
        on = np.array([p in s.phase_wiring for p in names], dtype=float)
        exact = len(s.phase_wiring) == s.phases
        # Charging loads every listed phase; discharge relieves only a known phase.
        drawn += on[:, None] * np.where(amps > 0, amps, amps if exact else 0.0)[None, :n_slots]
    return float(max(0.0, np.max(drawn - inp.phase_limit_a)))
