"""Regression tests for reviewed grid bugs: each fails on the code before its fix."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from csms.app import utc_now
from csms.bus import LocalBus
from csms.grid.config import GridConfig, check, parse_grid
from csms.grid.effects.pusher import Pusher, failsafe_profile
from csms.grid.model.limits import SignalError, parse_base_load, parse_signal
from csms.grid.model.sessions import StationCaps
from csms.grid.signals import Signals
from profiles.hysteresis import Hysteresis, Setpoints

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
    assert pusher.in_flight == {("S", 1): 1}

    cut, skipped = pusher.due([(_plan(10.5), CAPS, "t")], {"t": 0.0})
    assert [shaped.carried.current_a[0] for shaped in cut] == [10.5]
    assert skipped == []

    follow = asyncio.create_task(pusher.push(cut))
    gate.set()
    await asyncio.wait_for(asyncio.gather(slow, follow), 5)
    assert wire == [10.0, 16.0, 10.5]
    assert pusher.installed[("S", 1)].current_a[0] == 10.5
    assert pusher.in_flight == {}


async def test_hysteresis_applies_again_once_the_answer_landed() -> None:
    async def send(station_id: str, evse_id: int, profile: dict[str, Any]) -> dict[str, Any]:
        return {"status": "Accepted"}

    pusher = Pusher(send, Hysteresis(min_interval_s=0), clock=lambda: NOW)
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
    assert pusher.in_flight == {("A", 1): 2}
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert pusher.in_flight == {}


# 2. Out-of-range numbers and instants are refused, never crash the session ---------------------
def _grid(prefix: str | None = None) -> GridConfig:
    section: dict[str, Any] = {"transformers": {"T1": {
        "capacity_kw": 400, "safe_limit_kw": 100,
        "base_load": {"kind": "mqtt", "fallback_kw": 40, "max_age_s": 60}}}}
    if prefix is not None:
        section["mqtt"] = {"topic_prefix": prefix}
    return parse_grid(section)


HUGE = int("1" * 400)  # valid JSON, no float can hold it


@pytest.mark.parametrize("payload, fragment", [
    ({"signal_id": "a", "limit_kw": HUGE}, "limit_kw is far too large"),
    ({"signal_id": "a", "intervals": [{"start": "2025-01-01T12:00:00Z", "limit_kw": HUGE}]},
     "intervals[0].limit_kw is far too large"),
    pytest.param(f'{{"signal_id": "a", "limit_kw": {HUGE}}}', "limit_kw is far too large", id="huge-in-json-text"),
    ({"signal_id": "a", "limit_kw": 5, "valid_from": "0001-01-01T00:30:00+01:00"}, "valid_from is out of range"),
    ({"signal_id": "a", "limit_kw": 5, "valid_until": "9999-12-31T23:59:00-01:00"}, "valid_until is out of range"),
    ({"signal_id": "a", "limit_kw": 5, "timestamp": "0001-01-01T00:00:00+00:01"}, "timestamp is out of range"),
    ({"signal_id": "a", "intervals": [{"start": "2025-01-01T12:00:00Z", "end": "9999-12-31T23:59:00-01:00",
                                       "limit_kw": 5}]}, "end is out of range once converted to UTC"),
])
def test_out_of_range_limit_signals_are_refused_with_a_reason(payload: Any, fragment: str) -> None:
    with pytest.raises(SignalError) as caught:
        parse_signal(payload, "T1", NOW, grid=_grid())
    assert fragment in caught.value.reason


@pytest.mark.parametrize("payload, fragment", [
    pytest.param(f'{{"kw": {HUGE}}}', "kw is far too large", id="huge-kw"),
    ('{"kw": 5, "timestamp": "0001-01-01T00:30:00+01:00"}', "timestamp is out of range"),
    ('{"kw": 5, "timestamp": "9999-12-31T23:59:00-01:00"}', "timestamp is out of range"),
])
def test_out_of_range_base_loads_are_refused_with_a_reason(payload: str, fragment: str) -> None:
    with pytest.raises(SignalError) as caught:
        parse_base_load(payload.encode(), NOW)
    assert fragment in caught.value.reason


async def test_api_submit_of_a_huge_limit_is_a_rejection_and_the_old_limit_holds() -> None:
    listener = Signals(_grid(), LocalBus(), CollectorRegistry(), utc_now)
    await listener.desk.submit("T1", {"signal_id": "ok", "limit_kw": 75})
    with pytest.raises(SignalError, match="far too large"):
        await listener.desk.submit("T1", {"signal_id": "huge", "limit_kw": HUGE})
    assert listener.book.limit_at("T1", datetime.now(timezone.utc))[0] == 75.0
    assert listener.desk.recent_rejections[-1]["signal_id"] == "huge"


@dataclass
class _Topic:
    value: str


@dataclass
class _Message:
    topic: _Topic
    payload: bytes
    retain: bool = False


class _Client:
    """The one attribute ``_consume`` reads: a finite stream of messages."""

    def __init__(self, messages: list[_Message]) -> None:
        self._messages = messages

    @property
    async def messages(self) -> AsyncIterator[_Message]:  # type: ignore[override]
        for message in self._messages:
            yield message


async def test_poison_messages_are_dropped_and_the_session_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = Signals(_grid("p"), LocalBus(), CollectorRegistry(), utc_now)
    original = listener.desk.accept

    def buggy(tid: str, payload: Any, *, live: bool, via: str) -> Any:
        if b"bug" in payload:
            raise RuntimeError("a bug in handling")
        return original(tid, payload, live=live, via=via)

    monkeypatch.setattr(listener.desk, "accept", buggy)
    good = json.dumps({"signal_id": "later", "limit_kw": 60}).encode()
    stream = [
        _Message(_Topic("p/grid/T1/base-load"), f'{{"kw": {HUGE}}}'.encode(), retain=True),
        _Message(_Topic("p/grid/T1/limit"), json.dumps({"signal_id": "x", "limit_kw": HUGE}).encode(), retain=True),
        _Message(_Topic("p/grid/T1/limit"), b'{"signal_id": "bug", "limit_kw": 1}'),
        _Message(_Topic("p/grid/T1/limit"), good),
    ]
    await asyncio.wait_for(listener.mqtt._consume(_Client(stream)), 5)  # type: ignore[arg-type]
    assert listener.book.limit_at("T1", datetime.now(timezone.utc)) == (60.0, "signal:dso:later")
    assert listener.book.measured_base_load("T1") is None
    errors = {s.labels["kind"]: s.value for m in listener.metrics.message_errors.collect() for s in m.samples
              if s.name.endswith("_total")}
    assert errors == {"limit": 1.0}


# 3. A fail-safe limit never grows ---------------------------------------------------------------
@pytest.mark.parametrize("amps", [0.5, 3.0, 5.9])
def test_fail_safe_limit_in_the_gap_below_6_a_is_refused_by_the_config_check(amps: float) -> None:
    issues = check({"transformers": {"T1": {"capacity_kw": 100}}, "planning": {"fail_safe_limit_a": amps}}, "c.yaml")
    assert [(i.key, "cannot be signalled" in i.message) for i in issues] == [("grid.planning.fail_safe_limit_a", True)]


@pytest.mark.parametrize("amps", [0, 6, 10])
def test_fail_safe_limits_a_car_can_follow_are_accepted(amps: float) -> None:
    grid = parse_grid({"transformers": {"T1": {"capacity_kw": 100}}, "planning": {"fail_safe_limit_a": amps}})
    assert grid.planning.fail_safe_limit_a == amps


def _fail_safe_limit(profile: dict[str, Any]) -> float:
    return float(profile["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"])


@pytest.mark.parametrize("amps, expected", [(3.0, 0.0), (5.99, 0.0), (0.0, 0.0), (6.0, 6.0), (10.0, 10.0),
                                            (50.0, 32.0)])
def test_fail_safe_profile_rounds_down_into_the_gap_never_up(amps: float, expected: float) -> None:
    caps = StationCaps(rate_units=("A",), max_current_a=32.0)
    assert _fail_safe_limit(failsafe_profile(caps, amps)) == expected


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
