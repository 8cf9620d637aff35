"""The EV-schedule check of K15.FR.11/12 (profiles.ev_schedule): pure, against hand-made profiles."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from profiles.composite import InstalledProfile
from profiles.ev_schedule import ev_schedule_excess

T0 = datetime(2025, 3, 3, 17, 0, tzinfo=timezone.utc)


def tx_profile(periods: list[tuple[int, float]], unit: str = "W", **extra: object) -> InstalledProfile:
    schedule = {"id": 1, "chargingRateUnit": unit, "startSchedule": T0.isoformat(),
                "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods]}
    profile = {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
               "transactionId": "TX", "chargingSchedule": [schedule], **extra}
    return InstalledProfile(1, profile, T0 - timedelta(minutes=1))


def ev(periods: list[tuple[int, float]], unit: str = "W", **extra: object) -> dict:
    return {"id": 9, "chargingRateUnit": unit, **extra,
            "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods]}


def check(allowed: list[InstalledProfile], schedule: dict, time_base: datetime = T0):
    return ev_schedule_excess(allowed, evse_id=1, time_base=time_base, ev_schedule=schedule, transaction_id="TX")


def test_within_the_limits_everywhere_is_fine() -> None:
    assert check([tx_profile([(0, 11000), (1800, 7000)])], ev([(0, 11000), (1800, 6000)])) is None


def test_the_first_excess_is_reported_with_its_instant() -> None:
    excess = check([tx_profile([(0, 11000), (1800, 7000)])], ev([(0, 11000), (1800, 9000)]))
    assert excess is not None and excess.at == T0 + timedelta(seconds=1800)
    assert (excess.ev_w, excess.allowed_w) == (9000, 7000)
    assert "9000 W" in excess.describe()


def test_a_later_tightening_of_the_profile_is_found_between_ev_periods() -> None:
    excess = check([tx_profile([(0, 11000), (600, 4000)])], ev([(0, 10000)]))
    assert excess is not None and excess.at == T0 + timedelta(seconds=600)


@pytest.mark.parametrize("amps, phases, ok", [(16, 3, True), (32, 3, False), (32, 1, True), (50, 1, False)])
def test_amperes_are_converted_with_the_period_phases(amps: float, phases: int, ok: bool) -> None:
    schedule = ev([(0, amps)], unit="A")
    schedule["chargingSchedulePeriod"][0]["numberPhases"] = phases
    assert (check([tx_profile([(0, 11040)])], schedule) is None) is ok


def test_an_ampere_profile_against_a_watt_schedule() -> None:
    assert check([tx_profile([(0, 16)], unit="A")], ev([(0, 11040)])) is None
    assert check([tx_profile([(0, 16)], unit="A")], ev([(0, 12000)])) is not None


def test_the_ev_schedule_may_start_later_than_the_time_base() -> None:
    later = ev([(0, 9000)], startSchedule=(T0 + timedelta(seconds=1800)).isoformat())
    assert check([tx_profile([(0, 11000), (1800, 7000)])], later) is not None
    assert check([tx_profile([(0, 11000), (3600, 7000)])], {**later, "duration": 1800}) is None


def test_nothing_installed_means_nothing_to_exceed() -> None:
    assert check([], ev([(0, 50000)])) is None


def test_a_profile_of_another_transaction_does_not_count() -> None:
    other = tx_profile([(0, 1000)], transactionId="OTHER")
    assert check([other], ev([(0, 11000)])) is None
