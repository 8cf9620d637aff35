"""A rigorous like-for-like bound for the congested planning instances: the most net energy any
plan can deliver that keeps the limits and the resume rule (issue 11).

The relaxed LP (`profiles.optimum`) may pause a car that does not resume and charge it again
later, which no realisable plan can; "LP (resume rule)" (`profiles.refine.realisable_bounds`)
fixes *which* of those cars stop and when (the engine's rule), so it is not a bound for every
plan. This module maximises energy over every choice instead, as a mixed-integer programme
(HiGHS through SciPy): per car that does not resume a binary "still going" z[i,t], not
increasing in t; while going it draws (or discharges) at least its minimum, once stopped
nothing. Everything the relaxed LP relaxes stays relaxed (the 0-6 A gap of cars that resume,
0.1 A steps, the export room of a phase, the order guarantees-then-energy), so HiGHS's dual
bound is an upper bound on the energy of every plan that keeps the limits, the resume rule and
the rules the relaxed LP shares with the planner (discharge only where the limit is below the
base load, and it keeps limits and minimums, it does not charge other cars). Energy is net,
into the battery, capped by each car's need.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds as SciBounds
from scipy.optimize import LinearConstraint, milp
from scipy.sparse import coo_matrix, csr_matrix, vstack

from profiles.arrays import Prepared, prepare
from profiles.lp import relaxed_bounds
from profiles.model import PlanInput


@dataclass(frozen=True)
class EnergyBound:
    """Most net energy (kWh) a plan keeping the resume rule can deliver.

    `upper`: proven for every such plan (HiGHS's dual bound, energy only: guarantees may be
    given up); `guarantee_first`: proven for every such plan that misses no more guaranteed kWh
    than necessary (guarantees first, then energy: the planner's order and the relaxed LP's);
    `relaxation`: `upper` with z continuous (no branching); `proven_optimal`: HiGHS closed the
    gap of both (else the bounds still hold, they are just looser)."""

    upper: float
    guarantee_first: float
    relaxation: float
    proven_optimal: bool
    seconds: float


def _model(prep: Prepared) -> tuple[csr_matrix, np.ndarray, np.ndarray, SciBounds, np.ndarray, int, int]:
    """The programme: (A, row lows, row highs, bounds, integrality, offset of E, offset of g)."""
    rb = relaxed_bounds(prep)
    n, n_slots = prep.ctrl.size, prep.n_slots
    h = prep.hours
    x_i, x_t = np.nonzero(rb.hi > 1e-9)
    y_i, y_t = np.nonzero(rb.dis_hi > 1e-9)
    stiff = ~prep.pausable
    z_i, z_t = np.nonzero(stiff[:, None] & (h > 0) & ~prep.off[:, None])
    n_x, n_y, n_z = x_i.size, y_i.size, z_i.size
    off_y, off_e, off_g, off_z = n_x, n_x + n_y, n_x + n_y + n, n_x + n_y + 2 * n
    n_var = off_z + n_z
    lb, ub = np.zeros(n_var), np.zeros(n_var)
    ub[:n_x] = rb.hi[x_i, x_t]
    ub[off_y:off_e] = rb.dis_hi[y_i, y_t]
    lb[off_e:off_g], ub[off_e:off_g] = -np.inf, prep.need
    lb[off_g:off_z], ub[off_g:off_z] = -np.inf, prep.guar  # the guaranteed part of E
    ub[off_z:] = 1.0
    # A car off until departure already takes nothing.
    ub[:n_x] = np.where(prep.off[x_i], 0.0, ub[:n_x])
    ub[off_y:off_e] = np.where(prep.off[y_i], 0.0, ub[off_y:off_e])

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    lo_rhs: list[np.ndarray] = []
    hi_rhs: list[np.ndarray] = []
    n_con = 0

    def add(r: np.ndarray, c: np.ndarray, v: np.ndarray) -> None:
        rows.append(np.asarray(r))
        cols.append(np.asarray(c))
        vals.append(np.asarray(v, dtype=float))

    def rhs(lo: np.ndarray, hi: np.ndarray) -> None:
        lo_rhs.append(np.asarray(lo, dtype=float))
        hi_rhs.append(np.asarray(hi, dtype=float))

    n_res = prep.cap.shape[0]
    for r in range(n_res):  # capacity: use - credit <= cap
        add(n_con + x_t, np.arange(n_x), prep.usage[x_i, r])
        add(n_con + y_t, off_y + np.arange(n_y), -prep.credit[y_i, r])
        rhs(np.full(n_slots, -np.inf), prep.cap[r])
        n_con += n_slots
    if n_y:  # where cars discharge, charging stays within the limit plus the minimums held
        dis_slots = np.unique(y_t)
        sel = np.flatnonzero(np.isin(x_t, dis_slots))
        pos = np.searchsorted(dis_slots, x_t[sel])
        zsel = np.flatnonzero(np.isin(z_t, dis_slots))
        zpos = np.searchsorted(dis_slots, z_t[zsel])
        for r in range(n_res):
            add(n_con + pos, sel, prep.usage[x_i[sel], r])
            add(n_con + zpos, off_z + zsel, -prep.usage[z_i[zsel], r] * prep.imin[z_i[zsel]])
            rhs(np.full(dis_slots.size, -np.inf), np.maximum(prep.cap[r, dis_slots], 0.0))
            n_con += dis_slots.size
    # E - net <= 0
    add(n_con + x_i, np.arange(n_x), -prep.kw_per_a[x_i] * prep.eff[x_i] * h[x_i, x_t])
    add(n_con + y_i, off_y + np.arange(n_y), prep.kw_per_a[y_i] * h[y_i, y_t] / prep.eff[y_i])
    add(n_con + np.arange(n), off_e + np.arange(n), np.ones(n))
    rhs(np.full(n, -np.inf), np.zeros(n))
    n_con += n
    add(n_con + np.arange(n), off_g + np.arange(n), np.ones(n))  # g - E <= 0
    add(n_con + np.arange(n), off_e + np.arange(n), -np.ones(n))
    rhs(np.full(n, -np.inf), np.zeros(n))
    n_con += n
    if n_y:  # discharge budget
        add(n_con + y_i, off_y + np.arange(n_y), prep.kw_per_a[y_i] * h[y_i, y_t] / prep.eff[y_i])
        rhs(np.full(n, -np.inf), prep.dis_kwh)
        n_con += n
    if n_z:  # the resume rule: imin z <= x + y <= top z, z not increasing
        cell = {(int(i), int(t)): k for k, (i, t) in enumerate(zip(z_i, z_t))}
        x_of = {(int(i), int(t)): k for k, (i, t) in enumerate(zip(x_i, x_t))}
        y_of = {(int(i), int(t)): k for k, (i, t) in enumerate(zip(y_i, y_t))}
        for (i, t), k in cell.items():
            xs = [x_of[(i, t)]] if (i, t) in x_of else []
            ys = [off_y + y_of[(i, t)]] if (i, t) in y_of else []
            top = sum(ub[v] for v in xs + ys)
            for v in xs + ys:  # each part at most its top while going, 0 once stopped
                add(np.array([n_con]), np.array([v]), np.array([1.0]))
                add(np.array([n_con]), np.array([off_z + k]), np.array([-ub[v]]))
                rhs(np.array([-np.inf]), np.array([0.0]))
                n_con += 1
            if top > 0:
                add(np.full(len(xs) + len(ys) + 1, n_con), np.array([*xs, *ys, off_z + k]),
                    np.array([1.0] * (len(xs) + len(ys)) + [-float(min(prep.imin[i], top))]))
                rhs(np.array([0.0]), np.array([np.inf]))
                n_con += 1
            else:
                ub[off_z + k] = 0.0
            if (i, t + 1) in cell:
                add(np.array([n_con, n_con]), np.array([off_z + cell[(i, t + 1)], off_z + k]), np.array([1.0, -1.0]))
                rhs(np.array([-np.inf]), np.array([0.0]))
                n_con += 1
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_con, n_var)).tocsr()
    integrality = np.zeros(n_var)
    integrality[off_z:] = 1
    return a, np.concatenate(lo_rhs), np.concatenate(hi_rhs), SciBounds(lb, ub), integrality, off_e, off_g


def _solve(cost: np.ndarray, cons: LinearConstraint, bounds: SciBounds, integrality: np.ndarray,
           time_limit_s: float) -> tuple[float, float, bool]:
    """(proven upper bound of -cost.x, best value found or -inf, proven optimal)."""
    res = milp(cost, constraints=cons, bounds=bounds, integrality=integrality,
               options={"time_limit": max(1.0, time_limit_s), "mip_rel_gap": 1e-5})
    best = -float(res.fun) if res.x is not None and res.fun is not None else -np.inf
    dual = getattr(res, "mip_dual_bound", None)
    if res.status == 0:
        upper = best if dual is None or not np.isfinite(dual) else max(best, -float(dual))
    elif dual is not None and np.isfinite(dual):
        upper = -float(dual)
    else:
        raise RuntimeError(f"HiGHS gave no bound: {res.message}")
    return upper, best, res.status == 0


def energy_bound(inp: PlanInput, *, time_limit_s: float = 20.0) -> EnergyBound:
    """The bounds (see `EnergyBound`); HiGHS stops at `time_limit_s` per solve, its dual bound still holds."""
    started = time.perf_counter()
    prep = prepare(inp)
    a, lo, hi, bounds, integrality, off_e, off_g = _model(prep)
    n = prep.ctrl.size
    energy = np.zeros(a.shape[1])
    energy[off_e:off_g] = -1.0
    relax = milp(energy, constraints=LinearConstraint(a, lo, hi), bounds=bounds)
    if relax.status != 0:
        raise RuntimeError(f"HiGHS (relaxation): {relax.message}")
    relaxation = -float(relax.fun)
    upper, _, ok_e = _solve(energy, LinearConstraint(a, lo, hi), bounds, integrality, time_limit_s)
    # Guarantees first: the most guaranteed kWh any plan keeps (a plan HiGHS found is a lower
    # bound of it, so every plan that keeps the most has at least that), then the most energy.
    guaranteed = np.zeros(a.shape[1])
    guaranteed[off_g:off_g + n] = -1.0
    _, kept, ok_g = _solve(guaranteed, LinearConstraint(a, lo, hi), bounds, integrality, time_limit_s)
    row = csr_matrix(-guaranteed[None, :])
    floor = kept - 1e-6 - 1e-7 * abs(kept) if np.isfinite(kept) else -np.inf
    cons = LinearConstraint(vstack([a, row]).tocsr(), np.append(lo, floor), np.append(hi, np.inf))
    first, _, ok_f = _solve(energy, cons, bounds, integrality, time_limit_s)
    return EnergyBound(min(upper, relaxation), min(first, upper, relaxation), relaxation, ok_e and ok_g and ok_f,
                       time.perf_counter() - started)
