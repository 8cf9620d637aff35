"""The like-for-like bounds of bench/: the most energy any plan keeping the resume rule can deliver
(bench/planning_bound.py for one horizon, bench/daymodel.py for a day with arrivals)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench import daymodel as dm
from bench import planning_cases as pc
from bench.planning_bound import energy_bound
from profiles.model import KNOWN
from profiles.optimum import optimum
from profiles.planner import PlanInput, SessionNeed, plan
from profiles.units import VOLTAGE_V


def test_bound_below_the_relaxed_lp_where_only_pausing_and_resuming_helps() -> None:
    """Slot 1 has room for one minimum only: the relaxed LP pauses one car for a slot and resumes
    it; under the resume rule one of the two is off from slot 1, so 3 slots of its minimum are lost
    at best. The bound is exactly that."""
    cars = [SessionNeed(f"c{k}", energy_needed_kwh=30, departure_s=4 * 900, no_resume=KNOWN, max_current_a=6.0)
            for k in range(2)]
    inp = PlanInput(cars, [8.28, 4.14, 8.28, 8.28], [0.0] * 4)
    relaxed = optimum(inp).delivered_kwh
    b = energy_bound(inp)
    assert relaxed == pytest.approx(4.14 * 0.25 * 7)
    assert b.upper == pytest.approx(4.14 * 0.25 * 5) and b.proven_optimal
    assert b.guarantee_first <= b.upper + 1e-9
    assert pc.score(plan(inp), inp).delivered_kwh <= b.upper + 1e-6


@pytest.mark.parametrize("family", pc.FAMILIES)
def test_no_plan_of_ours_beats_the_bound(family: str) -> None:
    rng = np.random.default_rng(5)
    for _ in range(2):
        inp = pc.instance(rng, family, 30)
        b = energy_bound(inp, time_limit_s=10)
        assert b.guarantee_first <= b.upper + 1e-6 <= b.relaxation + 2e-6
        for p in (plan(inp), plan(inp, method="heuristic")):
            assert pc.score(p, inp).delivered_kwh <= b.upper + 1e-6


def test_day_bound_counts_the_resume_rule_the_optimum_relaxes() -> None:
    """Two cars that do not resume, a limit with room for one minimum in slots 2-3: the whole-day
    optimum pauses one and resumes it; no plan keeping the rule gets more than the bound."""
    kw = 6.0 * VOLTAGE_V / 1000.0
    cars = [dm.Sess(f"c{k}", arrival=0, departure=6, need_kwh=100.0, guaranteed_kwh=0.0, phases=1, max_a=6.0,
                    can_pause=False) for k in range(2)]
    day = dm.make_day(cars, 0.0, 0.0)
    limit = np.full(day.n_slots, 2 * kw)
    limit[2:4] = kw
    day = dataclasses.replace(day, limit_kw=limit, base_kw=np.zeros(day.n_slots))
    relaxed = dm.optimum_day(day).delivered_kwh
    upper, best, proven = dm.resume_rule_bound_day(day, time_limit_s=10)
    assert relaxed == pytest.approx(kw * dm.SLOT_H * 10)
    assert upper == pytest.approx(kw * dm.SLOT_H * 8) and best == pytest.approx(upper) and proven
    assert dm.simulate(day, plan, "planner").delivered_kwh <= upper + 1e-6
