"""Profiles built from plans must pass the OCPP 2.0.1 schema and a station's own checks."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import fastjsonschema
import ocpp
import pytest

from profiles.planner import SessionPlan
from profiles.profile_builder import fail_safe_default_profile, tx_profile

SCHEMA = json.loads((Path(ocpp.__file__).parent / "v201" / "schemas" / "SetChargingProfileRequest.json")
                    .read_text(encoding="utf-8"))
VALIDATE = fastjsonschema.compile(SCHEMA)
START = datetime(2025, 3, 1, 17, 0, tzinfo=timezone.utc)


def _plan(currents: list[float]) -> SessionPlan:
    return SessionPlan("s1", tuple(currents), tuple(c * 0.69 for c in currents), 0.0, 0.0, 0.0, None)


def _build(currents: list[float], **overrides) -> dict:
    args = dict(profile_id=7, stack_level=2, transaction_id="tx-1", start=START, slot_s=900.0, unit="A",
                phases=3, max_periods=24, allow_negative=False)
    args.update(overrides)
    return tx_profile(_plan(currents), **args)


def _valid(profile: dict, evse_id: int = 1) -> dict:
    VALIDATE({"evseId": evse_id, "chargingProfile": profile})
    return profile


def test_periods_merge_round_down_and_validate() -> None:
    prof = _valid(_build([16.0, 16.0, 7.99, 0.0, 0.0, 6.05]))
    assert prof["chargingProfilePurpose"] == "TxProfile"
    assert prof["chargingProfileKind"] == "Absolute"
    assert prof["transactionId"] == "tx-1"
    sched = prof["chargingSchedule"][0]
    assert sched["startSchedule"] == "2025-03-01T17:00:00Z"
    assert sched["chargingRateUnit"] == "A"
    assert sched["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 16.0, "numberPhases": 3},
        {"startPeriod": 1800, "limit": 7.9, "numberPhases": 3},
        {"startPeriod": 2700, "limit": 0.0, "numberPhases": 3},
        {"startPeriod": 4500, "limit": 6.0, "numberPhases": 3},
    ]


def test_watts_use_phases_and_230_volts() -> None:
    prof = _valid(_build([10.0, 6.0], unit="W", phases=1))
    periods = prof["chargingSchedule"][0]["chargingSchedulePeriod"]
    assert [p["limit"] for p in periods] == [2300.0, 1380.0]
    assert {p["numberPhases"] for p in periods} == {1}


def test_truncated_to_max_periods_with_increasing_starts() -> None:
    prof = _valid(_build([6.0 + k for k in range(10)], max_periods=3))
    periods = prof["chargingSchedule"][0]["chargingSchedulePeriod"]
    assert [p["startPeriod"] for p in periods] == [0, 900, 1800]
    assert [p["limit"] for p in periods] == [6.0, 7.0, 8.0]


def test_negative_limits_only_when_allowed() -> None:
    clamped = _valid(_build([-10.0, 8.0], allow_negative=False))
    assert [p["limit"] for p in clamped["chargingSchedule"][0]["chargingSchedulePeriod"]] == [0.0, 8.0]
    v2g = _valid(_build([-10.05, 8.0], allow_negative=True))
    # Rounding down a discharge makes it (slightly) larger, never smaller than planned.
    assert [p["limit"] for p in v2g["chargingSchedule"][0]["chargingSchedulePeriod"]] == [-10.1, 8.0]


def test_start_converted_to_utc_with_z() -> None:
    cet = timezone(timedelta(hours=1))
    prof = _valid(_build([8.0], start=datetime(2025, 3, 1, 18, 0, 0, 250000, tzinfo=cet)))
    assert prof["chargingSchedule"][0]["startSchedule"] == "2025-03-01T17:00:00.250Z"


@pytest.mark.parametrize("overrides, match", [
    ({"start": datetime(2025, 3, 1, 17, 0)}, "timezone-aware"),
    ({"unit": "kW"}, "unit"),
    ({"phases": 4}, "phases"),
    ({"max_periods": 0}, "max_periods"),
    ({"transaction_id": "x" * 37}, "transaction_id"),
    ({"slot_s": 0.5}, "slot_s"),
    ({"profile_id": -1}, "profile_id"),
])
def test_bad_arguments_raise_specific_errors(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _build([8.0], **overrides)


def test_non_finite_current_rejected() -> None:
    with pytest.raises(ValueError, match="not finite"):
        _build([8.0, float("nan")])


def test_fail_safe_default_is_relative_tx_default_for_evse_0() -> None:
    prof = _valid(fail_safe_default_profile(profile_id=1, limit=10.06, unit="A"), evse_id=0)
    assert prof["chargingProfilePurpose"] == "TxDefaultProfile"
    assert prof["chargingProfileKind"] == "Relative"
    assert prof["stackLevel"] == 0
    sched = prof["chargingSchedule"][0]
    assert "startSchedule" not in sched and "duration" not in sched
    assert sched["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 10.0}]
    watts = _valid(fail_safe_default_profile(profile_id=2, limit=4140.0, unit="W", stack_level=1), evse_id=0)
    assert watts["chargingSchedule"][0]["chargingRateUnit"] == "W"


@pytest.mark.parametrize("limit", [-1.0, float("nan"), True])
def test_fail_safe_rejects_bad_limit(limit: float) -> None:
    with pytest.raises(ValueError, match="limit"):
        fail_safe_default_profile(profile_id=1, limit=limit, unit="A")
