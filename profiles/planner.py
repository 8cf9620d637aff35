"""Grid-aware charging planner: the one entry point the central system calls.

`plan(inp)` returns per-slot current setpoints for every session that keep a transformer (and
its phases) under its limit; the caller sends slot 0 and the rest as a schedule, and calls it
again whenever a limit, a session or a need changes (receding horizon). `immediate_cut(inp)` is
the no-look-ahead answer for the moment a stricter limit arrives, cheap enough to compute
inside that message's handling.

Order of priorities, for every algorithm here: the limit (and phase limits); then the minimum
current of cars that do not resume after a pause (planned off until departure only when the
limit leaves no room, and then reported); then guaranteed energy (when every guarantee can be
met, none is missed; when not, the total shortfall is minimised and shared so that no session
misses a larger part of its guarantee than necessary); then energy. Energies are net of V2G
discharge. Every value is 0 or within the car's [minimum, maximum] current and on the 0.1 A
grid (rounded down, so sums stay under the cap).

Algorithms, one interface each (`PlanInput -> Plan`), in the acnportal manner:

- `heuristic_plan` (`profiles.heuristic`): an as-late-as-possible reference schedule and
  tiered water-filling; tens of ms for 1,000 sessions x 32 slots (bench/, planning part).
- `lp_plan` (`profiles.refine`): the guarantee-first LP of the realisable problem (HiGHS),
  rounded through the same engine; the best of its roundings and the heuristic's plan is kept.
- `immediate_cut` (`profiles.heuristic`): proportional, no look-ahead.

`plan` picks: the LP when the problem has at most `MAX_LP_CELLS` session-slots and HiGHS
answers within the time budget, else the heuristic. `Plan.method` says which plan was sent
and `Plan.note` why. The module `profiles.optimum` is the relaxed LP the bench compares with.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from profiles.arrays import Prepared, ceil_tenth, floor_tenth, prepare
from profiles.engine import Allocator, SlotState, SlotView, laxity_hours, run_slots
from profiles.fill import priority_fill, snap_gap, water_fill
from profiles.heuristic import alap_reference, heuristic_plan, immediate_cut
from profiles.lp import LPError
from profiles.model import (
    ENERGY_EPS_KWH,
    KNOWN,
    PHASE_NAMES,
    RESUMES,
    SUSPECTED,
    VIOLATION_EPS,
    Plan,
    PlanInput,
    SessionNeed,
    SessionPlan,
)
from profiles.refine import lp_plans

__all__ = [
    "ENERGY_EPS_KWH", "KNOWN", "MAX_LP_CELLS", "PHASE_NAMES", "REFINE_BUDGET_S", "RESUMES", "SUSPECTED",
    "VIOLATION_EPS", "Allocator", "Plan", "PlanInput", "Prepared", "SessionNeed", "SessionPlan", "SlotState",
    "SlotView", "alap_reference", "better", "ceil_tenth", "floor_tenth", "guarantee_missed_kwh", "heuristic_plan",
    "immediate_cut", "laxity_hours", "lp_plan", "plan", "prepare", "priority_fill", "run_slots", "snap_gap", "water_fill",
]

#: Largest problem (controllable sessions x slots) given to the LP: ~1,500 sessions x 32 slots.
MAX_LP_CELLS = 48_000
#: Wall-clock budget of one `plan` call; the LP is given what is left after the heuristic.
REFINE_BUDGET_S = 1.0
#: Time kept for rounding the LP's answer, as a multiple of the heuristic plan's time (the
#: roundings walk the slots like it, twice at most).
ROUNDING_RESERVE = 2.5
#: Plans whose guaranteed and total energy differ by less than this (kWh, and share of the
#: total) count as equal; the earlier candidate (the heuristic) then wins as the fairer one.
TIE_KWH = 0.01
#: Guaranteed kWh within this count as equal (the 0.05 kWh a session counts as served by).
TIE_GUARANTEE_KWH = 0.05
TIE_SHARE = 1e-5
#: Per session, guaranteed kWh missed by less than this is rounding noise when plans are compared
#: (the guarantee repair's own threshold, `profiles.repair.SHORT_EPS_KWH`).
GUARANTEE_NOISE_KWH = 0.01


def guarantee_missed_kwh(p: Plan) -> float:
    """Guaranteed kWh the plan misses, beyond `GUARANTEE_NOISE_KWH` per session: rounding to
    0.1 A steps leaves a few Wh here and there, which summed over hundreds of cars must not
    outweigh real energy (a plan 0.08 kWh "short" in forty 2 Wh pieces against 200 kWh more)."""
    return float(sum(max(0.0, sp.guarantee_unmet_kwh - GUARANTEE_NOISE_KWH) for sp in p.sessions.values()))


def better(a: Plan, b: Plan) -> bool:
    """Is `a` better than `b`: fewer limit violations, then fewer guaranteed kWh missed (see
    `guarantee_missed_kwh`), then more net energy (beyond the tie tolerance)?"""
    if len(a.infeasible_slots) != len(b.infeasible_slots):
        return len(a.infeasible_slots) < len(b.infeasible_slots)
    tol = TIE_KWH + TIE_SHARE * max(abs(a.delivered_kwh), abs(b.delivered_kwh))
    missed_a, missed_b = guarantee_missed_kwh(a), guarantee_missed_kwh(b)
    if abs(missed_a - missed_b) > TIE_GUARANTEE_KWH:
        return missed_a < missed_b
    return a.delivered_kwh > b.delivered_kwh + tol


def _best(candidates: list[Plan]) -> Plan:
    best = candidates[0]
    for cand in candidates[1:]:
        if better(cand, best):
            best = cand
    return best


def _nothing_to_gain(prep: Prepared, p: Plan) -> bool:
    """Does every car get all it could (its need, or what full current until departure or the
    horizon's end brings), with no limit broken? Then no plan delivers more."""
    if p.infeasible_slots:
        return False
    at_full = prep.imax * prep.kw_per_a * prep.eff * prep.hours.sum(axis=1) * ~prep.off
    ids = [prep.inp.sessions[i].session_id for i in prep.ctrl]
    got = np.array([p.sessions[sid].delivered_kwh for sid in ids])
    return bool(np.all(got >= np.minimum(prep.need, at_full) - 1e-3))


def lp_plan(inp: PlanInput, *, time_limit_s: float | None = None, heuristic: Plan | None = None,
            heuristic_s: float | None = None) -> Plan:
    """The LP-guided plan, or the heuristic's when that is at least as good (see `better`);
    the LP is skipped when the heuristic already gives every car all it could take. With a
    time limit, HiGHS gets what is left of it after keeping time to round its answer (a
    multiple of the heuristic's time: `heuristic_s` when the heuristic was computed by the
    caller)."""
    started = time.perf_counter()
    prep = prepare(inp)
    if heuristic is None:
        heuristic = heuristic_plan(inp)
    spent = time.perf_counter() - started
    walk_s = spent if heuristic_s is None else max(heuristic_s, spent)
    if _nothing_to_gain(prep, heuristic):
        return replace(heuristic, note="heuristic: every car gets all it can take, nothing for the LP to gain")
    left = None if time_limit_s is None else time_limit_s - spent - ROUNDING_RESERVE * walk_s
    refined = lp_plans(prep, time_limit_s=left)
    best = _best([heuristic, *refined.plans])
    if best is heuristic:
        return replace(heuristic, note=f"heuristic at least as good as the LP's roundings ({refined.plans[0].note})")
    return best


def plan(inp: PlanInput, *, method: str = "auto", budget_s: float = REFINE_BUDGET_S) -> Plan:
    """The planner the central system calls (see the module doc). `method`: "auto" (LP when
    it fits the size limit and `budget_s`, else the heuristic), "lp" (no size limit or time
    budget) or "heuristic"."""
    if method == "heuristic":
        return heuristic_plan(inp)
    if method == "lp":
        return lp_plan(inp)
    if method != "auto":
        raise ValueError(f"method must be 'auto', 'lp' or 'heuristic', got {method!r}")
    started = time.perf_counter()
    heuristic = heuristic_plan(inp)
    heuristic_s = time.perf_counter() - started
    cells = sum(1 for s in inp.sessions if s.fixed_kw is None) * len(inp.limit_kw)
    if cells > MAX_LP_CELLS:
        return replace(heuristic, note=f"{cells:,} session-slots exceed the LP limit of {MAX_LP_CELLS:,}")
    try:
        return lp_plan(inp, time_limit_s=budget_s - (time.perf_counter() - started), heuristic=heuristic,
                       heuristic_s=heuristic_s)
    except (LPError, ValueError, ArithmeticError) as exc:  # the heuristic's plan is always safe to send
        spent = time.perf_counter() - started
        return replace(heuristic, note=f"LP not used ({type(exc).__name__}: {exc}; {spent:.2f} s)")
