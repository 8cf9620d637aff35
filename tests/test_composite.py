"""Composite schedule (OCPP 2.0.1 K-chapter stacking), unit helpers and profile validation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiles.composite import (
    REJECT_REASONS,
    InstalledProfile,
    InvalidProfileError,
    Period,
    composite_schedule,
    limit_at,
    parse_datetime,
    profile_from_v16,
    target_at,
    v16_replaces,
    validate_profile,
)
from profiles.units import (
    VOLTAGE_V,
    amps_to_watts,
    round_down_one_decimal,
    watts_to_amps,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # a Thursday
MAX_A = 32.0


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def profile(
    purpose: str,
    periods: list[tuple[int, float]] | list[tuple[int, float, int]],
    *,
    stack: int = 0,
    kind: str = "Absolute",
    unit: str = "A",
    start: datetime | None = T0,
    duration: int | None = None,
    pid: int = 1,
    **extra: object,
) -> dict:
    """A wire-format ChargingProfileType; periods are (startPeriod, limit[, numberPhases])."""
    schedule: dict = {
        "id": pid,
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [
            {"startPeriod": p[0], "limit": p[1], **({"numberPhases": p[2]} if len(p) > 2 else {})}
            for p in periods
        ],
    }
    if kind != "Relative" and start is not None:
        schedule["startSchedule"] = iso(start)
    if duration is not None:
        schedule["duration"] = duration
    return {
        "id": pid,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": [schedule],
        **extra,
    }


def installed(evse: int, wire: dict, received: datetime = T0 - timedelta(days=1)) -> InstalledProfile:
    return InstalledProfile(evse_id=evse, profile=wire, received_at=received)


def limit(profiles: list[InstalledProfile], seconds: float, evse: int = 1, **kw: object) -> float:
    kw.setdefault("unit", "A")
    kw.setdefault("max_limit", MAX_A)
    return limit_at(profiles, evse_id=evse, at=at(seconds), **kw)[0]  # type: ignore[arg-type]


def schedule(profiles: list[InstalledProfile], duration_s: int, evse: int = 1, **kw: object) -> list[tuple[float, float, int]]:
    """Composite as (offset seconds from T0, limit, phases) for compact assertions."""
    kw.setdefault("unit", "A")
    kw.setdefault("max_limit", MAX_A)
    periods = composite_schedule(profiles, evse_id=evse, start=T0, duration_s=duration_s, **kw)  # type: ignore[arg-type]
    return [((p.start - T0).total_seconds(), p.limit, p.number_phases) for p in periods]


# --- units -------------------------------------------------------------------------------------


def test_amps_watts_conversion_three_and_one_phase() -> None:
    assert amps_to_watts(32) == pytest.approx(22_080)
    assert amps_to_watts(16, phases=3) == pytest.approx(11_040)
    assert amps_to_watts(32, phases=1) == pytest.approx(7_360)
    assert watts_to_amps(11_040) == pytest.approx(16)
    assert watts_to_amps(7_360, phases=1) == pytest.approx(32)
    assert watts_to_amps(-6_900, phases=3) == pytest.approx(-10)
    assert VOLTAGE_V == 230.0


@pytest.mark.parametrize("bad", [0, 4, 1.5, True])
def test_conversion_rejects_bad_phases(bad: object) -> None:
    with pytest.raises(ValueError, match="phases"):
        amps_to_watts(10, phases=bad)  # type: ignore[arg-type]


def test_conversion_rejects_non_finite() -> None:
    with pytest.raises(ValueError, match="watts"):
        watts_to_amps(float("nan"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2.3, 2.3), (15.94202, 15.9), (15.99, 15.9), (16.0, 16.0), (-0.05, -0.1), (-2.34, -2.4), (0.04, 0.0)],
)
def test_round_down_one_decimal(value: float, expected: float) -> None:
    assert round_down_one_decimal(value) == expected


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_round_down_never_exceeds_and_is_within_a_tenth(value: float) -> None:
    rounded = round_down_one_decimal(value)
    assert rounded <= value
    assert value - rounded < 0.1 + 1e-9
    assert round(rounded, 1) == rounded


# --- dates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-26T12:00:00Z",
        "2026-11-26T12:00:00.000Z",
        "2026-11-26T12:00:00.000000001z",
        "2026-11-26T13:00:00+01:00",
        "2026-11-26T07:00:00.0-05:00",
        "2026-11-26T12:00:00",
    ],
)
def test_parse_datetime_variants_give_same_utc_instant(text: str) -> None:
    parsed = parse_datetime(text)
    assert parsed == T0
    assert parsed.tzinfo == UTC


@pytest.mark.parametrize("text", ["", "2026-11-26", "yesterday", "2026-13-01T00:00:00Z"])
def test_parse_datetime_rejects_garbage_with_value_in_message(text: str) -> None:
    with pytest.raises(ValueError, match="date-time"):
        parse_datetime(text)


# --- nothing installed, stack levels, purposes -------------------------------------------------


def test_no_profiles_gives_physical_max_and_default_phases() -> None:
    assert limit_at([], evse_id=1, at=T0, unit="W", max_limit=22_080, default_phases=1) == (22_080, 1)
    assert schedule([], 3600) == [(0, MAX_A, 3)]


def test_highest_stack_level_wins_and_expired_one_falls_through() -> None:
    low = installed(0, profile("TxDefaultProfile", [(0, 20)], stack=0, pid=1))
    high = installed(0, profile("TxDefaultProfile", [(0, 10)], stack=2, duration=600, pid=2))
    mid = installed(0, profile("TxDefaultProfile", [(0, 15)], stack=1, start=at(900), pid=3))
    profiles = [low, high, mid]
    assert limit(profiles, 0) == 10
    assert limit(profiles, 599) == 10
    assert limit(profiles, 600) == 20  # stack 2 expired, stack 1 not started yet
    assert limit(profiles, 900) == 15
    assert schedule(profiles, 1800) == [(0, 10, 3), (600, 20, 3), (900, 15, 3)]


def test_higher_stack_level_wins_even_when_its_limit_is_higher() -> None:
    profiles = [
        installed(0, profile("TxDefaultProfile", [(0, 6)], stack=0, pid=1)),
        installed(0, profile("TxDefaultProfile", [(0, 25)], stack=3, pid=2)),
    ]
    assert limit(profiles, 0) == 25


def test_equal_stack_level_most_recently_received_wins() -> None:
    older = installed(1, profile("TxDefaultProfile", [(0, 10)], pid=1), received=T0 - timedelta(hours=2))
    newer = installed(1, profile("TxDefaultProfile", [(0, 14)], pid=2), received=T0 - timedelta(hours=1))
    assert limit([newer, older], 0) == 14
    assert limit([older, newer], 0) == 14


def test_tx_profile_overrides_tx_default_only_for_its_transaction() -> None:
    profiles = [
        installed(0, profile("TxDefaultProfile", [(0, 16)], stack=5)),
        installed(1, profile("TxProfile", [(0, 24)], stack=0, pid=7, transactionId="tx-1")),
    ]
    assert limit(profiles, 0, transaction_id="tx-1") == 24
    assert limit(profiles, 0, transaction_id="tx-2") == 16
    assert limit(profiles, 0) == 16
    assert limit(profiles, 0, evse=2, transaction_id="tx-1") == 16  # TxProfile lives on evse 1


def test_tx_profile_with_ended_duration_falls_back_to_tx_default() -> None:
    profiles = [
        installed(0, profile("TxDefaultProfile", [(0, 16)])),
        installed(1, profile("TxProfile", [(0, 0)], duration=300, transactionId="tx")),
    ]
    assert schedule(profiles, 900, transaction_id="tx") == [(0, 0, 3), (300, 16, 3)]


def test_evse_specific_tx_default_overrides_evse0_tx_default() -> None:
    profiles = [
        installed(0, profile("TxDefaultProfile", [(0, 10)], stack=9, pid=1)),
        installed(2, profile("TxDefaultProfile", [(0, 20)], stack=0, duration=600, pid=2)),
    ]
    assert limit(profiles, 0, evse=2) == 20
    assert limit(profiles, 0, evse=1) == 10  # evse 0 default applies to each evse on its own
    assert limit(profiles, 600, evse=2) == 10  # evse-specific expired: evse-0 default again


def test_station_max_caps_tx_profile_and_lowest_cap_wins() -> None:
    profiles = [
        installed(1, profile("TxProfile", [(0, 32)], transactionId="t")),
        installed(0, profile("ChargingStationMaxProfile", [(0, 20), (600, 40)], pid=2)),
        installed(0, profile("ChargingStationExternalConstraints", [(0, 25), (600, 12)], pid=3)),
    ]
    assert schedule(profiles, 1200, transaction_id="t") == [(0, 20, 3), (600, 12, 3)]


def test_station_max_on_non_zero_evse_is_ignored() -> None:
    profiles = [installed(1, profile("ChargingStationMaxProfile", [(0, 5)]))]
    assert limit(profiles, 0) == MAX_A


def test_profile_limit_above_physical_max_is_capped() -> None:
    profiles = [installed(0, profile("TxDefaultProfile", [(0, 63)]))]
    assert limit(profiles, 0) == MAX_A


def test_evse0_query_is_the_station_level_cap_only() -> None:
    profiles = [
        installed(0, profile("TxDefaultProfile", [(0, 6)], pid=1)),
        installed(1, profile("TxProfile", [(0, 8)], pid=2, transactionId="t")),
        installed(0, profile("ChargingStationMaxProfile", [(0, 50_000), (3600, 30_000)], unit="W", pid=3)),
    ]
    periods = schedule(profiles, 7200, evse=0, unit="W", max_limit=66_240, transaction_id="t")
    assert periods == [(0, 50_000, 3), (3600, 30_000, 3)]


# --- kinds ---------------------------------------------------------------------------------------


def test_absolute_schedule_before_its_start_does_not_apply() -> None:
    profiles = [installed(0, profile("TxDefaultProfile", [(0, 8), (60, 12)], start=at(120)))]
    assert schedule(profiles, 600) == [(0, MAX_A, 3), (120, 8, 3), (180, 12, 3)]


def test_relative_starts_at_transaction_start() -> None:
    wire = profile("TxProfile", [(0, 6), (600, 16)], kind="Relative", transactionId="t")
    profiles = [installed(1, wire)]
    kw = {"transaction_id": "t", "transaction_start": at(100)}
    assert limit(profiles, 50, **kw) == MAX_A  # before the transaction started
    assert limit(profiles, 699, **kw) == 6
    assert limit(profiles, 700, **kw) == 16
    assert schedule(profiles, 1000, **kw) == [(0, MAX_A, 3), (100, 6, 3), (700, 16, 3)]


def test_relative_without_transaction_starts_at_received_at() -> None:
    wire = profile("TxDefaultProfile", [(0, 6), (300, 10)], kind="Relative", duration=900)
    profiles = [installed(0, wire, received=at(-100))]
    assert schedule(profiles, 1200) == [(0, 6, 3), (200, 10, 3), (800, MAX_A, 3)]


def test_recurring_daily_evening_cap_repeats_each_day() -> None:
    midnight = datetime(2026, 11, 20, tzinfo=UTC)  # anchor days before the query
    wire = profile(
        "ChargingStationMaxProfile",
        [(0, 32), (17 * 3600, 10), (20 * 3600, 32)],
        kind="Recurring",
        start=midnight,
        recurrencyKind="Daily",
    )
    profiles = [installed(0, wire, received=midnight)]
    day = 86_400
    periods = schedule(profiles, 2 * day)  # T0 is 12:00
    assert periods == [
        (0, 32, 3),
        (5 * 3600, 10, 3),
        (8 * 3600, 32, 3),
        (day + 5 * 3600, 10, 3),
        (day + 8 * 3600, 32, 3),
    ]
    assert limit(profiles, 5 * 3600 + 1) == 10


def test_recurring_daily_duration_limits_each_recurrence() -> None:
    anchor = T0.replace(hour=17)
    wire = profile("TxDefaultProfile", [(0, 8)], kind="Recurring", start=anchor, duration=3 * 3600, recurrencyKind="Daily")
    profiles = [installed(0, wire, received=T0 - timedelta(days=3))]
    day = 86_400
    assert schedule(profiles, 2 * day) == [
        (0, MAX_A, 3),
        (5 * 3600, 8, 3),
        (8 * 3600, MAX_A, 3),
        (day + 5 * 3600, 8, 3),
        (day + 8 * 3600, MAX_A, 3),
    ]


def test_recurring_weekly_applies_on_the_anchor_weekday_only() -> None:
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    wire = profile("TxDefaultProfile", [(0, 6), (86_400, 16)], kind="Recurring", start=monday, recurrencyKind="Weekly")
    profiles = [installed(0, wire, received=monday - timedelta(days=30))]
    next_monday = monday + timedelta(days=7)
    assert limit_at(profiles, evse_id=1, at=next_monday + timedelta(hours=5), unit="A", max_limit=MAX_A)[0] == 6
    assert limit_at(profiles, evse_id=1, at=next_monday + timedelta(days=1), unit="A", max_limit=MAX_A)[0] == 16
    assert limit(profiles, 0) == 16  # T0 is a Thursday


# --- validity windows ----------------------------------------------------------------------------


def test_valid_from_and_valid_to_bound_the_profile() -> None:
    wire = profile("TxDefaultProfile", [(0, 10)], start=T0 - timedelta(days=1), validFrom=iso(at(600)), validTo=iso(at(1200)))
    profiles = [installed(0, wire)]
    assert schedule(profiles, 1800) == [(0, MAX_A, 3), (600, 10, 3), (1200, MAX_A, 3)]


def test_missing_valid_from_means_valid_from_reception() -> None:
    wire = profile("TxDefaultProfile", [(0, 10)], start=T0 - timedelta(days=1))
    profiles = [installed(0, wire, received=at(300))]
    assert limit(profiles, 299) == MAX_A
    assert limit(profiles, 300) == 10


def test_overlapping_validity_higher_stack_wins_only_inside_its_window() -> None:
    base = installed(0, profile("TxDefaultProfile", [(0, 16)], stack=1, validFrom=iso(at(0)), validTo=iso(at(3000)), pid=1))
    burst = installed(0, profile("TxDefaultProfile", [(0, 6)], stack=4, validFrom=iso(at(1000)), validTo=iso(at(2000)), pid=2))
    floor = installed(0, profile("TxDefaultProfile", [(0, 10)], stack=0, pid=3))
    assert schedule([base, burst, floor], 4000) == [(0, 16, 3), (1000, 6, 3), (2000, 16, 3), (3000, 10, 3)]


# --- unit conversion and phases ------------------------------------------------------------------


def test_amp_profile_queried_in_watts_uses_period_phases() -> None:
    profiles = [
        installed(1, profile("TxProfile", [(0, 16), (600, 16, 1)], transactionId="t")),
    ]
    periods = schedule(profiles, 1200, unit="W", max_limit=22_080, transaction_id="t")
    assert periods == [(0, pytest.approx(11_040), 3), (600, pytest.approx(3_680), 1)]


def test_watt_profile_queried_in_amps_both_phase_counts() -> None:
    profiles = [installed(0, profile("TxDefaultProfile", [(0, 11_040), (600, 7_360, 1)], unit="W"))]
    assert limit_at(profiles, evse_id=1, at=at(0), unit="A", max_limit=MAX_A) == (pytest.approx(16), 3)
    assert limit_at(profiles, evse_id=1, at=at(600), unit="A", max_limit=MAX_A) == (pytest.approx(32), 1)


def test_default_phases_used_when_period_has_none() -> None:
    profiles = [installed(0, profile("TxDefaultProfile", [(0, 16)]))]
    assert limit_at(profiles, evse_id=1, at=T0, unit="W", max_limit=22_080, default_phases=1) == (
        pytest.approx(3_680),
        1,
    )


def test_mixed_units_cap_compares_in_requested_unit_and_phases_take_the_minimum() -> None:
    profiles = [
        installed(1, profile("TxProfile", [(0, 32, 1)], transactionId="t", pid=1)),  # 7360 W on one phase
        installed(0, profile("ChargingStationMaxProfile", [(0, 6_900)], unit="W", pid=2)),  # 10 A on 3 phases
    ]
    assert limit_at(profiles, evse_id=1, at=T0, unit="W", max_limit=22_080, transaction_id="t") == (6_900, 1)


# --- negative limits (V2G) -----------------------------------------------------------------------


def test_negative_limit_passes_through_and_cap_still_uses_min() -> None:
    profiles = [
        installed(1, profile("TxProfile", [(0, -10), (600, 20)], transactionId="t", pid=1)),
        installed(0, profile("ChargingStationMaxProfile", [(0, 12)], pid=2)),
    ]
    assert schedule(profiles, 1200, transaction_id="t") == [(0, -10, 3), (600, 12, 3)]
    assert limit(profiles, 0, transaction_id="t", unit="W", max_limit=22_080) == pytest.approx(-6_900)


# --- composite shape and agreement with limit_at -------------------------------------------------


def test_composite_merges_equal_consecutive_periods_and_starts_at_query_start() -> None:
    profiles = [installed(0, profile("TxDefaultProfile", [(0, 10), (300, 10), (600, 12)], start=at(-100)))]
    periods = composite_schedule(profiles, evse_id=1, start=T0, duration_s=900, unit="A", max_limit=MAX_A)
    assert periods == [Period(T0, 10, 3), Period(at(500), 12, 3)]


def test_composite_accepts_iso_strings_for_times() -> None:
    profiles = [installed(0, profile("TxDefaultProfile", [(0, 10)]))]
    periods = composite_schedule(profiles, evse_id=1, start=iso(T0), duration_s=60, unit="A", max_limit=MAX_A)  # type: ignore[arg-type]
    assert periods == [Period(T0, 10, 3)]


_period_lists = st.lists(
    st.tuples(st.integers(1, 3000), st.integers(-20, 40), st.sampled_from([1, 3])), min_size=0, max_size=4
)


@st.composite
def _random_profiles(draw: st.DrawFn) -> list[InstalledProfile]:
    result = []
    for pid in range(draw(st.integers(0, 5))):
        purpose = draw(st.sampled_from(["TxDefaultProfile", "TxProfile", "ChargingStationMaxProfile"]))
        kind = draw(st.sampled_from(["Absolute", "Relative", "Recurring"] if purpose != "ChargingStationMaxProfile" else ["Absolute", "Recurring"]))
        tail = sorted({p[0]: p for p in draw(_period_lists)}.values())
        periods = [(0, draw(st.integers(-20, 40)), draw(st.sampled_from([1, 3]))), *tail]
        extra: dict = {"recurrencyKind": "Daily"} if kind == "Recurring" else {}
        if purpose == "TxProfile":
            extra["transactionId"] = draw(st.sampled_from(["t", "other"]))
        if draw(st.booleans()):
            extra["validFrom"] = iso(at(draw(st.integers(-3000, 3000))))
        if draw(st.booleans()):
            extra["validTo"] = iso(at(draw(st.integers(3001, 9000))))
        wire = profile(
            purpose,
            periods,
            stack=draw(st.integers(0, 3)),
            kind=kind,
            unit=draw(st.sampled_from(["A", "W"])),
            start=at(draw(st.integers(-5000, 5000))),
            duration=draw(st.one_of(st.none(), st.integers(1, 6000))),
            pid=pid,
            **extra,
        )
        evse = 0 if purpose == "ChargingStationMaxProfile" else draw(st.sampled_from([0, 1, 2]))
        if purpose == "TxProfile":
            evse = 1
        result.append(installed(evse, wire, received=at(draw(st.integers(-4000, 2000)))))
    return result


@settings(max_examples=60, deadline=None)
@given(_random_profiles(), st.sampled_from(["A", "W"]), st.integers(-2000, 2000))
def test_composite_agrees_with_limit_at_everywhere(profiles: list[InstalledProfile], unit: str, tx_offset: int) -> None:
    max_limit = MAX_A if unit == "A" else 22_080.0
    kw = {"evse_id": 1, "unit": unit, "max_limit": max_limit, "transaction_id": "t", "transaction_start": at(tx_offset)}
    periods = composite_schedule(profiles, start=T0, duration_s=8000, **kw)  # type: ignore[arg-type]
    assert periods[0].start == T0
    starts = [p.start for p in periods]
    assert starts == sorted(set(starts))
    for before, after in itertools.pairwise(periods):
        assert (before.limit, before.number_phases) != (after.limit, after.number_phases)
    # probe each period at its start, its last second and a middle instant
    ends = [*starts[1:], at(8000)]
    for period, end in zip(periods, ends):
        for probe in (period.start, period.start + (end - period.start) / 2, end - timedelta(seconds=0.001)):
            assert limit_at(profiles, at=probe, **kw) == (period.limit, period.number_phases)  # type: ignore[arg-type]
        assert period.limit <= max_limit


# --- bad input -----------------------------------------------------------------------------------


def test_malformed_installed_profile_raises_specific_error_naming_it() -> None:
    wire = profile("TxDefaultProfile", [(0, 10)], pid=42)
    del wire["chargingSchedule"][0]["chargingRateUnit"]
    with pytest.raises(InvalidProfileError, match="id=42"):
        limit([installed(0, wire)], 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"unit": "kW"}, "unit"),
        ({"max_limit": float("inf")}, "max_limit"),
        ({"default_phases": 0}, "default_phases"),
        ({"evse_id": -1}, "evse_id"),
        ({"duration_s": 0}, "duration_s"),
        ({"duration_s": 10**9}, "duration_s"),
    ],
)
def test_bad_query_arguments_raise_value_error(kwargs: dict, match: str) -> None:
    args = {"evse_id": 1, "start": T0, "duration_s": 60, "unit": "A", "max_limit": MAX_A, **kwargs}
    with pytest.raises(ValueError, match=match):
        composite_schedule([], **args)


# --- validate_profile ----------------------------------------------------------------------------

STATION = {"allowed_units": {"A", "W"}, "max_stack_level": 5, "max_periods": 4, "active_transaction_id": "tx-9"}


def _reason(wire: object, evse: int = 1, **overrides: object) -> str | None:
    return validate_profile(wire, evse_id=evse, **{**STATION, **overrides})  # type: ignore[arg-type]


def _broken(mutate) -> dict:  # type: ignore[no-untyped-def]
    wire = profile("TxDefaultProfile", [(0, 16), (600, 8)])
    mutate(wire)
    return wire


def test_validate_accepts_well_formed_profiles() -> None:
    assert _reason(profile("TxDefaultProfile", [(0, 16), (600, 8.5, 1)])) is None
    assert _reason(profile("TxProfile", [(0, -10)], kind="Relative", transactionId="tx-9")) is None
    assert _reason(profile("ChargingStationMaxProfile", [(0, 40_000)], unit="W", kind="Recurring", recurrencyKind="Weekly"), evse=0) is None


@pytest.mark.parametrize(
    ("wire", "evse", "overrides", "reason"),
    [
        ("not a dict", 1, {}, "NotAnObject"),
        (profile("TxDefaultProfile", [(0, 16)]), -1, {}, "InvalidEvseId"),
        (_broken(lambda w: w.update(id="1")), 1, {}, "InvalidId"),
        (_broken(lambda w: w.update(stackLevel=-1)), 1, {}, "InvalidStackLevel"),
        (_broken(lambda w: w.update(chargingProfilePurpose="Nope")), 1, {}, "UnknownPurpose"),
        (_broken(lambda w: w.update(chargingProfileKind="Sometimes")), 1, {}, "UnknownKind"),
        (profile("ChargingStationExternalConstraints", [(0, 16)]), 0, {}, "ExternalConstraintsNotAllowed"),
        (profile("TxDefaultProfile", [(0, 16)], stack=6), 1, {}, "StackLevelTooHigh"),
        (profile("ChargingStationMaxProfile", [(0, 16)]), 1, {}, "StationMaxNotOnEvse0"),
        (profile("ChargingStationMaxProfile", [(0, 16)], kind="Relative"), 0, {}, "StationMaxRelative"),
        (profile("TxProfile", [(0, 16)], transactionId="tx-9"), 0, {}, "TxProfileNeedsEvse"),
        (profile("TxProfile", [(0, 16)], transactionId="tx-9"), 1, {"active_transaction_id": None}, "NoActiveTransaction"),
        (profile("TxProfile", [(0, 16)]), 1, {}, "MissingTransactionId"),
        (profile("TxProfile", [(0, 16)], transactionId="tx-1"), 1, {}, "TransactionIdMismatch"),
        (profile("TxDefaultProfile", [(0, 16)], transactionId="tx-9"), 1, {}, "TransactionIdNotAllowed"),
        (profile("TxDefaultProfile", [(0, 16)], kind="Recurring"), 1, {}, "MissingRecurrencyKind"),
        (profile("TxDefaultProfile", [(0, 16)], validFrom="soon"), 1, {}, "InvalidDate"),
        (profile("TxDefaultProfile", [(0, 16)], validFrom=iso(T0), validTo=iso(T0)), 1, {}, "ValidToNotAfterValidFrom"),
        (_broken(lambda w: w.update(chargingSchedule=[])), 1, {}, "InvalidChargingSchedule"),
        (profile("TxDefaultProfile", [(0, 16)], start=None), 1, {}, "MissingStartSchedule"),
        (_broken(lambda w: w.update(chargingProfileKind="Relative")), 1, {}, "RelativeWithStartSchedule"),
        (_broken(lambda w: w["chargingSchedule"][0].update(startSchedule="2026-11-26")), 1, {}, "InvalidDate"),
        (profile("TxDefaultProfile", [(0, 16)], unit="W"), 1, {"allowed_units": {"A"}}, "UnitNotAllowed"),
        (profile("TxDefaultProfile", [(0, 16)], duration=-5), 1, {}, "InvalidDuration"),
        (_broken(lambda w: w["chargingSchedule"][0].update(chargingSchedulePeriod=[])), 1, {}, "NoPeriods"),
        (profile("TxDefaultProfile", [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]), 1, {}, "TooManyPeriods"),
        (profile("TxDefaultProfile", [(0, float("nan"))]), 1, {}, "InvalidPeriod"),
        (profile("TxDefaultProfile", [(60, 16)]), 1, {}, "FirstStartPeriodNotZero"),
        (profile("TxDefaultProfile", [(0, 16), (600, 8), (600, 10)]), 1, {}, "StartPeriodsNotIncreasing"),
        (profile("TxDefaultProfile", [(0, 16), (600, 8), (300, 10)]), 1, {}, "StartPeriodsNotIncreasing"),
        (profile("TxDefaultProfile", [(0, 16, 4)]), 1, {}, "InvalidNumberPhases"),
        (profile("TxDefaultProfile", [(0, 15.94)]), 1, {}, "LimitTooManyDecimals"),
    ],
)
def test_validate_rejects_with_specific_reason(wire: object, evse: int, overrides: dict, reason: str) -> None:
    assert reason in REJECT_REASONS
    assert _reason(wire, evse, **overrides) == reason


@settings(max_examples=60)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
                    max_leaves=10))
def test_validate_never_crashes_on_garbage(garbage: object) -> None:
    result = _reason(garbage)
    assert result in REJECT_REASONS


# --- OCPP 2.1 operation modes -------------------------------------------------------------------

MODES = frozenset({"ChargingOnly", "CentralSetpoint", "Idle"})


def setpoint_profile(purpose: str, periods: list[dict], *, unit: str = "W", stack: int = 0, pid: int = 1) -> dict:
    wire = profile(purpose, [(0, 0)], unit=unit, stack=stack, pid=pid)
    wire["chargingSchedule"][0]["chargingSchedulePeriod"] = periods
    return wire


def test_central_setpoint_is_clamped_into_discharge_limit_and_limit() -> None:
    tx = setpoint_profile("TxDefaultProfile", [
        {"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -9000.0, "dischargeLimit": -11000.0},
        {"startPeriod": 600, "operationMode": "CentralSetpoint", "setpoint": 9000.0, "limit": 4140.0}])
    cap = setpoint_profile("ChargingStationMaxProfile", [{"startPeriod": 0, "limit": 22080.0,
                                                          "dischargeLimit": -6900.0}], pid=2)
    profiles = [installed(1, tx), installed(0, cap)]
    now = target_at(profiles, evse_id=1, at=at(10), unit="A", max_limit=MAX_A)
    assert now.operation_mode == "CentralSetpoint"
    assert now.limit == pytest.approx(32.0)  # no limit of its own: the station's; the cap is 32 A too
    assert now.discharge_limit == pytest.approx(-10.0)  # the cap's -6900 W beats the profile's -11000 W
    assert now.setpoint == pytest.approx(-10.0)
    later = target_at(profiles, evse_id=1, at=at(700), unit="W", max_limit=MAX_A * 690)
    assert (later.setpoint, later.limit) == (pytest.approx(4140.0), pytest.approx(4140.0))
    assert limit_at(profiles, evse_id=1, at=at(700), unit="W", max_limit=MAX_A * 690)[0] == pytest.approx(4140.0)


def test_composite_splits_periods_on_a_setpoint_change_and_2_0_1_profiles_have_no_mode() -> None:
    tx = setpoint_profile("TxDefaultProfile", [
        {"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -3000.0, "limit": 11000.0},
        {"startPeriod": 300, "operationMode": "CentralSetpoint", "setpoint": -5000.0, "limit": 11000.0}])
    periods = composite_schedule([installed(1, tx)], evse_id=1, start=T0, duration_s=600, unit="W", max_limit=22080.0)
    assert [(p.setpoint, p.limit) for p in periods] == [(-3000.0, 11000.0), (-5000.0, 11000.0)]
    plain = composite_schedule([installed(1, profile("TxDefaultProfile", [(0, 16)]))], evse_id=1, start=T0,
                               duration_s=60, unit="A", max_limit=MAX_A)
    assert plain == [Period(T0, 16.0, 3)] and plain[0].operation_mode is None


@pytest.mark.parametrize(("period", "reason"), [
    ({"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -5000.0, "dischargeLimit": -7000.0}, None),
    ({"startPeriod": 0, "operationMode": "Idle"}, None),
    ({"startPeriod": 0, "limit": 11000.0}, None),
    ({"startPeriod": 0, "operationMode": "ExternalSetpoint", "setpoint": 1.0}, "UnsupportedOperationMode"),
    ({"startPeriod": 0, "operationMode": "CentralSetpoint", "limit": 11000.0}, "MissingSetpoint"),
    ({"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -1.0, "limit": -5.0}, "NegativeLimit"),
    ({"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": 1.0, "dischargeLimit": 5.0},
     "PositiveDischargeLimit"),
    ({"startPeriod": 0, "operationMode": "ChargingOnly"}, "InvalidPeriod"),
    ({"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": "lots"}, "InvalidPeriod"),
])
def test_validate_operation_modes(period: dict, reason: str | None) -> None:
    wire = setpoint_profile("TxDefaultProfile", [period])
    assert _reason(wire, operation_modes=MODES) == reason
    if period.get("operationMode"):
        assert _reason(wire) in (None, "InvalidPeriod")  # 2.0.1 knows no modes: a period needs its limit


@settings(max_examples=60)
@given(st.dictionaries(st.sampled_from(["startPeriod", "limit", "setpoint", "dischargeLimit", "operationMode"]),
                       st.none() | st.integers(-10, 10) | st.floats() | st.sampled_from(sorted(MODES)), max_size=5))
def test_validate_operation_modes_never_crashes(period: dict) -> None:
    assert _reason(setpoint_profile("TxDefaultProfile", [period]), operation_modes=MODES) in REJECT_REASONS | {None}


# --- OCPP 1.6 profiles ----------------------------------------------------------------------------


def v16(purpose: str, limit: float = 16.0, **extra: object) -> dict:
    return {"chargingProfileId": 7, "stackLevel": 2, "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Absolute", "chargingSchedule": {
                "chargingRateUnit": "A", "startSchedule": iso(T0),
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}, **extra}


def test_v16_profiles_map_onto_the_shared_form() -> None:
    station_max = profile_from_v16(v16("ChargePointMaxProfile"), running=None)
    assert isinstance(station_max, dict)
    assert station_max["chargingProfilePurpose"] == "ChargingStationMaxProfile" and station_max["id"] == 7
    assert station_max["chargingSchedule"][0]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 16.0}]
    assert _reason(station_max, evse=0) is None
    assert limit([installed(0, station_max)], 10) == 16.0

    bound = profile_from_v16(v16("TxProfile"), running=("CS-1-3", 42))
    assert isinstance(bound, dict) and bound["transactionId"] == "CS-1-3"
    assert _reason(bound, active_transaction_id="CS-1-3") is None
    assert profile_from_v16(v16("TxProfile", transactionId=42), running=("CS-1-3", 42))["transactionId"] == "CS-1-3"  # type: ignore[index]


@pytest.mark.parametrize(("wire", "running", "reason"), [
    (v16("TxProfile"), None, "NoActiveTransaction"),
    (v16("TxProfile", transactionId=41), ("CS-1-3", 42), "TransactionIdMismatch"),
    (v16("TxProfile", transactionId=41), ("CS-1-3", None), "TransactionIdMismatch"),
    (v16("TxDefaultProfile", transactionId=42), ("CS-1-3", 42), "TransactionIdNotAllowed"),
    (v16("ChargingStationMaxProfile"), None, "UnknownPurpose"),
    ({**v16("TxDefaultProfile"), "chargingSchedule": [{}]}, None, "InvalidChargingSchedule"),
    ("garbage", None, "NotAnObject"),
])
def test_v16_profiles_refused(wire: object, running: tuple | None, reason: str) -> None:
    assert profile_from_v16(wire, running=running) == reason
    assert reason in REJECT_REASONS


def test_v16_same_stack_level_and_purpose_on_the_same_connector_replaces() -> None:
    old = installed(1, profile("TxDefaultProfile", [(0, 16)], stack=2, pid=1))
    assert v16_replaces(old, 1, profile("TxDefaultProfile", [(0, 8)], stack=2, pid=2))
    assert v16_replaces(old, 0, profile("TxDefaultProfile", [(0, 8)], stack=5, pid=1))  # same id anywhere
    assert not v16_replaces(old, 0, profile("TxDefaultProfile", [(0, 8)], stack=2, pid=2))
    assert not v16_replaces(old, 1, profile("TxDefaultProfile", [(0, 8)], stack=3, pid=2))
