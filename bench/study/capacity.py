"""Hosting capacity: the most charge points one transformer takes, found by a search that runs
until it fails.

"Hosted" (every point is judged on all of it, never on a mean): no 15-minute interval over the
transformer limit in the simulated weeks, and at least 99 % of the sessions fully served. The
search grows the fleet (x `growth`) from a start point until a point fails (or shrinks it until
one passes), then bisects between the last hosted and the first failing point down to
`resolution`. A search that reaches `n_max` without a failure says so: that is not a measured
capacity and is never reported as one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.daymodel import SERVED_MIN, grid_criteria
from bench.study.engine import Run, StopRule
from bench.study.scenario import Neighbourhood, run_variant


@dataclass(frozen=True)
class Point:
    n: int
    hosted: bool
    max_over_kw: float
    slots_over: int
    served_share: float
    guarantee_violations: int
    stopped: str  # "" when the whole period ran; else why it stopped early (overload / unserved)
    wall_s: float
    planner_calls: int


@dataclass
class Capacity:
    variant: str
    capacity: int | None  # the largest hosted point below the first failing one
    first_fail: int | None  # None: no failure up to n_max, so nothing was measured
    points: list[Point] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return self.first_fail is not None and self.capacity is not None

    def label(self) -> str:
        if self.first_fail is None:
            top = max((p.n for p in self.points), default=0)
            return f"not measured (hosted up to {top}, no failure)"
        if self.capacity is None:
            return f"< {self.first_fail}"
        return str(self.capacity)


def point_from_run(n: int, run: Run) -> Point:
    ok = all(c.ok for c in grid_criteria(run.max_over_kw, run.served_share)) and run.stopped_at is None
    return Point(n, ok, run.max_over_kw, run.slots_over, run.served_share, run.guarantee_violations,
                 run.stop_reason, run.wall_s, run.planner_calls)


def evaluate(hood: Neighbourhood, variant: str, n: int) -> Point:
    """Simulate `n` charge points for the whole period (stopping early once it cannot be hosted)."""
    return point_from_run(n, run_variant(hood, variant, n, stop=StopRule(served_min=SERVED_MIN)))


def search(variant: str, evaluate_n: Callable[[int], Point], start: int, *, growth: float = 1.3,
           resolution: float = 0.04, n_max: int = 4000, on_point: Callable[[Point], None] | None = None) -> Capacity:
    """Find the capacity (see the module docstring). `resolution` is relative: the search stops when
    the first failing point is within max(1, resolution x capacity) of the last hosted one."""
    cap = Capacity(variant, None, None)
    seen: dict[int, Point] = {}

    def at(n: int) -> Point:
        if n not in seen:
            seen[n] = evaluate_n(n)
            cap.points.append(seen[n])
            if on_point is not None:
                on_point(seen[n])
        return seen[n]

    n = max(1, start)
    ok, bad = None, None
    if at(n).hosted:
        ok = n
        while bad is None:
            if n >= n_max:
                cap.capacity = ok
                return cap
            n = min(n_max, max(n + 1, math.ceil(n * growth)))
            if at(n).hosted:
                ok = n
            else:
                bad = n
    else:
        bad = n
        while ok is None and n > 1:
            n = max(1, min(n - 1, math.floor(n / growth)))
            if at(n).hosted:
                ok = n
            else:
                bad = n
        if ok is None:
            cap.first_fail = bad
            return cap
    assert ok is not None and bad is not None
    while bad - ok > max(1, math.floor(resolution * ok)):
        mid = (ok + bad) // 2
        if at(mid).hosted:
            ok = mid
        else:
            bad = mid
    cap.capacity, cap.first_fail = ok, bad
    cap.points.sort(key=lambda p: p.n)
    return cap
