"""The exact offline optimum of a `PlanInput`, as a linear programme (HiGHS via scipy).

It knows every need and limit in advance and relaxes the 0-6 A gap, the 0.1 A rounding and
the can_pause=False rule, so its delivered energy is an upper bound for any realisable plan:
tests and benchmarks measure the planner's gap against it.

Variables per controllable session i and slot t it is present in: charging power p[i,t] in
[0, max current x phases x 230 V]; for V2G cars, discharge power d[i,t] (only in slots where
the limit is below base load plus fixed sessions, the one use the planner makes of V2G: moving
energy from one car to another would only lose energy); guaranteed energy g[i] in [0, G_i] and
comfort energy c[i] in [0, need_i - G_i] with g + c <= net energy into the battery <= need.
A violation slack per slot (and per phase) keeps the problem solvable when even full discharge
cannot meet a limit; it costs far more than any energy is worth, so it is only used when needed.

Objective: maximise GUARANTEE_WEIGHT x sum(g) + sum(c), i.e. guaranteed energy first, then total.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from profiles.planner import (
    ENERGY_EPS_KWH,
    VIOLATION_EPS,
    Plan,
    PlanInput,
    SessionPlan,
    prepare,
)
from profiles.units import VOLTAGE_V

GUARANTEE_WEIGHT = 1000.0
VIOLATION_COST = 1e7
#: Tiny costs that make the optimum avoid pointless charging and discharging.
CHARGE_COST = 1e-6
DISCHARGE_COST = 1e-3


class OptimumError(RuntimeError):
    """The LP solver failed (should not happen: the slack keeps the problem feasible)."""


def optimum(inp: PlanInput) -> Plan:
    prep = prepare(inp)
    n, n_slots = prep.ctrl.size, prep.n_slots
    n_res = prep.cap.shape[0]
    h = prep.hours
    deficit = prep.cap[0] < -VIOLATION_EPS

    # Column layout: p (present cells), d (V2G cells in deficit slots), g, c, slack (R x T).
    p_rows, p_cols = np.nonzero(h > 0)
    d_mask = (h > 0) & prep.v2g[:, None] & deficit[None, :]
    d_rows, d_cols = np.nonzero(d_mask)
    n_p, n_d = p_rows.size, d_rows.size
    off_d, off_g = n_p, n_p + n_d
    off_c = off_g + n
    off_s = off_c + n
    n_var = off_s + n_res * n_slots

    pmax = prep.imax * prep.kw_per_a
    bounds = np.zeros((n_var, 2))
    bounds[:n_p, 1] = pmax[p_rows]
    bounds[off_d:off_g, 1] = np.minimum(prep.dis_kw[d_rows], pmax[d_rows])
    bounds[off_g:off_c, 1] = prep.guar
    bounds[off_c:off_s, 1] = np.maximum(prep.need - prep.guar, 0.0)
    bounds[off_s:, 1] = np.inf

    cost = np.zeros(n_var)
    cost[:n_p] = CHARGE_COST
    cost[off_d:off_g] = DISCHARGE_COST
    cost[off_g:off_c] = -GUARANTEE_WEIGHT
    cost[off_c:off_s] = -1.0
    cost[off_s:] = VIOLATION_COST

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    rhs: list[np.ndarray] = []
    n_con = 0

    def add(r: np.ndarray, c: np.ndarray, v: np.ndarray) -> None:
        rows.append(r)
        cols.append(c)
        vals.append(v)

    # Capacity per resource r and slot t: sum(use * p) - sum(use * d) - slack <= cap.
    exact_wiring = np.array([len(inp.sessions[i].phase_wiring) == inp.sessions[i].phases for i in prep.ctrl])
    for r in range(n_res):
        per_kw = prep.usage[:, r] / prep.kw_per_a  # resource use per kW of this session
        add(n_con + p_cols, np.arange(n_p), per_kw[p_rows])
        credit = per_kw[d_rows] * (exact_wiring[d_rows] if r > 0 else 1.0)
        add(n_con + d_cols, off_d + np.arange(n_d), -credit)
        add(n_con + np.arange(n_slots), off_s + r * n_slots + np.arange(n_slots), -np.ones(n_slots))
        rhs.append(prep.cap[r])
        n_con += n_slots

    # Energy into the battery per session: e_in - e_out.
    e_in = prep.eff[p_rows] * h[p_rows, p_cols]
    e_out = h[d_rows, d_cols] / prep.eff[d_rows]
    # g + c - net <= 0
    add(n_con + p_rows, np.arange(n_p), -e_in)
    add(n_con + d_rows, off_d + np.arange(n_d), e_out)
    add(n_con + np.arange(n), off_g + np.arange(n), np.ones(n))
    add(n_con + np.arange(n), off_c + np.arange(n), np.ones(n))
    rhs.append(np.zeros(n))
    n_con += n
    # net <= need
    add(n_con + p_rows, np.arange(n_p), e_in)
    add(n_con + d_rows, off_d + np.arange(n_d), -e_out)
    rhs.append(prep.need.copy())
    n_con += n
    # discharged energy <= dischargeable
    add(n_con + d_rows, off_d + np.arange(n_d), e_out)
    rhs.append(prep.dis_kwh.copy())
    n_con += n

    a_ub = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n_con, n_var)).tocsr()
    res = linprog(cost, A_ub=a_ub, b_ub=np.concatenate(rhs), bounds=bounds, method="highs")
    if res.status != 0 or res.x is None:
        raise OptimumError(f"LP solver failed: {res.message}")
    x = res.x

    power = np.zeros((n, n_slots))
    power[p_rows, p_cols] = x[:n_p]
    power[d_rows, d_cols] -= x[off_d:off_g]
    net = np.zeros(n)
    np.add.at(net, p_rows, x[:n_p] * e_in)
    np.add.at(net, d_rows, -x[off_d:off_g] * e_out)
    guaranteed = x[off_g:off_c]
    slack = x[off_s:].reshape(n_res, n_slots)

    total = power.sum(axis=0) + prep.fixed_kw.sum(axis=0)
    headroom = prep.limit_kw - prep.base_kw - total
    infeasible = np.flatnonzero(np.any(slack > VIOLATION_EPS, axis=0) | (headroom < -VIOLATION_EPS))

    plans: dict[str, SessionPlan] = {}
    amps = power / prep.kw_per_a[:, None] if n else power
    for row, pos in enumerate(prep.ctrl.tolist()):
        s = inp.sessions[pos]
        unmet = max(0.0, float(prep.need[row] - net[row]))
        g_unmet = max(0.0, float(prep.guar[row] - guaranteed[row]))
        plans[s.session_id] = SessionPlan(
            session_id=s.session_id, current_a=tuple(amps[row].tolist()), power_kw=tuple(power[row].tolist()),
            delivered_kwh=float(net[row]), unmet_kwh=unmet if unmet > ENERGY_EPS_KWH else 0.0,
            guarantee_unmet_kwh=g_unmet if g_unmet > ENERGY_EPS_KWH else 0.0,
            reason="optimum cannot serve it" if unmet > 1e-3 else None,
        )
    for frow, pos in enumerate(prep.fixed.tolist()):
        s = inp.sessions[pos]
        kw = prep.fixed_kw[frow]
        hours = np.clip((s.departure_s - np.arange(n_slots) * inp.slot_s) / inp.slot_s, 0, 1) * prep.slot_h
        drawn = float(np.dot(kw, hours)) * s.efficiency
        need = max(s.energy_needed_kwh, s.guaranteed_kwh)
        plans[s.session_id] = SessionPlan(
            session_id=s.session_id, current_a=tuple((kw * 1000.0 / (s.phases * VOLTAGE_V)).tolist()),
            power_kw=tuple(kw.tolist()), delivered_kwh=min(drawn, need) if need > 0 else drawn,
            unmet_kwh=max(0.0, need - drawn), guarantee_unmet_kwh=max(0.0, s.guaranteed_kwh - drawn),
            reason="fixed draw (not controllable)" if need - drawn > 1e-3 else None,
        )
    return Plan(sessions=plans, total_kw=tuple(total.tolist()), headroom_kw=tuple(headroom.tolist()),
                infeasible_slots=tuple(infeasible.tolist()))
