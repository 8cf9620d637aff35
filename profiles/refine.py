"""LP-guided planning: solve the guarantee-first LP of the realisable problem, then round it
through the engine (the 0-6 A gap, 0.1 A steps, limits and phase limits, the resume rule).

1. A walk that only keeps the minimums of cars that do not resume (discharging V2G cars where
   needed) finds, by the engine's own rule, which of them the limit forces off and from when;
   the LP then holds each of them at its minimum or more while it charges and never after,
   so it cannot plan one paused and resumed either. Discharge is allowed where that walk
   needed it or the limit is below the base load.
2. The LP (`profiles.lp`, guarantees first, then energy) gives each car its energy total and
   a schedule. Two references are built from it: the LP's own schedule, and (where cars
   discharge) the per-car totals placed as late as possible and fairly
   (`heuristic.alap_reference`), which keeps guarantees better around discharge. Each drives the
   engine's reference allocator (dues first, the rest shared fairly), with the LP's discharge
   as the discharge guide; each rounding then gets the guarantee repair (`profiles.repair`),
   which moves charging (and discharge) to cars the rounding left short of their guarantee.
3. The caller keeps the best of these and the pure heuristic: fewest guaranteed kWh missed,
   then most energy, ties to the fairer (heuristic first).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from profiles.arrays import Prepared, deficit_slots
from profiles.engine import GUIDE_NOISE_A, SlotState, SlotView, build_plan, walk
from profiles.heuristic import alap_reference, reference_allocator
from profiles.lp import Bounds, LPSolution, discharge_top, solve
from profiles.model import ENERGY_EPS_KWH, Plan
from profiles.repair import repair_guarantees

PREFER: str | None = None  # no ordering of equal charging: fastest, and as good as "late" or "early"


def _floors_only(prep: Prepared, state: SlotState, v: SlotView) -> np.ndarray:
    return v.floor


def realisable_bounds(prep: Prepared) -> Bounds:
    """LP bounds that respect the resume rule (see the module doc): a car that does not resume
    charges at its minimum or more, or discharges at its minimum or more, in exactly the slots
    where the walk kept it going, and not after."""
    if prep.pausable.all() and not deficit_slots(prep).any():
        floors = np.zeros((prep.ctrl.size, prep.n_slots))  # nothing to keep going, nothing to discharge
    else:
        floors, _ = walk(prep, _floors_only, use_v2g=True)
    present = prep.hours > 0
    wants = (prep.need > ENERGY_EPS_KWH) | prep.v2g
    hi = np.where(present & wants[:, None], prep.imax[:, None], 0.0)
    stiff = ~prep.pausable
    charging, discharging = floors > 0, floors < 0
    hi[stiff] = np.where(charging[stiff], prep.imax[stiff, None], 0.0)
    lo = np.where(charging & stiff[:, None], prep.imin[:, None], 0.0)
    dis_slots = deficit_slots(prep) | np.any(discharging, axis=0)
    dis = np.where(present & dis_slots[None, :], discharge_top(prep)[:, None], 0.0)
    dis_lo = np.where(discharging & stiff[:, None], prep.imin[:, None], 0.0)
    dis[stiff] = np.where(discharging[stiff] | ~dis_slots[None, :], dis[stiff], 0.0)
    dis[stiff] = np.where(charging[stiff], 0.0, dis[stiff])
    return Bounds(lo=lo, hi=hi, dis_hi=dis, dis_lo=dis_lo)


def _schedule_reference(prep: Prepared, sol: LPSolution) -> tuple[np.ndarray, np.ndarray]:
    """The LP's own schedule as cumulative dues. What a car charges now to give back later
    counts as guaranteed energy (the guarantee is net)."""
    total = np.cumsum(sol.slot_energy(prep), axis=1)
    out = sol.discharge * prep.kw_per_a[:, None] * prep.hours / prep.eff[:, None]
    later = np.cumsum(out[:, ::-1], axis=1)[:, ::-1] - out
    must_g = np.minimum(total, np.maximum(sol.guaranteed, 0.0)[:, None] + later)
    return must_g, total - must_g


def _totals_reference(prep: Prepared, sol: LPSolution) -> tuple[np.ndarray, np.ndarray]:
    """The LP's per-car totals placed as late as possible by least-laxity water-filling.

    What the LP discharges must be charged back on top (with guaranteed priority: the
    guarantee is net), so the ALAP places gross energy and the reference subtracts the LP's
    discharge as it happens."""
    out = sol.discharge * prep.kw_per_a[:, None] * prep.hours / prep.eff[:, None]
    given = out.sum(axis=1)
    totals = np.clip(sol.delivered, 0.0, prep.need) + given
    guar = np.clip(sol.guaranteed, 0.0, prep.guar) + given
    must_g, must_c = alap_reference(dataclasses.replace(prep, need=totals, guar=guar))
    return must_g - np.cumsum(out, axis=1), must_c


@dataclass
class Refined:
    plans: list[Plan]
    solution: LPSolution


def lp_plans(prep: Prepared, *, time_limit_s: float | None = None) -> Refined:
    """Plans rounded from the realisable LP (raises `profiles.lp.LPError` when HiGHS fails)."""
    started = time.perf_counter()
    bounds = realisable_bounds(prep)
    if time_limit_s is not None:  # the walk behind the bounds comes out of the same budget
        time_limit_s -= time.perf_counter() - started
    sol = solve(prep, bounds, prefer=PREFER, time_limit_s=time_limit_s)
    note = f"LP {prep.ctrl.size} sessions x {prep.n_slots} slots in {sol.seconds:.3f} s"
    guide = sol.discharge
    alive = (bounds.lo > 0) | (bounds.dis_lo > 0 if bounds.dis_lo is not None else False)
    references = [("lp schedule", _schedule_reference)]
    if np.any(sol.discharge >= GUIDE_NOISE_A):  # the totals reference pays off where cars discharge
        references.insert(0, ("lp totals", _totals_reference))
    plans = []
    for name, reference in references:
        current, state = walk(prep, reference_allocator(*reference(prep, sol)), use_v2g=True,
                              discharge_guide=guide, keep_first=alive)
        if sol.guaranteed.sum() > 0:
            current, state = repair_guarantees(prep, current, state)
        plans.append(build_plan(prep, current, state, method=name, note=note))
    return Refined(plans, sol)
