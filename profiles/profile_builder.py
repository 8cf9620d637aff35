"""Turn planner output into OCPP 2.0.1 ChargingProfileType dicts (camelCase, wire format).

The dicts go inside ``SetChargingProfileRequest.chargingProfile``. They are built to pass the
checks a station applies (see docs: first ``startPeriod`` 0, strictly increasing periods, at
most ``PeriodsPerSchedule`` periods, one decimal, Absolute needs ``startSchedule``).

Fail-safe default profile: `fail_safe_default_profile` builds a ``TxDefaultProfile`` for EVSE 0
of kind **Relative** with one period and no ``startSchedule``/``duration``. Relative was chosen
because it holds for every transaction from its own start, forever, with no clock involved: an
Absolute profile needs a ``startSchedule`` that must lie in the past on the station's clock
(a station with a wrong clock would treat a "future" schedule as not yet in force, exactly when
the fail-safe matters), and Relative TxDefault profiles are the form the OCPP 1.6/2.0.1
smart-charging examples use for default limits, so every implementation we know accepts it.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Literal

from profiles.planner import SessionPlan
from profiles.units import VOLTAGE_V, round_down_one_decimal

Unit = Literal["A", "W"]

#: OCPP 2.0.1 limits transactionId to 36 characters.
MAX_TRANSACTION_ID = 36


def _iso_z(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC), got a naive datetime")
    utc = moment.astimezone(timezone.utc)
    text = utc.isoformat(timespec="milliseconds" if utc.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_unit(unit: object) -> None:
    if unit not in ("A", "W"):
        raise ValueError(f"unit must be 'A' or 'W', got {unit!r}")


def _limit(amps: float, unit: Unit, phases: int, allow_negative: bool) -> float:
    value = amps if unit == "A" else amps * phases * VOLTAGE_V
    if not allow_negative and value < 0:
        value = 0.0
    return round_down_one_decimal(value)


CHARGING_ONLY = "ChargingOnly"
CENTRAL_SETPOINT = "CentralSetpoint"


def schedule_period(start_period: int, value: float, phases: int, operation_modes: bool) -> dict[str, Any]:
    """One ChargingSchedulePeriodType for a planned value (in the schedule's unit; negative = discharge).

    2.0.1 (``operation_modes`` False): the value is the ``limit`` (negative only by our opt-in V2G
    convention). OCPP 2.1: charging is ``ChargingOnly`` up to ``limit``; discharging is
    ``CentralSetpoint`` with the negative ``setpoint``, a ``dischargeLimit`` at that same value (the
    car may not give more than planned) and ``limit`` 0 (nor charge meanwhile).
    """
    if not operation_modes:
        return {"startPeriod": start_period, "limit": value, "numberPhases": phases}
    if value < 0:
        return {"startPeriod": start_period, "limit": 0.0, "numberPhases": phases, "operationMode": CENTRAL_SETPOINT,
                "setpoint": value, "dischargeLimit": value}
    return {"startPeriod": start_period, "limit": value, "numberPhases": phases, "operationMode": CHARGING_ONLY}


def tx_profile(
    plan: SessionPlan,
    *,
    profile_id: int,
    stack_level: int,
    transaction_id: str,
    start: datetime,
    slot_s: float,
    unit: Unit,
    phases: int,
    max_periods: int,
    allow_negative: bool,
    operation_modes: bool = False,
) -> dict[str, Any]:
    """The session's plan as an Absolute TxProfile starting at `start`, one period per change.

    `plan.current_a` is per-phase amps (planner convention); W limits are amps x phases x 230 V.
    When the plan has more changes than `max_periods`, the schedule is truncated: the last
    period sent then holds until the next profile replaces it, so the caller must re-send
    before the truncated horizon ends (the planner re-plans far more often than that).
    ``operation_modes``: OCPP 2.1 periods (see :func:`schedule_period`).
    """
    _check_int("profile_id", profile_id, 0)
    _check_int("stack_level", stack_level, 0)
    _check_int("max_periods", max_periods, 1)
    _check_unit(unit)
    if isinstance(phases, bool) or phases not in (1, 2, 3):
        raise ValueError(f"phases must be 1, 2 or 3, got {phases!r}")
    if not isinstance(transaction_id, str) or not 0 < len(transaction_id) <= MAX_TRANSACTION_ID:
        raise ValueError(f"transaction_id must be a string of 1..{MAX_TRANSACTION_ID} characters")
    if isinstance(slot_s, bool) or not isinstance(slot_s, (int, float)) or not math.isfinite(slot_s) or slot_s < 1:
        raise ValueError(f"slot_s must be a finite number of seconds >= 1, got {slot_s!r}")
    if not plan.current_a:
        raise ValueError(f"session {plan.session_id}: the plan has no slots")
    periods: list[dict[str, Any]] = []
    last: float | None = None
    for slot, amps in enumerate(plan.current_a):
        if not math.isfinite(amps):
            raise ValueError(f"session {plan.session_id}: slot {slot} current is not finite: {amps!r}")
        limit = _limit(amps, unit, phases, allow_negative)
        if periods and last == limit:
            continue
        if len(periods) == max_periods:
            break
        periods.append(schedule_period(int(math.floor(slot * slot_s)), limit, phases, operation_modes))
        last = limit
    return {
        "id": profile_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute",
        "transactionId": transaction_id,
        "chargingSchedule": [
            {
                "id": profile_id,
                "startSchedule": _iso_z(start),
                "chargingRateUnit": unit,
                "chargingSchedulePeriod": periods,
            }
        ],
    }


def fail_safe_default_profile(*, profile_id: int, limit: float, unit: Unit,
                              stack_level: int = 0) -> dict[str, Any]:
    """A conservative per-EVSE limit that holds while the central system or grid link is down.

    Install with evseId 0: a TxDefaultProfile there applies to *each* EVSE separately, so
    `limit` is the per-EVSE share, not the site total. Relative kind, see the module doc.
    """
    _check_int("profile_id", profile_id, 0)
    _check_int("stack_level", stack_level, 0)
    _check_unit(unit)
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit) or limit < 0:
        raise ValueError(f"limit must be a finite number >= 0, got {limit!r}")
    return {
        "id": profile_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Relative",
        "chargingSchedule": [
            {
                "id": profile_id,
                "chargingRateUnit": unit,
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": round_down_one_decimal(limit)}],
            }
        ],
    }
