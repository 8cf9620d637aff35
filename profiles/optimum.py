"""The offline optimum of a `PlanInput` as a guarantee-first LP (`profiles.lp`), relaxed.

It knows every need and limit of the horizon in advance and relaxes the 0-6 A gap, the 0.1 A
rounding and the rule for cars that do not resume after a pause (it may pause and resume
them freely), so it bounds what any realisable plan can reach in the same lexicographic order:
first the fewest guaranteed kWh missed (shared so no session misses a larger part of its
guarantee than necessary), then the most net energy. Tests and benchmarks measure planners
against it. V2G cars discharge only in slots where the limit (or a phase limit) is below what
the base load and fixed sessions take: elsewhere discharging could only move energy from one
car to another, which the planners do not do either.
"""

from __future__ import annotations

import numpy as np

from profiles.arrays import prepare
from profiles.engine import fixed_session_plans, violations
from profiles.lp import LPError, relaxed_bounds, solve
from profiles.model import ENERGY_EPS_KWH, VIOLATION_EPS, Plan, PlanInput, SessionPlan

__all__ = ["OptimumError", "optimum"]


class OptimumError(RuntimeError):
    """The LP solver failed (should not happen: the violation slack keeps it feasible)."""


def optimum(inp: PlanInput) -> Plan:
    prep = prepare(inp)
    try:
        sol = solve(prep, relaxed_bounds(prep))
    except LPError as exc:
        raise OptimumError(str(exc)) from exc
    current = sol.current
    power = current * prep.kw_per_a[:, None]
    total = power.sum(axis=0) + prep.fixed_kw.sum(axis=0)
    headroom = prep.limit_kw - prep.base_kw - total
    bad = np.any(sol.slack > VIOLATION_EPS, axis=0) | violations(prep, current)
    delivered = sol.delivered
    discharged = (sol.discharge * prep.kw_per_a[:, None] * prep.hours / prep.eff[:, None]).sum(axis=1)
    plans: dict[str, SessionPlan] = {}
    for row, pos in enumerate(prep.ctrl.tolist()):
        sid = inp.sessions[pos].session_id
        unmet = max(0.0, float(prep.need[row] - delivered[row]))
        g_unmet = max(0.0, float(prep.guar[row] - sol.guaranteed[row]))
        plans[sid] = SessionPlan(
            session_id=sid, current_a=tuple(current[row].tolist()), power_kw=tuple(power[row].tolist()),
            delivered_kwh=float(delivered[row]), unmet_kwh=unmet if unmet > ENERGY_EPS_KWH else 0.0,
            guarantee_unmet_kwh=g_unmet if g_unmet > ENERGY_EPS_KWH else 0.0,
            reason="optimum cannot serve it" if unmet > 1e-3 else None,
            discharged_kwh=float(discharged[row]),
        )
    plans.update(fixed_session_plans(prep))
    return Plan(sessions=plans, total_kw=tuple(total.tolist()), headroom_kw=tuple(headroom.tolist()),
                infeasible_slots=tuple(np.flatnonzero(bad).tolist()), method="optimum (relaxed LP)",
                note=f"two-stage LP in {sol.seconds:.3f} s")
