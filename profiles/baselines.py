"""Comparison heuristics for benchmarks, same `PlanInput -> Plan` shape as `planner.plan`.

`uncontrolled` is what happens without smart charging: every car at its maximum from the
start until full, whatever the limit says. The others respect the limit (and per-phase limits)
and the 6 A rule but know nothing of guarantees, give cars that do not resume no special care
(the engine's rule still applies to them: a car of that kind given 0 A is off until departure,
since it would not charge again), and V2G is not used: they are the textbook schedulers the
planner is measured against.

- `equal_share`: one common current for every car wanting energy (water-filling).
- `fcfs`: first come, first served in input order, each car up to its maximum.
- `edf`: earliest departure first.
- `llf`: least laxity first (hours to departure minus hours needed at full current).
"""

from __future__ import annotations

import numpy as np

from profiles.arrays import Prepared, prepare
from profiles.engine import Allocator, SlotState, SlotView, run_slots
from profiles.fill import priority_fill, snap_gap, water_fill
from profiles.model import Plan, PlanInput


def _uncontrolled_allocator(prep: Prepared, state: SlotState, v: SlotView) -> np.ndarray:
    return np.maximum(v.hi, prep.imin[v.idx])


def uncontrolled(inp: PlanInput) -> Plan:
    return run_slots(prepare(inp), _uncontrolled_allocator, use_v2g=False, respect_limit=False,
                     method="uncontrolled")


def _equal_share_allocator(prep: Prepared, state: SlotState, v: SlotView) -> np.ndarray:
    usage = prep.usage[v.idx]
    zeros = np.zeros(v.idx.size)
    x = water_fill(zeros, np.ones_like(zeros), zeros, v.hi, usage, v.residual)
    residual = v.residual - usage.T @ x
    return snap_gap(x, prep.imin[v.idx], v.hi, np.arange(v.idx.size), usage, residual)


def equal_share(inp: PlanInput) -> Plan:
    return run_slots(prepare(inp), _equal_share_allocator, use_v2g=False, method="equal_share")


def _by_priority(key: str) -> Allocator:
    def allocate(prep: Prepared, state: SlotState, v: SlotView) -> np.ndarray:
        if key == "input":
            order = np.arange(v.idx.size)
        elif key == "departure":
            order = np.argsort(prep.hours_left[v.idx, v.t], kind="stable")
        else:
            order = np.argsort(v.laxity_h, kind="stable")
        usage = prep.usage[v.idx]
        x = priority_fill(v.hi, order, usage, v.residual)
        residual = v.residual - usage.T @ x
        return snap_gap(x, prep.imin[v.idx], v.hi, order, usage, residual)

    return allocate


def fcfs(inp: PlanInput) -> Plan:
    return run_slots(prepare(inp), _by_priority("input"), use_v2g=False, method="fcfs")


def edf(inp: PlanInput) -> Plan:
    return run_slots(prepare(inp), _by_priority("departure"), use_v2g=False, method="edf")


def llf(inp: PlanInput) -> Plan:
    return run_slots(prepare(inp), _by_priority("laxity"), use_v2g=False, method="llf")


BASELINES = {"uncontrolled": uncontrolled, "equal_share": equal_share, "fcfs": fcfs, "edf": edf, "llf": llf}
