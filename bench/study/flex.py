"""Deliverable flexibility of a connected fleet, with every driver's guarantee kept.

The question a UFTP aggregator answers before it offers flexibility (a FlexOffer for some ISPs):
how much less can this fleet draw in every ISP of a window than it would have (its prognosis),
with the transformer limit and the base load counted, and with every session still getting its
guaranteed energy? `deliverable_flex` answers it with the planner itself, so an offer it returns
is one the controller can actually keep:

1. the baseline (prognosis) is the planner's plan for the input as it is;
2. a reduction F is deliverable when the planner, given the limit "base load + baseline - F" in
   every ISP of the window (and the unchanged limit elsewhere, where the rebound must fit), keeps
   that limit, leaves no guarantee more unmet than the baseline did, and reports no slot it cannot
   keep;
3. the largest such F is found by bisection (the planner is called about a dozen times).

Pure: PlanInput in, FlexOffer out, no I/O; any `PlanInput -> Plan` policy can be passed. The
input knows only the cars connected now (a PlanInput has no future arrivals), so the offer is
firm for this fleet: cars that arrive later can only add to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from profiles.planner import Plan, PlanInput, plan

Policy = Callable[[PlanInput], Plan]
GUARANTEE_TOLERANCE_KWH = 0.01
HOLD_TOLERANCE_KW = 0.05


@dataclass(frozen=True)
class FlexOffer:
    """What the fleet can offer over `window` (slot indices [start, end) of the planning input)."""

    window: tuple[int, int]
    baseline_kw: tuple[float, ...]  # the fleet's load per ISP of the window without the offer
    flex_kw: float  # the largest reduction held in every ISP of the window at once
    offered_kw: tuple[float, ...]  # the fleet's load per ISP of the window when delivering flex_kw
    guarantees_kept: bool  # the baseline itself keeps every guarantee it can
    calls: int  # planner calls it took

    @property
    def isp_count(self) -> int:
        return self.window[1] - self.window[0]


def _ev_kw(p: Plan) -> np.ndarray:
    return np.asarray(p.total_kw, dtype=float)


def _guarantee_gap(p: Plan) -> dict[str, float]:
    return {sid: sp.guarantee_unmet_kwh for sid, sp in p.sessions.items()}


def discharge_capacity_kw(inp: PlanInput) -> np.ndarray:
    """Most the V2G cars could discharge per slot (power only; energy is the planner's business)."""
    starts = np.arange(len(inp.limit_kw)) * inp.slot_s
    cap = np.zeros(len(inp.limit_kw))
    for s in inp.sessions:
        if s.v2g and s.dischargeable_kwh > 0:
            cap += np.where(s.departure_s > starts, s.max_discharge_kw, 0.0)
    return cap


def deliverable_flex(inp: PlanInput, window: tuple[int, int], *, policy: Policy = plan,
                     resolution_kw: float = 0.5, max_calls: int = 24) -> FlexOffer:
    """The largest uniform reduction of the fleet's load in every slot of `window` that the
    planner keeps with every guarantee kept (see the module docstring)."""
    start, end = window
    n = len(inp.limit_kw)
    if not 0 <= start < end <= n:
        raise ValueError(f"window {window} must lie within the {n} slots of the input")
    baseline = policy(inp)
    calls = 1
    base_ev = _ev_kw(baseline)
    gap0 = _guarantee_gap(baseline)
    limit = np.asarray(inp.limit_kw, dtype=float)
    load = np.asarray(inp.base_load_kw, dtype=float)
    w = slice(start, end)
    hi = float(np.min(base_ev[w] + discharge_capacity_kw(inp)[w]))
    best, best_plan = 0.0, baseline

    def holds(f: float) -> Plan | None:
        target = base_ev[w] - f
        lim = limit.copy()
        lim[w] = np.minimum(limit[w], load[w] + target)
        p = policy(replace(inp, limit_kw=lim.tolist()))
        ev = _ev_kw(p)
        if np.any(ev[w] > target + HOLD_TOLERANCE_KW) or p.infeasible_slots:
            return None
        gap = _guarantee_gap(p)
        if any(gap[sid] > gap0.get(sid, 0.0) + GUARANTEE_TOLERANCE_KWH for sid in gap):
            return None
        return p

    lo_f, hi_f = 0.0, max(hi, 0.0)
    if hi_f > resolution_kw:
        p = holds(hi_f)
        calls += 1
        if p is not None:
            best, best_plan = hi_f, p
        else:
            while hi_f - lo_f > resolution_kw and calls < max_calls:
                mid = (lo_f + hi_f) / 2
                p = holds(mid)
                calls += 1
                if p is None:
                    hi_f = mid
                else:
                    lo_f, best, best_plan = mid, mid, p
    return FlexOffer(window=window, baseline_kw=tuple(base_ev[w].tolist()), flex_kw=best,
                     offered_kw=tuple(_ev_kw(best_plan)[w].tolist()),
                     guarantees_kept=all(v <= GUARANTEE_TOLERANCE_KWH for v in gap0.values()), calls=calls)


def flex_per_isp(inp: PlanInput, window: tuple[int, int], *, policy: Policy = plan,
                 resolution_kw: float = 0.5) -> tuple[float, ...]:
    """Each ISP's deliverable reduction on its own (a FlexOffer may differ per ISP; these are not
    simultaneous: taking one ISP's flexibility can shrink another's)."""
    return tuple(deliverable_flex(inp, (t, t + 1), policy=policy, resolution_kw=resolution_kw).flex_kw
                 for t in range(*window))
