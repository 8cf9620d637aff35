"""Properties of the pure decisions around the planner (profiles/): hysteresis and its budget,
sticky pauses, urgency, and fitting nested groups under their ancestors."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiles.hysteresis import Hysteresis, Setpoints, keep_within_budget
from profiles.parents import PlannedGroup, fit_parents
from profiles.pauses import interchangeable, keep_pauses
from profiles.planner import Plan, PlanInput, SessionNeed, SessionPlan, immediate_cut, plan
from profiles.units import VOLTAGE_V
from profiles.urgency import urgent

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = datetime(2025, 1, 15, 16, 0, tzinfo=timezone.utc)
amps = st.sampled_from([0.0, 6.0, 6.5, 8.0, 10.0, 16.0, 16.4, 20.0, 32.0])


# Hysteresis -------------------------------------------------------------------------------------
def schedule(values: list[float], offset_s: float = 0.0, slot_s: float = 900.0) -> Setpoints:
    return Setpoints("CS-1", 1, "tx", T0 + timedelta(seconds=offset_s), slot_s, tuple(values), 3)


@PROPS
@given(st.lists(amps, min_size=1, max_size=12), st.floats(0.0, 5.0))
def test_the_same_schedule_is_never_sent_again(values: list[float], hysteresis_a: float) -> None:
    sp = schedule(values)
    assert Hysteresis(current_a=hysteresis_a).unchanged(sp, sp, T0) == 0.0


@PROPS
@given(st.lists(amps, min_size=2, max_size=12), st.lists(amps, min_size=2, max_size=12),
       st.floats(0.0, 3.0), st.floats(0.0, 1800.0))
def test_a_kept_schedule_never_hides_a_pause_a_resume_or_a_big_step(old: list[float], new: list[float],
                                                                   hysteresis_a: float, now_s: float) -> None:
    n = min(len(old), len(new))
    old, new = old[:n], new[:n]
    now = T0 + timedelta(seconds=now_s)
    kept = Hysteresis(current_a=hysteresis_a, refresh_s=0.0).unchanged(schedule(old), schedule(new), now)
    if kept is None:
        return
    first = int((now_s + 1e-6) // 900)  # as Hysteresis reads the slot: within 1 us of a boundary is past it
    for a, b in zip(old[first:], new[first:]):
        assert (a == 0) == (b == 0) and abs(a - b) < hysteresis_a or (a == b)
    assert kept == (old[first] - new[first]) * 3 * VOLTAGE_V / 1000.0


@PROPS
@given(st.lists(st.lists(st.floats(-5.0, 10.0), min_size=1, max_size=6), max_size=15),
       st.lists(st.floats(0.0, 20.0), min_size=1, max_size=6))
def test_kept_schedules_fit_the_headroom_in_every_slot(excesses: list[list[float]], headroom: list[float]) -> None:
    items = [(tuple(e), i) for i, e in enumerate(excesses)]
    kept = keep_within_budget(items, headroom)
    assert {i for _, i in kept} <= set(range(len(items)))
    slots = max((len(e) for e in excesses), default=0)
    for slot in range(slots):
        total = sum(e[slot] for e, _ in kept if slot < len(e))
        budget = headroom[slot] if slot < len(headroom) else 0.0
        assert total <= budget + 1e-6


def test_nothing_over_budget_is_sent_when_everything_fits() -> None:
    items = [((1.0, 2.0), "a"), ((0.5, -1.0), "b")]
    assert keep_within_budget(items, 10.0) == items
    assert [name for _, name in keep_within_budget(items, (1.0, 1.0))] == ["b"]  # the largest excess goes


# Urgency and sticky pauses -----------------------------------------------------------------------
needs = st.builds(
    SessionNeed, session_id=st.just("x"), phases=st.sampled_from([1, 3]), min_current_a=st.just(6.0),
    max_current_a=st.sampled_from([16.0, 32.0]), energy_needed_kwh=st.floats(0.0, 60.0),
    guaranteed_kwh=st.floats(0.0, 10.0), departure_s=st.floats(60.0, 12 * 3600.0))


@PROPS
@given(needs, st.floats(0.0, 30.0), st.floats(0.05, 1.0))
def test_needing_more_energy_never_makes_a_car_less_urgent(need: SessionNeed, more_kwh: float, slot_h: float) -> None:
    hungrier = replace(need, energy_needed_kwh=need.energy_needed_kwh + more_kwh)
    assert not urgent(need, slot_h) or urgent(hungrier, slot_h)
    sooner = replace(need, departure_s=max(1.0, need.departure_s / 2))
    assert not urgent(need, slot_h) or urgent(sooner, slot_h)


def test_a_car_with_no_slack_left_is_urgent() -> None:
    rate_kw = 16.0 * 3 * VOLTAGE_V / 1000.0
    need = SessionNeed("x", max_current_a=16.0, energy_needed_kwh=rate_kw * 2.0, departure_s=2.0 * 3600 + 60)
    assert urgent(need, slot_h=0.25) and not urgent(replace(need, departure_s=4 * 3600.0), slot_h=0.25)


def _row(session_id: str, values: tuple[float, ...]) -> SessionPlan:
    kw = tuple(a * 3 * VOLTAGE_V / 1000.0 for a in values)
    return SessionPlan(session_id, values, kw, 0.0, 0.0, 0.0, None)


@PROPS
@given(st.lists(st.tuples(st.sampled_from([0.0, 6.0, 10.0, 16.0]), st.sampled_from([0.0, 6.0, 10.0, 16.0]),
                          st.sampled_from([0.0, 8.0, 16.0]), st.floats(0.0, 40.0)), min_size=1, max_size=8))
def test_undoing_a_pause_swap_keeps_every_slots_load(cars: list[tuple[float, float, float, float]]) -> None:
    sessions = [SessionNeed(f"CS-{i}#1", energy_needed_kwh=kwh, departure_s=10 * 3600.0)
                for i, (_, _, _, kwh) in enumerate(cars)]
    rows = {s.session_id: _row(s.session_id, (first, second)) for s, (first, second, _, _) in zip(sessions, cars)}
    inp = PlanInput(sessions=sessions, limit_kw=[500.0, 500.0], base_load_kw=[0.0, 0.0])
    original = Plan(sessions=rows, total_kw=(0.0, 0.0), headroom_kw=(0.0, 0.0), infeasible_slots=())
    in_force = {s.session_id: was for s, (_, _, was, _) in zip(sessions, cars)}
    kept_plan, kept = keep_pauses(inp, original, in_force)
    for slot in (0, 1):
        assert sum(r.current_a[slot] for r in kept_plan.sessions.values()) == \
            sum(r.current_a[slot] for r in rows.values())
    assert sorted(kept_plan.sessions) == sorted(rows)
    for paused, instead_of in kept:
        assert in_force[paused] == 0 and kept_plan.sessions[paused].current_a[0] == 0  # stays paused
        assert in_force[instead_of] > 0 and kept_plan.sessions[instead_of].current_a[0] > 0  # keeps charging
    def changes(rows: dict[str, SessionPlan]) -> int:
        """Cars that would pause or resume now."""
        return sum(((in_force[sid] or 0) > 0) != (r.current_a[0] > 0) for sid, r in rows.items())
    assert changes(kept_plan.sessions) == changes(rows) - 2 * len(kept)


def test_only_cars_with_the_same_phases_and_range_trade_places() -> None:
    a, b = SessionNeed("a"), SessionNeed("b")
    assert interchangeable(a, b, (0.0, 16.0), (16.0, 0.0))
    assert not interchangeable(a, replace(b, phases=1), (0.0,), (16.0,))
    assert not interchangeable(a, replace(b, max_current_a=10.0), (16.0,), (0.0,))  # b cannot take a's 16 A


def test_an_urgent_paused_car_is_resumed_anyway() -> None:
    charging = SessionNeed("CS-1#1", energy_needed_kwh=20.0, departure_s=10 * 3600.0)
    urgent_car = SessionNeed("CS-2#1", energy_needed_kwh=40.0, departure_s=3600.0)
    rows = {"CS-1#1": _row("CS-1#1", (0.0,)), "CS-2#1": _row("CS-2#1", (16.0,))}
    inp = PlanInput(sessions=[charging, urgent_car], limit_kw=[100.0], base_load_kw=[0.0])
    result, kept = keep_pauses(inp, Plan(rows, (0.0,), (0.0,), ()), {"CS-1#1": 16.0, "CS-2#1": 0.0})
    assert kept == [] and result.sessions == rows


# Nested groups -----------------------------------------------------------------------------------
@PROPS
@given(st.lists(st.integers(1, 6), min_size=2, max_size=3), st.floats(20.0, 120.0), st.floats(0.0, 10.0),
       st.integers(1, 4), st.booleans())
def test_a_subtree_is_fitted_under_its_ancestors_limit(cars: list[int], ancestor_kw: float, base_kw: float,
                                                      n_slots: int, cut: bool) -> None:
    solve = immediate_cut if cut else plan
    groups = {}
    for g, count in enumerate(cars):
        sessions = [SessionNeed(f"G{g}-{i}#1", energy_needed_kwh=30.0, departure_s=8 * 3600.0)
                    for i in range(count)]
        limit = ancestor_kw if g == 0 else 400.0
        inp = PlanInput(sessions=sessions, limit_kw=[limit] * n_slots, base_load_kw=[base_kw] * n_slots)
        groups[f"G{g}"] = PlannedGroup(inp, solve(inp))
    descendants = {"G0": [f"G{g}" for g in range(1, len(cars))]}
    fitted = fit_parents(groups, list(groups), descendants, solve)
    assert set(fitted) == set(groups)
    for slot in range(n_slots):
        load = sum(g.plan.total_kw[slot] + g.inp.base_load_kw[slot] for g in fitted.values())
        assert load <= ancestor_kw + 1e-6 or base_kw * len(cars) > ancestor_kw
    for tid, group in fitted.items():
        assert all(a <= b + 1e-9 for a, b in zip(group.inp.limit_kw, groups[tid].inp.limit_kw))


def test_groups_that_fit_are_left_alone() -> None:
    inp = PlanInput(sessions=[SessionNeed("a#1", energy_needed_kwh=5.0)], limit_kw=[100.0], base_load_kw=[0.0])
    groups = {"T": PlannedGroup(inp, plan(inp)), "S": PlannedGroup(inp, plan(inp))}
    assert fit_parents(groups, ["T", "S"], {"T": ["S"]}, plan) == groups


def test_a_schedule_cut_short_is_not_sent_again_just_because_the_plan_moved_on() -> None:
    """A station taking one period gets a schedule that ends at the plan's first step; that step's
    instant drifts with the plan's start, so the same schedule made a few seconds later reaches a few
    seconds further. That is no reason to send it again; running out soon, or a slot more, is."""
    h = Hysteresis(current_a=1.0, refresh_s=4 * 3600.0, near_s=120.0)
    installed = schedule([16.0])  # ends 900 s after T0
    for later_s in (1.0, 30.0, 500.0):
        replanned = schedule([16.0], offset_s=later_s)  # the same, made later: ends later by as much
        assert h.unchanged(installed, replanned, T0 + timedelta(seconds=later_s)) == 0.0, later_s
    assert h.unchanged(installed, schedule([16.0], offset_s=800.0), T0 + timedelta(seconds=800)) is None  # ends soon
    longer = schedule([16.0, 16.0], offset_s=10.0)  # the new plan reaches a whole slot further
    assert h.unchanged(installed, longer, T0 + timedelta(seconds=10)) is None


@PROPS
@given(st.lists(amps, min_size=1, max_size=12), st.floats(0.0, 899.0), st.floats(0.0, 3.0))
def test_a_replan_of_the_same_schedule_is_kept_until_it_runs_out(values: list[float], later_s: float,
                                                                 hysteresis_a: float) -> None:
    h = Hysteresis(current_a=hysteresis_a, refresh_s=4 * 3600.0, near_s=120.0)
    installed, replanned = schedule(values), schedule(values, offset_s=later_s)
    kept = h.unchanged(installed, replanned, T0 + timedelta(seconds=later_s))
    ends_soon = 900.0 * len(values) - later_s < 120.0
    if not ends_soon and all(v == values[0] for v in values):
        assert kept == 0.0  # nothing changes at any instant: never sent again


def test_same_limits_tells_an_identical_push_from_a_change_or_a_longer_schedule() -> None:
    from profiles.hysteresis import same_limits

    installed = schedule([16.0, 16.0, 8.0])
    assert same_limits(installed, schedule([16.0, 16.0, 8.0]), T0)
    assert same_limits(installed, schedule([16.0, 16.0, 8.0], offset_s=10.0), T0 + timedelta(seconds=10))  # drift
    assert not same_limits(installed, schedule([16.0, 8.0, 8.0]), T0)
    assert not same_limits(installed, schedule([16.0, 16.0, 8.0, 8.0]), T0)  # reaches further: a refresh
