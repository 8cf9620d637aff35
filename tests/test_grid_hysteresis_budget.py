"""Hysteresis never hides a limit: a profile on the wire is not judged against, every slot of the
horizon is budgeted against the group's headroom, and drifted slot boundaries are compared the same
way the hysteresis compares them."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from csms.grid.effects.pusher import Pusher
from csms.grid.model.sessions import StationCaps
from profiles.hysteresis import Hysteresis, PlanPace, Setpoints, excess_by_piece, held_peak_kw, paced

NOW = datetime(2025, 1, 1, 12, tzinfo=timezone.utc)
CAPS = StationCaps(periods_per_schedule=4)


def _plan(amps: float, station: str = "S") -> Setpoints:
    return Setpoints(station, 1, "tx", NOW, 900.0, (amps,) * 4, 3)


def _first_limit(profile: dict[str, Any]) -> float:
    return float(profile["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"])


# 1. A profile on the wire hides nothing from the hysteresis ------------------------------------
async def test_cut_within_hysteresis_of_installed_is_sent_while_a_higher_profile_is_in_flight() -> None:
    gate = asyncio.Event()
    wire: list[float] = []

    async def send(station_id: str, evse_id: int, profile: dict[str, Any]) -> dict[str, Any]:
        wire.append(_first_limit(profile))
        if _first_limit(profile) == 16.0:
            await gate.wait()
        return {"status": "Accepted"}

    pusher = Pusher(send, Hysteresis(min_interval_s=0), clock=lambda: NOW)
    todo, _ = pusher.due([(_plan(10.0), CAPS, "t")])
    await pusher.push(todo)
    todo, _ = pusher.due([(_plan(16.0), CAPS, "t")])
    slow = asyncio.create_task(pusher.push(todo))
    await asyncio.sleep(0)
    assert {k: len(v) for k, v in pusher.in_flight.items()} == {("S", 1): 1}

    cut, skipped = pusher.due([(_plan(10.5), CAPS, "t")], {"t": 0.0})
    assert [shaped.carried.current_a[0] for shaped in cut] == [10.5]
    assert skipped == []

    follow = asyncio.create_task(pusher.push(cut))
    gate.set()
    await asyncio.wait_for(asyncio.gather(slow, follow), 5)
    assert wire == [10.0, 16.0, 10.5]
    assert pusher.installed[("S", 1)].current_a[0] == 10.5
    assert pusher.in_flight == {}


async def test_a_plan_equal_to_the_profile_on_the_wire_is_not_queued_behind_it() -> None:
    """Plans overlap a slow wave: judged against what is on the wire, not against what was installed
    before it, a station that takes its time is not sent the same plan once per re-plan."""
    gate = asyncio.Event()

    async def send(station_id: str, evse_id: int, profile: dict[str, Any]) -> dict[str, Any]:
        await gate.wait()
        return {"status": "Accepted"}

    pusher = Pusher(send, Hysteresis(min_interval_s=0), clock=lambda: NOW)
    todo, _ = pusher.due([(_plan(16.0), CAPS, "t")])
    slow = asyncio.create_task(pusher.push(todo))
    await asyncio.sleep(0)
    again, skipped = pusher.due([(_plan(16.0), CAPS, "t")], {"t": 0.0})
    assert again == [] and [(r.reason, r.limit_a) for r in skipped] == [("within hysteresis", 16.0)]
    lower, _ = pusher.due([(_plan(10.0), CAPS, "t")], {"t": 0.0})
    assert [shaped.carried.current_a[0] for shaped in lower] == [10.0]
    gate.set()
    await asyncio.wait_for(slow, 5)
    assert pusher.in_flight == {}


def _answering(status: str) -> Any:
    """A station link that answers every SetChargingProfile with ``status`` at once."""
    async def send(station_id: str, evse_id: int, profile: dict[str, Any]) -> dict[str, Any]:
        return {"status": status}
    return send


async def test_a_refused_profile_on_the_wire_vouches_for_nothing_once_answered() -> None:
    pusher = Pusher(_answering("Rejected"), Hysteresis(min_interval_s=0), clock=lambda: NOW)
    todo, _ = pusher.due([(_plan(16.0), CAPS, "t")])
    await pusher.push(todo)
    again, _ = pusher.due([(_plan(16.0), CAPS, "t")], {"t": 0.0})
    assert [shaped.carried.current_a[0] for shaped in again] == [16.0]


async def test_hysteresis_applies_again_once_the_answer_landed() -> None:
    pusher = Pusher(_answering("Accepted"), Hysteresis(min_interval_s=0), clock=lambda: NOW)
    todo, _ = pusher.due([(_plan(10.0), CAPS, "t")])
    await pusher.push(todo)
    assert pusher.in_flight == {}
    again, skipped = pusher.due([(_plan(10.5), CAPS, "t")], {"t": 10.0})
    assert again == [] and [r.reason for r in skipped] == ["within hysteresis"]


async def test_cancelled_push_releases_profiles_that_never_went_out() -> None:
    started = asyncio.Event()

    async def send(station_id: str, evse_id: int, profile: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await asyncio.Event().wait()  # never answers
        return {"status": "Accepted"}

    pusher = Pusher(send, Hysteresis(min_interval_s=0), clock=lambda: NOW)
    first, _ = pusher.due([(_plan(10.0, "A"), CAPS, "t")])
    second, _ = pusher.due([(_plan(12.0, "A"), CAPS, "t")])
    task = asyncio.create_task(pusher.push(first + second))
    await asyncio.wait_for(started.wait(), 5)
    assert {k: len(v) for k, v in pusher.in_flight.items()} == {("A", 1): 2}
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert pusher.in_flight == {}


# 4. Hysteresis budgets every slot, not just now -------------------------------------------------
def _sessions(count: int, old: tuple[float, ...], new: tuple[float, ...]) -> tuple[Pusher, list[Any]]:
    pusher = Pusher(_never_called, Hysteresis(min_interval_s=0, near_s=120), clock=lambda: NOW)
    plans = []
    for i in range(count):
        pusher.installed[(f"S{i}", 1)] = Setpoints(f"S{i}", 1, "tx", NOW, 900.0, old, 3)
        plans.append((Setpoints(f"S{i}", 1, "tx", NOW, 900.0, new, 3), CAPS, "t"))
    return pusher, plans


async def _never_called(station_id: str, evse_id: int, profile: dict[str, Any]) -> dict[str, Any]:
    raise AssertionError("due() must not send")


KW_PER_SESSION = 0.9 * 3 * 230 / 1000  # 16 A installed, 15.1 A planned, three phases


def test_a_stricter_limit_in_a_later_slot_is_not_hidden_by_hysteresis() -> None:
    pusher, plans = _sessions(100, (16.0,) * 8, (16.0,) * 2 + (15.1,) * 6)
    todo, skipped = pusher.due(plans, {"t": 0.0})
    assert (len(todo), len(skipped)) == (100, 0)


def test_later_slots_keep_as_many_sessions_as_their_headroom_allows() -> None:
    pusher, plans = _sessions(100, (16.0,) * 8, (16.0,) * 2 + (15.1,) * 6)
    headroom = (500.0, 500.0) + (10 * KW_PER_SESSION + 0.01,) * 6  # room for ten sessions' excess from slot 2
    todo, skipped = pusher.due(plans, {"t": headroom})
    assert (len(todo), len(skipped)) == (90, 10)


def test_excess_in_one_slot_is_offset_by_nothing_from_another() -> None:
    # Keeping the installed schedule draws 0.9 A less in slot 1 but 0.9 A more in slot 3: still too much then.
    pusher, plans = _sessions(1, (15.1, 15.1, 16.0, 16.0), (15.1, 16.0, 16.0, 15.1))
    todo, _ = pusher.due(plans, {"t": (0.0, 0.0, 0.0, 0.0)})
    assert len(todo) == 1
    assert pusher.hysteresis.excess_by_slot(pusher.installed[("S0", 1)], plans[0][0], NOW) == pytest.approx(
        (0.0, -KW_PER_SESSION, 0.0, KW_PER_SESSION))


def test_excess_takes_the_highest_installed_value_a_drifted_slot_overlaps() -> None:
    installed = Setpoints("S", 1, "tx", NOW, 900.0, (10.0, 16.0, 10.0), 3)
    replanned = Setpoints("S", 1, "tx", NOW + timedelta(seconds=30), 900.0, (10.0, 10.0, 10.0), 3)
    excess = Hysteresis().excess_by_slot(installed, replanned, NOW + timedelta(seconds=30))
    assert excess == pytest.approx((6 * 3 * 230 / 1000, 6 * 3 * 230 / 1000, 0.0))


def test_a_drifted_step_beyond_near_s_is_judged_at_the_slot_middle_as_the_hysteresis_does() -> None:
    installed = Setpoints("S", 1, "tx", NOW, 900.0, (10.0, 16.0, 16.0), 3)
    replanned = Setpoints("S", 1, "tx", NOW + timedelta(seconds=30), 900.0, (10.0, 16.0, 16.0), 3)
    at = NOW + timedelta(seconds=30)
    # The installed step to 16 A lands 30 s before the new one, 870 s from now: far, compared later.
    assert Hysteresis(near_s=120).excess_by_slot(installed, replanned, at) == (0.0, 0.0, 0.0)
    # Within near_s it counts in full.
    assert Hysteresis(near_s=None).excess_by_slot(installed, replanned, at) == pytest.approx(
        (6 * 3 * 230 / 1000, 0.0, 0.0))


def test_a_step_drifted_further_than_near_s_into_a_far_slot_counts_in_full() -> None:
    # Installed 16 A over [900, 1800) s; the new plan, made 600 s later, has slot 1 over [1500, 2400) s at 10 A:
    # the installed 16 A runs for the first 300 s of that slot although its middle sees 10 A.
    installed = Setpoints("S", 1, "tx", NOW, 900.0, (10.0, 16.0, 10.0, 10.0), 3)
    replanned = Setpoints("S", 1, "tx", NOW + timedelta(seconds=600), 900.0, (10.0, 10.0, 10.0), 3)
    excess = Hysteresis(near_s=120).excess_by_slot(installed, replanned, NOW + timedelta(seconds=600))
    assert excess[1] == pytest.approx(6 * 3 * 230 / 1000)


# 5. Far differences are deferred, never at the limit's expense -----------------------------------
def test_a_pause_planned_beyond_defer_s_is_not_sent_until_it_is_in_force() -> None:
    installed = Setpoints("S", 1, "tx", NOW, 900.0, (16.0,) * 4, 3)
    paused_later = Setpoints("S", 1, "tx", NOW, 900.0, (16.0, 16.0, 16.0, 0.0), 3)  # pause 2,700 s ahead
    h = Hysteresis(refresh_s=600.0, near_s=120.0, defer_s=900.0)
    assert h.unchanged(installed, paused_later, NOW) == 0.0
    assert Hysteresis(refresh_s=600.0, near_s=120.0).unchanged(installed, paused_later, NOW) is None
    later = NOW + timedelta(seconds=1900)  # re-planned: the pause is in the next slot, still not in force
    assert h.unchanged(installed, Setpoints("S", 1, "tx", later, 900.0, (16.0, 0.0), 3), later) == 0.0
    due = NOW + timedelta(seconds=2700)  # the pause is in force from now: sent
    assert h.unchanged(installed, Setpoints("S", 1, "tx", due, 900.0, (0.0, 0.0), 3), due) is None


def test_a_deferred_difference_is_kept_only_while_the_far_slot_has_headroom_for_it() -> None:
    def sessions(headroom: tuple[float, ...]) -> tuple[int, int]:
        pusher = Pusher(_never_called, Hysteresis(min_interval_s=0, refresh_s=600.0, near_s=120.0, defer_s=900.0),
                        clock=lambda: NOW)
        plans = []
        for i in range(10):
            pusher.installed[(f"S{i}", 1)] = Setpoints(f"S{i}", 1, "tx", NOW, 900.0, (16.0,) * 4, 3)
            plans.append((Setpoints(f"S{i}", 1, "tx", NOW, 900.0, (16.0, 16.0, 16.0, 0.0), 3), CAPS, "t"))
        todo, skipped = pusher.due(plans, {"t": headroom})
        return len(todo), len(skipped)

    per_session = 16.0 * 3 * 230 / 1000
    assert sessions((0.0, 0.0, 0.0, 4 * per_session + 0.01)) == (6, 4)  # room for four to keep charging then
    assert sessions((0.0, 0.0, 0.0, 0.0)) == (10, 0)  # no room: every pause goes out now


# 6. The budget is judged per instant: a rotation the new plan keeps is kept -----------------------
KW_PER_TENTH = 0.4 * 3 * 230 / 1000  # 0.4 A over three phases


def _rotation(new_a: tuple[float, ...], new_b: tuple[float, ...], headroom: tuple[float, ...],
              installed_b: tuple[float, ...] = (15.2, 16.0, 16.0)) -> list[str]:
    """A and B were planned at NOW to swap 0.8 A at NOW + 900 s (unless ``installed_b`` says
    otherwise); re-planned 300 s later, each plan slot is 300 s off the installed step. The sent."""
    later = NOW + timedelta(seconds=300)
    pusher = Pusher(_never_called, Hysteresis(min_interval_s=0, near_s=120, defer_s=900), clock=lambda: later)
    pusher.installed[("A", 1)] = Setpoints("A", 1, "tx", NOW, 900.0, (16.0, 15.2, 15.2), 3)
    pusher.installed[("B", 1)] = Setpoints("B", 1, "tx", NOW, 900.0, installed_b, 3)
    plans = [(Setpoints(s, 1, "tx", later, 900.0, a, 3), CAPS, "t") for s, a in (("A", new_a), ("B", new_b))]
    todo, _ = pusher.due(plans, {"t": headroom})
    return sorted(p.carried.station_id for p in todo)


def test_two_sessions_whose_installed_step_swaps_current_keep_their_schedules_at_full_load() -> None:
    # Per slot each counts at its higher side in the slot that holds the step (0.4 A each); per instant
    # what one draws beyond the new plan the other draws less, so together they fit a full limit.
    assert _rotation((15.6, 15.2), (15.6, 16.0), (0.0, 0.0)) == []


def test_an_excess_at_one_instant_is_not_offset_by_a_saving_at_another() -> None:
    # Both draw 0.4 A more than planned before the installed step and 0.4 A less after it: over before.
    same = (16.0, 15.2, 15.2)
    assert _rotation((15.6, 15.2), (15.6, 15.2), (0.0, 0.0), same) == ["A", "B"]
    assert len(_rotation((15.6, 15.2), (15.6, 15.2), (KW_PER_TENTH + 0.01, 0.0), same)) == 1
    assert _rotation((15.6, 15.2), (15.6, 15.2), (2 * KW_PER_TENTH + 0.01, 0.0), same) == []


def test_excess_by_piece_is_exact_near_and_snaps_small_drifts_far() -> None:
    installed = Setpoints("S", 1, "tx", NOW, 900.0, (10.0, 16.0, 16.0), 3)
    replanned = Setpoints("S", 1, "tx", NOW + timedelta(seconds=30), 900.0, (10.0, 16.0), 3)
    at = NOW + timedelta(seconds=30)
    pieces = excess_by_piece([(installed, replanned)], at, (1.0, 2.0), near_s=120)
    assert pieces is not None
    excess, budget = pieces
    # The installed step to 16 A lands 30 s before the new one, 870 s ahead: far, counts as on the boundary.
    # Pieces: [0, 120) exact, then [120, 870), [870, 900), [900, 1770), [1770, 1800) s ahead.
    assert excess == [pytest.approx((0.0,) * 5)]
    assert budget == [1.0, 1.0, 1.0, 2.0, 2.0]
    pieces = excess_by_piece([(installed, replanned)], at, 0.0, near_s=None)  # exact everywhere
    assert pieces is not None
    excess, _ = pieces
    assert excess == [pytest.approx((0.0, 6 * 3 * 230 / 1000, 0.0, 0.0))]
    assert excess_by_piece([(installed, replanned)], at, 0.0, near_s=120, max_cells=3) is None


# 7. The near window follows the plans' pace on the schedules' clock --------------------------------
def test_the_near_window_covers_two_plan_spacings_up_to_a_slot() -> None:
    h = Hysteresis(near_s=60.0, defer_s=900.0)
    assert paced(h, 30.0, 900.0) is h  # plans every 30 s: the configured window already covers two
    assert (paced(h, 232.0, 900.0).near_s, paced(h, 232.0, 900.0).defer_s) == (464.0, 900.0)
    assert (paced(h, 2000.0, 900.0).near_s, paced(h, 2000.0, 900.0).defer_s) == (900.0, 900.0)
    assert paced(Hysteresis(near_s=None), 232.0, 900.0).near_s is None


def test_plan_pace_is_the_longest_of_the_last_spacings() -> None:
    pace = PlanPace(keep=3)
    assert pace.plan_at(NOW) == 0.0
    assert pace.plan_at(NOW + timedelta(seconds=200)) == 200.0
    assert pace.plan_at(NOW + timedelta(seconds=250)) == 200.0
    assert pace.plan_at(NOW + timedelta(seconds=300)) == 50.0  # the 200 s spacing is no longer among the last 3


def test_a_step_kept_from_the_previous_plan_is_not_sent_when_plans_come_slower_than_the_window() -> None:
    # Installed at NOW, stepping to 16 A at NOW + 900 s; the next plan, 232 s later (a compressed clock's
    # pace), has the same step at its own slot boundary, 232 s later: the installed step is 232 s early.
    later = NOW + timedelta(seconds=232)
    installed = Setpoints("S", 1, "tx", NOW, 900.0, (10.0, 16.0, 16.0), 3)
    plans = [(Setpoints("S", 1, "tx", later, 900.0, (10.0, 16.0), 3), CAPS, "t")]

    def sent(h: Hysteresis) -> int:
        pusher = Pusher(_never_called, h, clock=lambda: later)
        pusher.installed[("S", 1)] = installed
        return len(pusher.due(plans, {"t": 0.0})[0])

    configured = Hysteresis(min_interval_s=0, near_s=60.0, defer_s=900.0)
    assert sent(configured) == 1  # a 60 s window: the early step counts in full, sent for the budget
    assert sent(paced(configured, 232.0, 900.0)) == 0  # compared exactly by the next plan, before it happens


def test_a_cut_is_budgeted_per_slot_where_speed_counts_more_than_a_kept_schedule() -> None:
    h = Hysteresis(near_s=120.0)
    installed = Setpoints("S", 1, "tx", NOW, 900.0, (10.0, 16.0, 16.0), 3)
    replanned = Setpoints("S", 1, "tx", NOW + timedelta(seconds=30), 900.0, (10.0, 16.0), 3)
    at = NOW + timedelta(seconds=30)
    excess, budget = h.budgeted([(installed, replanned)], at, (1.0, 2.0), exact=False)
    assert (excess, budget) == ([h.excess_by_slot(installed, replanned, at)], (1.0, 2.0))
    assert h.budgeted([(installed, replanned)], at, (1.0, 2.0))[1] == [1.0, 1.0, 1.0, 2.0, 2.0]  # exact: per piece


async def test_the_caller_s_hysteresis_judges_without_replacing_the_pusher_s() -> None:
    """The dispatcher paces the rules to the plans' spacing per call; the pusher keeps its own."""

    async def send(station_id: str, evse_id: int, profile: dict[str, Any]) -> dict[str, Any]:
        return {"status": "Accepted"}

    configured = Hysteresis(current_a=1.0, min_interval_s=0)
    pusher = Pusher(send, configured, clock=lambda: NOW)
    await pusher.push(pusher.due([(_plan(10.0), CAPS, "t")])[0])
    coarse = Hysteresis(current_a=3.0, min_interval_s=0)
    sent, skipped = pusher.due([(_plan(8.0), CAPS, "t")], {"t": 5.0}, hysteresis=coarse)
    assert sent == [] and [r.reason for r in skipped] == ["within hysteresis"]
    assert pusher.hysteresis is configured
    sent, _ = pusher.due([(_plan(8.0), CAPS, "t")], {"t": 5.0})
    assert [shaped.carried.current_a[0] for shaped in sent] == [8.0]


# 5. A session held beside newcomers is budgeted at the most its schedule allows -------------------
def test_held_peak_is_the_highest_slot_from_now_on_with_discharge_as_zero() -> None:
    sp = Setpoints("S", 1, "tx", NOW, 900.0, (32.0, 10.0, 16.0, -20.0), 3)
    # from the second slot on: 16 A is the most, the first slot's 32 A is past
    assert held_peak_kw(sp, NOW + timedelta(seconds=900), 0.0) == pytest.approx(16.0 * 3 * 0.23)
    assert held_peak_kw(sp, NOW, 0.0) == pytest.approx(32.0 * 3 * 0.23)
    discharging = Setpoints("S", 1, "tx", NOW, 900.0, (-20.0, -10.0), 3)
    assert held_peak_kw(discharging, NOW, 0.0) == 0.0  # a car may stop discharging: never counted below 0


def test_a_schedule_that_runs_out_or_has_not_begun_is_not_held() -> None:
    sp = Setpoints("S", 1, "tx", NOW, 900.0, (16.0,) * 4, 3)  # one hour
    assert held_peak_kw(sp, NOW + timedelta(minutes=45), 600.0) is not None  # 15 min left, 10 asked: held
    assert held_peak_kw(sp, NOW + timedelta(minutes=50), 600.0) is not None  # 10 min left: just held
    assert held_peak_kw(sp, NOW + timedelta(minutes=51), 600.0) is None  # ... 9 min left: not held
    assert held_peak_kw(sp, NOW - timedelta(seconds=1), 0.0) is None  # not in force yet
    with pytest.raises(ValueError):
        held_peak_kw(sp, NOW, -1.0)
