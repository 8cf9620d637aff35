"""Allocation primitives for one slot: currents in A, with per-amp resource use.

Each works on a set of sessions with `usage` (n, R) per amp and the capacity `residual` (R,)
left on every resource; none ever allocates more than a resource has.
"""

from __future__ import annotations

import math

import numpy as np

_TINY = 1e-12


def _max_level(offset: np.ndarray, slope: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               weight: np.ndarray, budget: float) -> float:
    """Largest L with sum(weight * clip(offset + slope*L, lo, hi)) <= budget (slope > 0).

    +inf when everything at `hi` fits; -inf when not even `lo` fits. The sum is piecewise linear
    in L, so it is evaluated at every breakpoint with sorted cumulative sums and interpolated.
    """
    if weight.size == 0 or float(np.dot(weight, hi)) <= budget + _TINY:
        return math.inf
    b_lo = (lo - offset) / slope
    b_hi = (hi - offset) / slope
    o_lo = np.argsort(b_lo, kind="stable")
    o_hi = np.argsort(b_hi, kind="stable")
    s_lo, s_hi = b_lo[o_lo], b_hi[o_hi]
    zero = np.zeros(1)
    c_lo_lo = np.concatenate([zero, np.cumsum((weight * lo)[o_lo])])
    c_lo_off = np.concatenate([zero, np.cumsum((weight * offset)[o_lo])])
    c_lo_sl = np.concatenate([zero, np.cumsum((weight * slope)[o_lo])])
    c_hi_hi = np.concatenate([zero, np.cumsum((weight * hi)[o_hi])])
    c_hi_off = np.concatenate([zero, np.cumsum((weight * offset)[o_hi])])
    c_hi_sl = np.concatenate([zero, np.cumsum((weight * slope)[o_hi])])
    points = np.union1d(s_lo, s_hi)
    k_lo = np.searchsorted(s_lo, points, side="right")  # sessions with b_lo <= L
    k_hi = np.searchsorted(s_hi, points, side="right")  # sessions with b_hi <= L (at hi)
    mid_slope = c_lo_sl[k_lo] - c_hi_sl[k_hi]
    values = (c_hi_hi[k_hi] + (c_lo_lo[-1] - c_lo_lo[k_lo])
              + (c_lo_off[k_lo] - c_hi_off[k_hi]) + points * mid_slope)
    j = int(np.searchsorted(values, budget + _TINY, side="right")) - 1
    if j < 0:
        return -math.inf
    if j >= points.size - 1:
        return math.inf
    level = points[j]
    if mid_slope[j] > _TINY:
        level = points[j] + (budget - values[j]) / mid_slope[j]
    return float(min(max(level, points[j]), points[j + 1]))


def water_fill(offset: np.ndarray, slope: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               usage: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Raise x_i = clip(offset_i + slope_i*L, lo_i, hi_i) with one common level L.

    `residual` is the capacity of each resource left *above* `lo`. When a resource (say phase
    L2) runs out, the sessions on it stop at their value and the others keep rising, so no
    capacity is left idle that some car could still use.
    """
    x = lo.astype(float).copy()
    hi = np.maximum(hi, lo)
    residual = residual.astype(float).copy()
    rising = hi > lo + _TINY
    for _ in range(usage.shape[1] + 1):
        idx = np.flatnonzero(rising)
        if idx.size == 0:
            break
        best, bind = math.inf, -1
        for r in range(usage.shape[1]):
            sel = idx[usage[idx, r] > 0]
            if sel.size == 0:
                continue
            w = usage[sel, r]
            budget = max(residual[r], 0.0) + float(np.dot(w, x[sel]))
            level = _max_level(offset[sel], slope[sel], x[sel], hi[sel], w, budget)
            if level < best:
                best, bind = level, r
        if best == math.inf:
            new = hi[idx]
        elif best == -math.inf:
            break
        else:
            new = np.clip(offset[idx] + slope[idx] * best, x[idx], hi[idx])
        residual -= usage[idx].T @ (new - x[idx])
        x[idx] = new
        if best == math.inf:
            break
        rising[idx[usage[idx, bind] > 0]] = False
        rising &= hi > x + _TINY
    return x


def priority_fill(request: np.ndarray, order: np.ndarray, usage: np.ndarray, residual: np.ndarray,
                  *, whole: bool = False, max_rounds: int = 24) -> np.ndarray:
    """Give each session its request in `order` while every resource has room.

    whole=False: the first session that does not fit gets the part that does (it is snapped
    later); sessions on an exhausted resource get nothing. whole=True: all or nothing per
    session (used to raise paused cars to their minimum), skipping ones that do not fit.
    """
    alloc = np.zeros(request.shape[0])
    residual = residual.astype(float).copy()
    cand = order[request[order] > _TINY]
    for _ in range(max_rounds):
        if cand.size == 0:
            break
        use = request[cand, None] * usage[cand]
        cum = np.cumsum(use, axis=0)
        fits = np.all(cum <= residual + 1e-9, axis=1)
        k = cand.size if fits.all() else int(np.argmin(fits))
        alloc[cand[:k]] = request[cand[:k]]
        if k == cand.size:
            break
        if k > 0:
            residual -= cum[k - 1]
        blocked = cand[k]
        rest = cand[k + 1:]
        if whole:
            rest = rest[np.all(use[k + 1:] <= residual + 1e-9, axis=1)]
        else:
            on = usage[blocked] > 0
            frac = float(np.clip(np.min(residual[on] / use[k, on]), 0.0, 1.0))
            alloc[blocked] = frac * request[blocked]
            residual -= alloc[blocked] * usage[blocked]
            exhausted = residual <= 1e-9
            rest = rest[~np.any(usage[rest][:, exhausted] > 0, axis=1)]
        cand = rest
    return alloc


def snap_gap(x: np.ndarray, imin: np.ndarray, hi: np.ndarray, order: np.ndarray,
             usage: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Make every value 0 or >= the car's minimum without breaking any resource.

    Gap values are paused; then they are raised to the minimum in `order` (highest priority
    first, so the one paused for lack of room is the one with most laxity); whatever is left
    goes to the running cars by water-filling (which never creates new gap values).
    `residual` is the capacity left above `x`.
    """
    gap = (x > _TINY) & (x < imin - 1e-9)
    if not gap.any():
        return x
    x = x.copy()
    residual = residual + usage[gap].T @ x[gap]
    x[gap] = 0.0
    request = np.where(gap, imin, 0.0)
    raised = priority_fill(request, order, usage, residual, whole=True)
    x += raised
    residual = residual - usage.T @ raised
    running = x >= imin - 1e-9
    zeros = np.zeros_like(x)
    top = np.where(running, np.maximum(hi, x), x)
    return water_fill(zeros, np.ones_like(x), x, top, usage, residual)
