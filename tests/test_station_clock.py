"""Schedules on the station's clock (profiles/station_clock.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from profiles.composite import InstalledProfile, limit_at
from profiles.station_clock import anchored, clock_offset_s, relative

OURS = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def profile(periods: list[tuple[int, float]], duration: int | None = 3600) -> dict[str, Any]:
    schedule: dict[str, Any] = {"id": 1, "startSchedule": "2026-06-01T12:00:00Z", "chargingRateUnit": "A",
                                "chargingSchedulePeriod": [{"startPeriod": s, "limit": v, "numberPhases": 3}
                                                           for s, v in periods]}
    if duration is not None:
        schedule["duration"] = duration
    return {"id": 770001, "stackLevel": 1, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
            "transactionId": "T", "chargingSchedule": [schedule]}


def station_limit(p: dict[str, Any], station_now: datetime, tx_start: datetime | None = None) -> float:
    installed = InstalledProfile(evse_id=1, profile=p, received_at=station_now - timedelta(days=1000))
    return limit_at([installed], evse_id=1, at=station_now, unit="A", transaction_id="T", max_limit=32.0,
                    transaction_start=tx_start)[0]


def test_the_offset_is_the_least_delayed_of_the_recent_messages() -> None:
    assert clock_offset_s([]) is None
    assert clock_offset_s([-3600.2, -3600.05, -3700.0, -3600.1]) == -3600.05  # a queued one is ignored
    assert clock_offset_s([5.0, 0.1, 0.2, 0.1, 0.3, 0.2, 0.1], window=5) == 0.3  # old readings age out


@pytest.mark.parametrize("offset_s", [-3600 * 24 * 400.0, -30.0, -4.0, 0.0, 10800.0])
def test_an_anchored_schedule_holds_on_the_station_clock(offset_s: float) -> None:
    p = anchored(profile([(0, 16.0), (900, 8.0), (1800, 0.0)]), offset_s, lead_s=60)
    station = OURS + timedelta(seconds=offset_s)
    for ours_s, expected in ((0, 16.0), (-50, 16.0), (899, 16.0), (900, 8.0), (1799, 8.0), (1800, 0.0),
                             (3599, 0.0)):
        got = station_limit(p, station + timedelta(seconds=ours_s))
        assert got == expected, (offset_s, ours_s, got)
    assert station_limit(p, station + timedelta(seconds=3601)) == 32.0  # past its duration: not in force


@given(offset=st.floats(-1e8, 1e8), error=st.floats(-59, 0))
def test_a_station_slightly_behind_the_estimate_still_finds_the_first_period(offset: float, error: float) -> None:
    p = anchored(profile([(0, 10.0), (900, 20.0)]), offset, lead_s=60)
    assert station_limit(p, OURS + timedelta(seconds=offset + error)) == 10.0


def test_relative_holds_the_first_period_whatever_the_clock() -> None:
    r = relative(profile([(0, 6.0), (900, 20.0)]))
    assert r["chargingProfileKind"] == "Relative"
    schedule = r["chargingSchedule"][0]
    assert "startSchedule" not in schedule and "duration" not in schedule
    assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 6.0, "numberPhases": 3}]
    tx_start = datetime(2025, 1, 15, 13, 0, tzinfo=UTC)
    for hours in (0, 1, 30):
        assert station_limit(r, tx_start + timedelta(hours=hours), tx_start) == 6.0


def test_only_absolute_profiles_are_anchored() -> None:
    with pytest.raises(ValueError):
        anchored(relative(profile([(0, 6.0)])), 10.0)


def test_anchored_and_relative_leave_the_profile_they_copy_as_it_was() -> None:
    import copy
    original = profile([(0, 16.0), (900, 8.0), (1800, 0.0)])
    before = copy.deepcopy(original)
    moved, held = anchored(original, 3600.0), relative(original)
    assert original == before
    moved["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"] = 1.0
    held["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"] = 2.0
    assert original == before


@given(offset=st.floats(-1e8, 1e8), lead=st.integers(0, 600))
def test_anchoring_in_place_gives_what_the_copy_gives(offset: float, lead: int) -> None:
    copied = anchored(profile([(0, 16.0), (900, 8.0), (1800, 0.0)]), offset, lead_s=lead)
    mine = profile([(0, 16.0), (900, 8.0), (1800, 0.0)])
    assert anchored(mine, offset, lead_s=lead, in_place=True) is mine
    assert mine == copied
