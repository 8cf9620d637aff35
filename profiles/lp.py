"""Guarantee-first linear programme over a prepared planning problem (HiGHS via SciPy).

Variables, in amps per controllable session i and slot t: charging x[i,t] in [lo, hi] (cells
with hi = 0 are left out), discharge y[i,t] in [0, top] where discharge is allowed; per session
the guaranteed part g[i] <= G_i (negative when the car ends below where it started: discharge
counts against the guarantee, energy is net) and the comfort part c[i] in [0, need_i - G_i],
with g + c <= net energy into the battery (charged minus discharged; more may be charged than
counted, which is how a car held at its minimum after it is full is represented); one shortfall
share z >= (G_i - g_i) / G_i; and a violation slack per resource and slot that costs far more
than any energy, so the problem stays solvable when even full discharge cannot meet a limit.
A V2G car is never charged beyond its need before it discharges (it would stop by itself).
Where cars discharge, the others charge only within what the limit leaves without that
discharge (beyond the minimums in `Bounds.lo`): V2G keeps limits, it does not move energy
from one car to another.

Lexicographic order, two solves:

1. minimise violations, then the total guarantee shortfall sum(G - g), then (with a weight so
   small it never trades away shortfall) the largest shortfall share z: the shortfall is
   shared so that no session misses a larger part of its guarantee than necessary;
2. with those fixed (within a tolerance), maximise the total net energy sum(g + c), with tiny
   costs that avoid pointless discharge and, optionally, prefer charging late or early.

Resources and energy as in `profiles.arrays`: usage per amp charged, credit per amp discharged,
kWh into the battery per amp = kW per amp x efficiency x hours present.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from profiles.arrays import Prepared, deficit_slots

VIOLATION_COST = 1e6
#: Weight of the largest shortfall share next to the total shortfall (kWh): tie-breaking only.
SHARE_WEIGHT = 1e-4
#: Per grid kWh: discourages discharge that buys nothing, and orders otherwise equal charging.
DISCHARGE_COST = 1e-3
CHARGE_COST = 1e-6
#: How much the first stage's optimum may be given up in the second (absolute + relative).
STAGE_TOL_ABS = 1e-5
STAGE_TOL_REL = 1e-7
#: Guarantees below this (kWh) take no part in the shortfall share (numerically meaningless).
GUARANTEE_EPS_KWH = 1e-6


class LPError(RuntimeError):
    """HiGHS did not return an optimal solution (time limit, numerical trouble)."""


@dataclass
class Bounds:
    """Which cells may charge / discharge and within what (amps)."""

    lo: np.ndarray  # (n, T) lowest charging current (a car that does not resume: its minimum)
    hi: np.ndarray  # (n, T) highest charging current; 0 = no variable
    dis_hi: np.ndarray  # (n, T) highest discharge current; 0 = no variable
    dis_lo: np.ndarray | None = None  # (n, T) lowest discharge current (a car kept going by discharging)


@dataclass
class LPSolution:
    charge: np.ndarray  # (n, T) amps
    discharge: np.ndarray  # (n, T) amps (>= 0)
    guaranteed: np.ndarray  # (n,) g: guaranteed part of the net energy (kWh)
    comfort: np.ndarray  # (n,) c
    slack: np.ndarray  # (R, T) violation per resource and slot
    share: float  # largest shortfall share of a guarantee
    seconds: float

    @property
    def current(self) -> np.ndarray:
        return self.charge - self.discharge

    @property
    def delivered(self) -> np.ndarray:
        return self.guaranteed + self.comfort

    def slot_energy(self, prep: Prepared) -> np.ndarray:
        """Net kWh into each battery per slot, as the LP counts it (charging beyond what is
        counted, e.g. a minimum held after the car is full, is cut off at the end)."""
        raw = (self.charge * prep.kw_per_a[:, None] * prep.eff[:, None] * prep.hours
               - self.discharge * prep.kw_per_a[:, None] * prep.hours / prep.eff[:, None])
        cum = np.minimum(np.cumsum(raw, axis=1), self.delivered[:, None])
        return np.diff(np.hstack([np.zeros((raw.shape[0], 1)), cum]), axis=1)


def discharge_top(prep: Prepared) -> np.ndarray:
    """(n,) most a V2G car may discharge, in amps (power and car limits)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        top = np.where(prep.v2g, np.minimum(prep.imax, prep.dis_kw / np.maximum(prep.kw_per_a, 1e-12)), 0.0)
    return np.where(prep.dis_kwh > 1e-9, top, 0.0)


def _earlier_cells(cell_i: np.ndarray, cell_t: np.ndarray, q_i: np.ndarray, q_t: np.ndarray,
                   n_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (k, j): cell j is in the same row as query k and in an earlier slot. Cells must be
    sorted by (row, slot), as `np.nonzero` returns them."""
    keys = cell_i * (n_slots + 1) + cell_t
    start = np.searchsorted(keys, q_i * (n_slots + 1))
    end = np.searchsorted(keys, q_i * (n_slots + 1) + q_t)
    counts = end - start
    pair_k = np.repeat(np.arange(q_i.size), counts)
    first = np.repeat(start - (np.cumsum(counts) - counts), counts)
    return pair_k, first + np.arange(int(counts.sum()))


def relaxed_bounds(prep: Prepared) -> Bounds:
    """No 0-6 A gap, no rule for cars that do not resume; discharge only where the limit is
    below what base load and fixed sessions take (elsewhere it could only move energy)."""
    present = prep.hours > 0
    wants = (prep.need > 1e-9) | prep.v2g
    hi = np.where(present & wants[:, None], prep.imax[:, None], 0.0)
    dis = np.where(present & deficit_slots(prep)[None, :], discharge_top(prep)[:, None], 0.0)
    return Bounds(lo=np.zeros_like(hi), hi=hi, dis_hi=dis)


def solve(prep: Prepared, bounds: Bounds, *, prefer: str | None = None,
          time_limit_s: float | None = None) -> LPSolution:
    """The two-stage guarantee-first LP. `prefer` "late" or "early" orders equal charging."""
    started = time.perf_counter()
    n, n_slots = prep.ctrl.size, prep.n_slots
    n_res = prep.cap.shape[0]
    h = prep.hours
    x_i, x_t = np.nonzero(bounds.hi > 1e-9)
    # Discharge cells, each split into a part up to the car's minimum and the rest, which costs
    # more: a deficit is spread over cars (at their minimum) before one car gives more.
    c_i, c_t = np.nonzero(bounds.dis_hi > 1e-9)
    c_top = bounds.dis_hi[c_i, c_t]
    upper = c_top > prep.imin[c_i] + 1e-9
    y_i, y_t = np.concatenate([c_i, c_i[upper]]), np.concatenate([c_t, c_t[upper]])
    n_c = c_i.size
    n_x, n_y = x_i.size, y_i.size
    off_y, off_g = n_x, n_x + n_y
    off_c = off_g + n
    off_s = off_c + n
    off_z = off_s + n_res * n_slots
    n_var = off_z + 1

    guar = prep.guar
    lb = np.zeros(n_var)
    ub = np.zeros(n_var)
    lb[:n_x] = np.minimum(bounds.lo[x_i, x_t], bounds.hi[x_i, x_t])
    ub[:n_x] = bounds.hi[x_i, x_t]
    ub[off_y:off_y + n_c] = np.minimum(c_top, prep.imin[c_i])
    ub[off_y + n_c:off_g] = (c_top - prep.imin[c_i])[upper]
    if bounds.dis_lo is not None:
        lb[off_y:off_y + n_c] = np.minimum(bounds.dis_lo[c_i, c_t], ub[off_y:off_y + n_c])
    lb[off_g:off_c] = -np.inf
    ub[off_g:off_c] = guar
    ub[off_c:off_s] = np.maximum(prep.need - guar, 0.0)
    ub[off_s:off_z] = np.inf
    ub[off_z] = 1.0

    kpa = prep.kw_per_a
    e_in = kpa[x_i] * prep.eff[x_i] * h[x_i, x_t]  # kWh into the battery per amp charged
    e_out = kpa[y_i] * h[y_i, y_t] / prep.eff[y_i]  # kWh out of the battery per amp discharged

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    rhs: list[np.ndarray] = []
    n_con = 0

    def add(r: np.ndarray, c: np.ndarray, v: np.ndarray) -> None:
        rows.append(np.asarray(r))
        cols.append(np.asarray(c))
        vals.append(np.asarray(v, dtype=float))

    for r in range(n_res):  # capacity: use - credit - slack <= cap
        add(n_con + x_t, np.arange(n_x), prep.usage[x_i, r])
        add(n_con + y_t, off_y + np.arange(n_y), -prep.credit[y_i, r])
        add(n_con + np.arange(n_slots), off_s + r * n_slots + np.arange(n_slots), -np.ones(n_slots))
        rhs.append(prep.cap[r])
        n_con += n_slots
    if n_y:  # discharge only keeps limits and minimums: charging beyond them uses no credit
        dis_slots = np.unique(y_t)
        sel = np.isin(x_t, dis_slots)
        pos = np.searchsorted(dis_slots, x_t[sel])
        floor_use = np.einsum("ir,it->rt", prep.usage, np.minimum(bounds.lo, bounds.hi))
        for r in range(n_res):
            add(n_con + pos, np.flatnonzero(sel), prep.usage[x_i[sel], r])
            rhs.append(np.maximum(prep.cap[r, dis_slots], floor_use[r, dis_slots]))
            n_con += dis_slots.size
    if n_y and prep.phase_limited:  # net export within the phase limit too
        for r in range(1, n_res):
            add(n_con + y_t, off_y + np.arange(n_y), prep.usage[y_i, r])
            add(n_con + x_t, np.arange(n_x), -prep.usage[x_i, r])
            rhs.append(np.where(np.isfinite(prep.export_room[r]), prep.export_room[r], 1e9))
            n_con += n_slots
    # g + c - net <= 0
    add(n_con + x_i, np.arange(n_x), -e_in)
    add(n_con + y_i, off_y + np.arange(n_y), e_out)
    add(n_con + np.arange(n), off_g + np.arange(n), np.ones(n))
    add(n_con + np.arange(n), off_c + np.arange(n), np.ones(n))
    rhs.append(np.zeros(n))
    n_con += n
    if n_y:  # discharged energy <= budget above the minimum state of charge
        add(n_con + y_i, off_y + np.arange(n_y), e_out)
        rhs.append(prep.dis_kwh.copy())
        n_con += n
    if n_y:  # no car is charged beyond its need before it discharges (it would stop itself)
        # A car held at its minimum may overshoot by one slot at that minimum (its last one).
        slack = np.max(bounds.lo * prep.kw_per_a[:, None] * prep.eff[:, None] * h, axis=1)
        # One row per discharge cell (i, t): every charge / discharge cell of row i before t.
        hi_cells = np.flatnonzero(upper)
        for cells_i, cells_t, var, coef in ((x_i, x_t, np.arange(n_x), e_in),
                                             (c_i, c_t, off_y + np.arange(n_c), -e_out[:n_c]),
                                             (c_i[upper], c_t[upper], off_y + n_c + np.arange(hi_cells.size),
                                              -e_out[n_c:])):
            pair_q, pair_c = _earlier_cells(cells_i, cells_t, c_i, c_t, n_slots)
            add(n_con + pair_q, var[pair_c], coef[pair_c])
        rhs.append(prep.need[c_i] + slack[c_i])
        n_con += n_c
    g_rows = np.flatnonzero(guar > GUARANTEE_EPS_KWH)  # shortfall share: -g - G z <= -G
    add(n_con + np.arange(g_rows.size), off_g + g_rows, -np.ones(g_rows.size))
    add(n_con + np.arange(g_rows.size), np.full(g_rows.size, off_z), -guar[g_rows])
    rhs.append(-guar[g_rows])
    n_con += g_rows.size
    # Stage 2 row (filled after stage 1): -sum(g) <= -(stage-1 sum(g) - tol)
    add(np.full(n, n_con), off_g + np.arange(n), -np.ones(n))
    rhs.append(np.zeros(1))
    keep_row = n_con
    n_con += 1

    a_ub = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n_con, n_var)).tocsr()
    b_ub = np.concatenate(rhs)

    def run(cost: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_rows: int) -> np.ndarray:
        options = {}
        if time_limit_s is not None:
            left = time_limit_s - (time.perf_counter() - started)
            if left <= 0:
                raise LPError("time budget used up before the LP was solved")
            options["time_limit"] = left
        res = linprog(cost, A_ub=a_ub[:n_rows], b_ub=b_ub[:n_rows], bounds=np.column_stack([lo, hi]),
                      method="highs", options=options)
        if res.status != 0 or res.x is None:
            raise LPError(f"HiGHS: {res.message}")
        return np.asarray(res.x)

    # Stage 1: violations, then total shortfall, then the largest share.
    cost1 = np.zeros(n_var)
    cost1[off_g:off_c] = -1.0
    cost1[off_s:off_z] = VIOLATION_COST
    cost1[off_z] = SHARE_WEIGHT
    cost1[off_y:off_g] = 1e-9 * e_out  # keep discharge from growing without reason
    v1 = run(cost1, lb, ub, keep_row)
    got_g = float(v1[off_g:off_c].sum())

    # Stage 2: keep stage 1 (within tolerance), maximise net energy.
    lb2, ub2 = lb.copy(), ub.copy()
    slack1 = v1[off_s:off_z]
    ub2[off_s:off_z] = np.where(slack1 > 1e-7, slack1 * (1 + 1e-6) + STAGE_TOL_ABS, 1e-7)
    ub2[off_z] = min(1.0, v1[off_z] + 1e-5)
    b_ub[keep_row] = -(got_g - STAGE_TOL_ABS - STAGE_TOL_REL * abs(got_g))
    cost2 = np.zeros(n_var)
    cost2[off_g:off_s] = -1.0
    cost2[off_y:off_g] = DISCHARGE_COST * e_out
    cost2[off_y + n_c:off_g] *= 3.0
    order = np.ones(n_x)
    if prefer == "late":
        order = 1.0 + (n_slots - 1 - x_t) / max(n_slots, 1)
    elif prefer == "early":
        order = 1.0 + x_t / max(n_slots, 1)
    cost2[:n_x] = CHARGE_COST * e_in * order
    try:
        v2 = run(cost2, lb2, ub2, keep_row + 1)
    except LPError:
        # Stage 1's optimum is a feasible point of stage 2 up to solver tolerances; when those
        # make stage 2 look infeasible, stage 1's answer (guarantees right, energy not pushed)
        # is kept rather than nothing.
        if time_limit_s is not None and time.perf_counter() - started >= time_limit_s:
            raise
        v2 = v1

    charge = np.zeros((n, n_slots))
    charge[x_i, x_t] = v2[:n_x]
    discharge = np.zeros((n, n_slots))
    np.add.at(discharge, (y_i, y_t), v2[off_y:off_g])
    return LPSolution(charge=charge, discharge=discharge, guaranteed=v2[off_g:off_c].copy(),
                      comfort=v2[off_c:off_s].copy(), slack=v2[off_s:off_z].reshape(n_res, n_slots).copy(),
                      share=float(v2[off_z]), seconds=time.perf_counter() - started)
