"""OCPP 2.0.1 composite schedule: which limit a station applies, as pure functions.

The station simulator asks `limit_at` every simulated second to decide what it delivers; the
central system asks `composite_schedule` to predict (and check against GetCompositeSchedule)
what a station will do. Both must follow the same stacking rules, so they live here once.

Rules (OCPP 2.0.1 chapter K), per instant and per EVSE:

* Within one purpose the profile with the highest ``stackLevel`` that is valid at that instant
  (``validFrom``/``validTo``, ``validFrom`` absent = from ``received_at``) *and* has a schedule
  period covering it wins. A profile whose schedule ``duration`` has ended falls through to
  lower stack levels. Equal stack levels: the most recently received profile wins (a station
  replaces the older one on install).
* ``TxProfile`` (on this EVSE, ``transactionId`` equal to the active transaction) overrides
  ``TxDefaultProfile``. A TxDefault installed on this EVSE overrides one installed on EVSE 0,
  which otherwise applies to *each* EVSE separately (it is no shared budget).
* The result is capped by ``ChargingStationMaxProfile`` (EVSE 0 only) and
  ``ChargingStationExternalConstraints`` (EVSE 0 or this EVSE), the lowest wins, and by the
  station's physical ``max_limit``. Nothing in force = ``max_limit``.
* Querying EVSE 0 returns the station-level cap only (StationMax and EVSE-0 external
  constraints, bounded by ``max_limit``); summing what the EVSEs may draw is not done here.
* Only the first ``chargingSchedule`` of a profile is used: 2.0.1 allows up to three for
  ISO 15118 schedule selection by the EV, which a plain AC station never does.
* Limits are converted between A and W with the period's ``numberPhases`` (``default_phases``
  when absent) at 230 V. Amps are per phase, so an amp cap limits each phase's current.
  The reported ``number_phases`` is the smallest of the periods in force (a cap on 1 phase
  means only one phase can be used). Negative limits (V2G discharge) pass through unchanged.
* Relative schedules start at ``transaction_start`` when a transaction is given, otherwise at
  the profile's ``received_at`` (never at the query start, so the answer does not depend on
  when the question is asked and `limit_at` agrees with `composite_schedule`).
* Recurring schedules repeat every day/week from ``startSchedule`` in both directions (whether
  the profile is in force before its anchor is decided by ``validFrom``), in UTC: no DST shift.
  ``duration`` limits each recurrence.

OCPP 2.1 adds operation modes to a period (chapter Q, bidirectional power transfer). The winning
TxProfile/TxDefaultProfile period decides the mode and the ``setpoint`` (negative = discharge);
caps bound it: ``limit`` is the lowest limit in force (absent in a setpoint period = no limit of
its own) and ``discharge_limit`` the highest (closest to 0) ``dischargeLimit`` in force, never
below ``-max_limit``. A ``CentralSetpoint`` setpoint is clamped into ``[discharge_limit, limit]``.
2.0.1 profiles have no mode: their periods report ``operation_mode`` None, as before.

OCPP 1.6 profiles are mapped onto this form by `profile_from_v16` (ChargePointMaxProfile =
ChargingStationMaxProfile, one schedule object, integer transaction ids, a TxProfile without
``transactionId`` binds to the running transaction); `v16_replaces` says which installed profile
a new 1.6 profile replaces (same id, or same stack level and purpose on the same connector: 1.6
replaces where 2.0.1 rejects).

Results are not rounded; use `profiles.units.round_down_one_decimal` before putting a value on
the wire.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal, TypeGuard

from profiles.units import VOLTAGE_V, amps_to_watts, watts_to_amps

STATION_MAX = "ChargingStationMaxProfile"
V16_STATION_MAX = "ChargePointMaxProfile"
TX_DEFAULT = "TxDefaultProfile"
TX_PROFILE = "TxProfile"
EXTERNAL_CONSTRAINTS = "ChargingStationExternalConstraints"
PURPOSES = frozenset({STATION_MAX, TX_DEFAULT, TX_PROFILE, EXTERNAL_CONSTRAINTS})
KINDS = frozenset({"Absolute", "Recurring", "Relative"})
RECURRENCE_S = {"Daily": 86_400, "Weekly": 7 * 86_400}
UNITS = frozenset({"A", "W"})

CHARGING_ONLY = "ChargingOnly"
CENTRAL_SETPOINT = "CentralSetpoint"
IDLE = "Idle"
#: OCPP 2.1 operation modes whose period needs no ``limit`` of its own.
SETPOINT_MODES = frozenset({CENTRAL_SETPOINT, "ExternalSetpoint", "ExternalLimits", "LocalFrequency",
                            "LocalLoadBalancing", "CentralFrequency"})

#: Longest window `composite_schedule` answers; bounds the work for recurring profiles.
MAX_QUERY_S = 400 * 86_400

Unit = Literal["A", "W"]


class InvalidProfileError(ValueError):
    """An installed profile is too malformed to evaluate (it should have been rejected)."""


# ---------------------------------------------------------------------------------------------
# Date-times on the wire
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def _parse_iso(text: str) -> datetime:
    cleaned = text.strip()
    if len(cleaned) <= 10:  # a bare date is not a date-time
        raise ValueError(f"not an ISO 8601 date-time (time part missing): {text!r}")
    if cleaned[-1] in "zZ":
        cleaned = cleaned[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date-time: {text!r}") from None
    if parsed.tzinfo is None:  # OCPP sends UTC; a missing offset is read as UTC, not local time
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_datetime(value: str | datetime) -> datetime:
    """Aware UTC datetime from an ISO 8601 string ('Z', offsets, any fractional digits) or datetime.

    Naive values are taken as UTC. Raises ValueError with the offending value otherwise.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    if not isinstance(value, str):  # ValueError, not TypeError: callers treat every bad value alike
        raise ValueError(f"expected an ISO 8601 date-time string, got {type(value).__name__}")  # noqa: TRY004
    return _parse_iso(value)


# ---------------------------------------------------------------------------------------------
# Public data
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstalledProfile:
    """A ChargingProfile as a station holds it.

    evse_id: 0 = station-wide. profile: the ChargingProfileType exactly as on the wire.
    received_at: when the station accepted it (validFrom absent => valid from here; a Relative
    profile without a transaction starts here).
    """

    evse_id: int
    profile: dict
    received_at: datetime


@dataclass(frozen=True)
class Period:
    """One stretch of the composite schedule, from `start` until the next Period's start.

    The last three fields are OCPP 2.1's: None when no 2.1 profile in force sets them.
    """

    start: datetime
    limit: float
    number_phases: int
    setpoint: float | None = None
    discharge_limit: float | None = None
    operation_mode: str | None = None


# ---------------------------------------------------------------------------------------------
# Evaluating one profile
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hit:
    """The period of one profile in force at an instant, already in the requested unit."""

    limit: float | None  # None: a 2.1 setpoint period without a limit of its own
    phases: int
    rank: tuple[int, datetime, int]  # (stackLevel, received_at, id): higher wins
    setpoint: float | None = None
    discharge_limit: float | None = None
    mode: str | None = None


def _profile_id(installed: InstalledProfile) -> object:
    profile = installed.profile
    return profile.get("id") if isinstance(profile, dict) else None


@contextlib.contextmanager
def _evaluating(installed: InstalledProfile) -> Iterator[None]:
    """Turn the low-level error a malformed profile causes into InvalidProfileError naming it."""
    try:
        yield
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise InvalidProfileError(
            f"cannot evaluate charging profile id={_profile_id(installed)!r} "
            f"on evse {installed.evse_id}: {type(exc).__name__}: {exc}"
        ) from exc


def _first_schedule(profile: dict) -> dict:
    schedules = profile["chargingSchedule"]
    if isinstance(schedules, dict):  # tolerate the 1.6-style single object
        return schedules
    return schedules[0]


def _validity(installed: InstalledProfile) -> tuple[datetime, datetime | None]:
    profile = installed.profile
    valid_from_raw = profile.get("validFrom")
    valid_to_raw = profile.get("validTo")
    valid_from = (
        parse_datetime(valid_from_raw)
        if valid_from_raw is not None
        else parse_datetime(installed.received_at)
    )
    valid_to = parse_datetime(valid_to_raw) if valid_to_raw is not None else None
    return valid_from, valid_to


def _anchor(installed: InstalledProfile, schedule: dict, transaction_start: datetime | None) -> datetime:
    """The instant the schedule's startPeriod 0 refers to (for Recurring: any recurrence)."""
    kind = installed.profile["chargingProfileKind"]
    if kind == "Relative":
        if transaction_start is not None:
            return parse_datetime(transaction_start)
        return parse_datetime(installed.received_at)
    if kind not in ("Absolute", "Recurring"):
        raise ValueError(f"unknown chargingProfileKind {kind!r}")
    return parse_datetime(schedule["startSchedule"])


def _recurrence_s(profile: dict) -> int | None:
    if profile["chargingProfileKind"] != "Recurring":
        return None
    kind = profile.get("recurrencyKind")
    if kind not in RECURRENCE_S:
        raise ValueError(f"Recurring profile needs recurrencyKind Daily/Weekly, got {kind!r}")
    return RECURRENCE_S[kind]


def _schedule_start_at(anchor: datetime, recurrence_s: int | None, at: datetime) -> datetime:
    """Start of the schedule run that `at` falls in (the latest recurrence start <= at)."""
    if recurrence_s is None:
        return anchor
    elapsed = (at - anchor).total_seconds()
    return anchor + timedelta(seconds=math.floor(elapsed / recurrence_s) * recurrence_s)


def _to_unit(limit: float, from_unit: str, to_unit: Unit, phases: int) -> float:
    if from_unit == to_unit:
        return float(limit)
    if from_unit == "A":
        return amps_to_watts(limit, phases, VOLTAGE_V)
    if from_unit == "W":
        return watts_to_amps(limit, phases, VOLTAGE_V)
    raise ValueError(f"unknown chargingRateUnit {from_unit!r}")


def _evaluate_unchecked(
    installed: InstalledProfile,
    at: datetime,
    unit: Unit,
    transaction_start: datetime | None,
    default_phases: int,
) -> _Hit | None:
    profile = installed.profile
    valid_from, valid_to = _validity(installed)
    if at < valid_from or (valid_to is not None and at >= valid_to):
        return None
    schedule = _first_schedule(profile)
    recurrence_s = _recurrence_s(profile)
    run_start = _schedule_start_at(_anchor(installed, schedule, transaction_start), recurrence_s, at)
    elapsed = (at - run_start).total_seconds()
    if elapsed < 0:
        return None
    duration = schedule.get("duration")
    if duration is not None and elapsed >= duration:
        return None
    chosen: dict | None = None
    for period in schedule["chargingSchedulePeriod"]:
        if period["startPeriod"] <= elapsed:
            chosen = period
        else:
            break
    if chosen is None:
        return None
    phases = chosen.get("numberPhases", default_phases)
    rate_unit = schedule["chargingRateUnit"]

    def converted(key: str) -> float | None:
        value = chosen.get(key)
        return None if value is None else _to_unit(value, rate_unit, unit, phases)

    mode = chosen.get("operationMode")
    limit = converted("limit")
    if limit is None and (mode is None or mode == CHARGING_ONLY):
        raise KeyError("limit")
    received = parse_datetime(installed.received_at)
    profile_id = profile.get("id", 0)
    return _Hit(limit, phases, (profile["stackLevel"], received, profile_id if isinstance(profile_id, int) else 0),
                setpoint=converted("setpoint"), discharge_limit=converted("dischargeLimit"), mode=mode)


def _evaluate(
    installed: InstalledProfile,
    at: datetime,
    unit: Unit,
    transaction_start: datetime | None,
    default_phases: int,
) -> _Hit | None:
    """The profile's limit at `at`, or None when it is not valid or no period covers `at`."""
    with _evaluating(installed):
        return _evaluate_unchecked(installed, at, unit, transaction_start, default_phases)


def _winner(
    candidates: Iterable[InstalledProfile],
    at: datetime,
    unit: Unit,
    transaction_start: datetime | None,
    default_phases: int,
) -> _Hit | None:
    best: _Hit | None = None
    for installed in candidates:
        hit = _evaluate(installed, at, unit, transaction_start, default_phases)
        if hit is not None and (best is None or hit.rank > best.rank):
            best = hit
    return best


# ---------------------------------------------------------------------------------------------
# Which profiles matter for a query
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layers:
    """The installed profiles relevant to one EVSE, grouped by how they combine."""

    tx: tuple[InstalledProfile, ...]
    tx_default_evse: tuple[InstalledProfile, ...]
    tx_default_station: tuple[InstalledProfile, ...]
    caps: tuple[tuple[InstalledProfile, ...], ...]  # each group yields one cap; all caps apply

    def all(self) -> Iterable[InstalledProfile]:
        yield from self.tx
        yield from self.tx_default_evse
        yield from self.tx_default_station
        for group in self.caps:
            yield from group


def _purpose(installed: InstalledProfile) -> object:
    profile = installed.profile
    if not isinstance(profile, dict):
        raise InvalidProfileError(
            f"installed profile on evse {installed.evse_id} is a {type(profile).__name__}, not a dict"
        )
    return profile.get("chargingProfilePurpose")


def _layers(profiles: Sequence[InstalledProfile], evse_id: int, transaction_id: str | None) -> _Layers:
    tx: list[InstalledProfile] = []
    default_evse: list[InstalledProfile] = []
    default_station: list[InstalledProfile] = []
    station_max: list[InstalledProfile] = []
    external_station: list[InstalledProfile] = []
    external_evse: list[InstalledProfile] = []
    for installed in profiles:
        purpose = _purpose(installed)
        here = installed.evse_id == evse_id
        if purpose == STATION_MAX:
            if installed.evse_id == 0:
                station_max.append(installed)
        elif purpose == EXTERNAL_CONSTRAINTS:
            if installed.evse_id == 0:
                external_station.append(installed)
            elif here:
                external_evse.append(installed)
        elif evse_id == 0:
            continue  # EVSE 0 query = station-level cap only
        elif purpose == TX_PROFILE:
            matches = transaction_id is not None and installed.profile.get("transactionId") == transaction_id
            if here and matches:
                tx.append(installed)
        elif purpose == TX_DEFAULT:
            if here:
                default_evse.append(installed)
            elif installed.evse_id == 0:
                default_station.append(installed)
        elif purpose not in PURPOSES:
            raise InvalidProfileError(
                f"charging profile id={_profile_id(installed)!r}: unknown chargingProfilePurpose {purpose!r}"
            )
    return _Layers(
        tx=tuple(tx),
        tx_default_evse=tuple(default_evse),
        tx_default_station=tuple(default_station),
        caps=(tuple(station_max), tuple(external_station), tuple(external_evse)),
    )


def _combine(
    layers: _Layers,
    at: datetime,
    unit: Unit,
    max_limit: float,
    transaction_start: datetime | None,
    default_phases: int,
) -> Period:
    base = (
        _winner(layers.tx, at, unit, transaction_start, default_phases)
        or _winner(layers.tx_default_evse, at, unit, transaction_start, default_phases)
        or _winner(layers.tx_default_station, at, unit, transaction_start, default_phases)
    )
    in_force = [base] if base is not None else []
    for group in layers.caps:
        cap = _winner(group, at, unit, transaction_start, default_phases)
        if cap is not None:
            in_force.append(cap)
    limit = min([max_limit, *(hit.limit for hit in in_force if hit.limit is not None)])
    phases = min((hit.phases for hit in in_force), default=default_phases)
    discharge = [hit.discharge_limit for hit in in_force if hit.discharge_limit is not None]
    discharge_limit = max(-abs(max_limit), max(discharge)) if discharge else None
    mode = base.mode if base is not None else None
    setpoint = base.setpoint if base is not None else None
    if setpoint is not None:
        setpoint = min(setpoint, limit)
        if discharge_limit is not None:
            setpoint = max(setpoint, discharge_limit)
    return Period(at, limit, phases, setpoint, discharge_limit, mode)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def _check_query(evse_id: object, unit: object, max_limit: object, default_phases: object) -> None:
    if not _is_int(evse_id) or evse_id < 0:  # type: ignore[operator]
        raise ValueError(f"evse_id must be an int >= 0, got {evse_id!r}")
    if unit not in UNITS:
        raise ValueError(f"unit must be 'A' or 'W', got {unit!r}")
    if isinstance(max_limit, bool) or not isinstance(max_limit, (int, float)) or not math.isfinite(max_limit):
        raise ValueError(f"max_limit must be a finite number, got {max_limit!r}")
    if isinstance(default_phases, bool) or default_phases not in (1, 2, 3):
        raise ValueError(f"default_phases must be 1, 2 or 3, got {default_phases!r}")


def limit_at(
    profiles: Sequence[InstalledProfile],
    *,
    evse_id: int,
    at: datetime,
    unit: Unit,
    max_limit: float,
    transaction_id: str | None = None,
    transaction_start: datetime | None = None,
    default_phases: int = 3,
) -> tuple[float, int]:
    """(limit in `unit`, number of phases) the station applies on `evse_id` at instant `at`."""
    period = target_at(profiles, evse_id=evse_id, at=at, unit=unit, max_limit=max_limit,
                       transaction_id=transaction_id, transaction_start=transaction_start,
                       default_phases=default_phases)
    return period.limit, period.number_phases


def target_at(
    profiles: Sequence[InstalledProfile],
    *,
    evse_id: int,
    at: datetime,
    unit: Unit,
    max_limit: float,
    transaction_id: str | None = None,
    transaction_start: datetime | None = None,
    default_phases: int = 3,
) -> Period:
    """Everything in force on `evse_id` at `at` (limit, phases and the 2.1 mode/setpoint), starting at `at`."""
    _check_query(evse_id, unit, max_limit, default_phases)
    moment = parse_datetime(at)
    tx_start = parse_datetime(transaction_start) if transaction_start is not None else None
    layers = _layers(profiles, evse_id, transaction_id)
    return _combine(layers, moment, unit, float(max_limit), tx_start, default_phases)


def _change_points(
    installed: InstalledProfile,
    start: datetime,
    end: datetime,
    transaction_start: datetime | None,
) -> Iterable[datetime]:
    """Every instant in the window where this profile's contribution may change."""
    with _evaluating(installed):
        valid_from, valid_to = _validity(installed)
        yield valid_from
        if valid_to is not None:
            yield valid_to
        profile = installed.profile
        schedule = _first_schedule(profile)
        offsets = [float(p["startPeriod"]) for p in schedule["chargingSchedulePeriod"]]
        duration = schedule.get("duration")
        recurrence_s = _recurrence_s(profile)
        if duration is not None:
            offsets.append(float(duration) if recurrence_s is None else min(float(duration), recurrence_s))
        anchor = _anchor(installed, schedule, transaction_start)
        if recurrence_s is None:
            runs: Iterable[datetime] = (anchor,)
        else:
            first = _schedule_start_at(anchor, recurrence_s, start)
            count = int((end - first).total_seconds() // recurrence_s) + 1
            runs = (first + timedelta(seconds=k * recurrence_s) for k in range(count))
        for run_start in runs:
            yield run_start
            for offset in offsets:
                yield run_start + timedelta(seconds=offset)


def composite_schedule(
    profiles: Sequence[InstalledProfile],
    *,
    evse_id: int,
    start: datetime,
    duration_s: int,
    unit: Unit,
    max_limit: float,
    transaction_id: str | None = None,
    transaction_start: datetime | None = None,
    default_phases: int = 3,
) -> list[Period]:
    """Periods covering [start, start + duration_s), consecutive equal periods merged.

    The first Period starts at `start`; each lasts until the next one's start (the last one
    until the end of the window). See the module docstring for the stacking rules.
    """
    _check_query(evse_id, unit, max_limit, default_phases)
    if isinstance(duration_s, bool) or not isinstance(duration_s, int) or not 0 < duration_s <= MAX_QUERY_S:
        raise ValueError(f"duration_s must be an int in 1..{MAX_QUERY_S}, got {duration_s!r}")
    window_start = parse_datetime(start)
    window_end = window_start + timedelta(seconds=duration_s)
    tx_start = parse_datetime(transaction_start) if transaction_start is not None else None
    layers = _layers(profiles, evse_id, transaction_id)

    instants = {window_start}
    for installed in layers.all():
        for instant in _change_points(installed, window_start, window_end, tx_start):
            if window_start < instant < window_end:
                instants.add(instant)

    periods: list[Period] = []
    for instant in sorted(instants):
        period = _combine(layers, instant, unit, float(max_limit), tx_start, default_phases)
        if periods and _same_values(periods[-1], period):
            continue
        periods.append(period)
    return periods


def _same_values(a: Period, b: Period) -> bool:
    return (a.limit, a.number_phases, a.setpoint, a.discharge_limit, a.operation_mode) == (
        b.limit, b.number_phases, b.setpoint, b.discharge_limit, b.operation_mode)


# ---------------------------------------------------------------------------------------------
# What a station accepts
# ---------------------------------------------------------------------------------------------

#: Every reason code `validate_profile` can return.
REJECT_REASONS = frozenset(
    {
        "NotAnObject",
        "InvalidEvseId",
        "InvalidId",
        "InvalidStackLevel",
        "UnknownPurpose",
        "UnknownKind",
        "ExternalConstraintsNotAllowed",
        "StackLevelTooHigh",
        "StationMaxNotOnEvse0",
        "StationMaxRelative",
        "TxProfileNeedsEvse",
        "NoActiveTransaction",
        "MissingTransactionId",
        "TransactionIdMismatch",
        "TransactionIdNotAllowed",
        "MissingRecurrencyKind",
        "InvalidDate",
        "ValidToNotAfterValidFrom",
        "InvalidChargingSchedule",
        "MissingStartSchedule",
        "RelativeWithStartSchedule",
        "UnitNotAllowed",
        "InvalidDuration",
        "NoPeriods",
        "TooManyPeriods",
        "InvalidPeriod",
        "FirstStartPeriodNotZero",
        "StartPeriodsNotIncreasing",
        "InvalidNumberPhases",
        "LimitTooManyDecimals",
        "UnsupportedOperationMode",
        "MissingSetpoint",
        "NegativeLimit",
        "PositiveDischargeLimit",
    }
)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_datetime(value: object) -> bool:
    try:
        parse_datetime(value)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def _period_reason(period: dict, operation_modes: frozenset[str] | None) -> str | None:
    """Checks of one period's limit and, for OCPP 2.1 (`operation_modes` given), its operation mode."""
    limit = period.get("limit")
    if operation_modes is None:
        return None if _is_number(limit) else "InvalidPeriod"
    mode = period.get("operationMode", CHARGING_ONLY)
    if mode not in operation_modes:
        return "UnsupportedOperationMode"
    for key in ("limit", "setpoint", "dischargeLimit"):
        if key in period and not _is_number(period[key]):
            return "InvalidPeriod"
    if limit is None and mode not in SETPOINT_MODES and mode != IDLE:
        return "InvalidPeriod"
    if mode == CENTRAL_SETPOINT and "setpoint" not in period:
        return "MissingSetpoint"
    if mode != CHARGING_ONLY and limit is not None and limit < 0:
        return "NegativeLimit"  # only ChargingOnly keeps the legacy negative-limit discharge
    if period.get("dischargeLimit", 0) > 0:
        return "PositiveDischargeLimit"
    return None


def _schedule_reason(
    schedule: object, kind: str, allowed_units: set[str], max_periods: int,
    operation_modes: frozenset[str] | None = None,
) -> str | None:
    if not isinstance(schedule, dict) or not _is_int(schedule.get("id")):
        return "InvalidChargingSchedule"
    has_start = "startSchedule" in schedule
    if kind in ("Absolute", "Recurring") and not has_start:
        return "MissingStartSchedule"
    if kind == "Relative" and has_start:
        return "RelativeWithStartSchedule"
    if has_start and not _is_datetime(schedule["startSchedule"]):
        return "InvalidDate"
    if schedule.get("chargingRateUnit") not in allowed_units:
        return "UnitNotAllowed"
    duration = schedule.get("duration")
    if duration is not None and (not _is_int(duration) or duration <= 0):
        return "InvalidDuration"
    min_rate = schedule.get("minChargingRate")
    if min_rate is not None and not _is_number(min_rate):
        return "InvalidChargingSchedule"
    periods = schedule.get("chargingSchedulePeriod")
    if not isinstance(periods, list) or not periods:
        return "NoPeriods"
    if len(periods) > max_periods:
        return "TooManyPeriods"
    previous_start: int | None = None
    for period in periods:
        if not isinstance(period, dict):
            return "InvalidPeriod"
        start_period, limit = period.get("startPeriod"), period.get("limit")
        if not _is_int(start_period):
            return "InvalidPeriod"
        reason = _period_reason(period, operation_modes)
        if reason is not None:
            return reason
        if previous_start is None and start_period != 0:
            return "FirstStartPeriodNotZero"
        if previous_start is not None and start_period <= previous_start:
            return "StartPeriodsNotIncreasing"
        previous_start = start_period
        phases = period.get("numberPhases")
        if phases is not None and (not _is_int(phases) or phases not in (1, 2, 3)):
            return "InvalidNumberPhases"
        if limit is not None and round(limit, 1) != limit:
            return "LimitTooManyDecimals"
    return None


def validate_profile(
    profile: dict,
    *,
    evse_id: int,
    allowed_units: set[str],
    max_stack_level: int,
    max_periods: int,
    active_transaction_id: str | None,
    operation_modes: frozenset[str] | None = None,
) -> str | None:
    """None if a station would accept this SetChargingProfile, else a short reason code.

    The codes are listed in `REJECT_REASONS`. Checks what a station can check on its own;
    replacing a profile with the same id or refusing a second TxProfile on the same stackLevel
    for one transaction needs the installed set and is left to the caller. `operation_modes`:
    the OCPP 2.1 modes the station supports (None: 2.0.1/1.6, every period needs a `limit`).
    """
    if not isinstance(profile, dict):
        return "NotAnObject"
    if not _is_int(evse_id) or evse_id < 0:
        return "InvalidEvseId"
    if not _is_int(profile.get("id")):
        return "InvalidId"
    stack_level = profile.get("stackLevel")
    if not _is_int(stack_level) or stack_level < 0:
        return "InvalidStackLevel"
    purpose = profile.get("chargingProfilePurpose")
    if purpose not in PURPOSES:
        return "UnknownPurpose"
    kind = profile.get("chargingProfileKind")
    if kind not in KINDS:
        return "UnknownKind"
    if purpose == EXTERNAL_CONSTRAINTS:
        return "ExternalConstraintsNotAllowed"
    if stack_level > max_stack_level:
        return "StackLevelTooHigh"
    if purpose == STATION_MAX:
        if evse_id != 0:
            return "StationMaxNotOnEvse0"
        if kind == "Relative":
            return "StationMaxRelative"
    if purpose == TX_PROFILE:
        if evse_id == 0:
            return "TxProfileNeedsEvse"
        if active_transaction_id is None:
            return "NoActiveTransaction"
        if "transactionId" not in profile:
            return "MissingTransactionId"
        if profile["transactionId"] != active_transaction_id:
            return "TransactionIdMismatch"
    elif "transactionId" in profile:
        return "TransactionIdNotAllowed"
    if kind == "Recurring" and profile.get("recurrencyKind") not in RECURRENCE_S:
        return "MissingRecurrencyKind"
    for field in ("validFrom", "validTo"):
        if field in profile and not _is_datetime(profile[field]):
            return "InvalidDate"
    if ("validFrom" in profile and "validTo" in profile
            and parse_datetime(profile["validTo"]) <= parse_datetime(profile["validFrom"])):
        return "ValidToNotAfterValidFrom"
    schedules = profile.get("chargingSchedule")
    if not isinstance(schedules, list) or not 1 <= len(schedules) <= 3:
        return "InvalidChargingSchedule"
    for schedule in schedules:
        reason = _schedule_reason(schedule, kind, allowed_units, max_periods, operation_modes)
        if reason is not None:
            return reason
    return None


# ---------------------------------------------------------------------------------------------
# OCPP 1.6 profiles
# ---------------------------------------------------------------------------------------------

V16_PURPOSES = {V16_STATION_MAX: STATION_MAX, TX_DEFAULT: TX_DEFAULT, TX_PROFILE: TX_PROFILE}
_V16_FIELDS = ("stackLevel", "chargingProfileKind", "recurrencyKind", "validFrom", "validTo")


def profile_from_v16(
    profile: object, *, running: tuple[str, int | None] | None
) -> dict | str:
    """A 1.6 ``csChargingProfiles`` in the 2.0.1 form the rest of this module reads, or a reason code.

    `running`: (internal id, central-system integer id or None while StartTransaction is
    unanswered) of the transaction on the target connector, None without one. A TxProfile's
    integer ``transactionId`` must be that transaction's; without one it binds to it (1.6
    makes the field optional). Validate the result with `validate_profile`.
    """
    if not isinstance(profile, dict):
        return "NotAnObject"
    purpose = V16_PURPOSES.get(profile.get("chargingProfilePurpose"))  # type: ignore[arg-type]
    if purpose is None:
        return "UnknownPurpose"
    schedule = profile.get("chargingSchedule")
    if not isinstance(schedule, dict):
        return "InvalidChargingSchedule"
    profile_id = profile.get("chargingProfileId")
    out: dict = {"id": profile_id, "chargingProfilePurpose": purpose,
                 "chargingSchedule": [{"id": profile_id if _is_int(profile_id) else 0, **schedule}]}
    out.update({key: profile[key] for key in _V16_FIELDS if key in profile})
    if purpose == TX_PROFILE:
        if running is None:
            return "NoActiveTransaction"
        given = profile.get("transactionId")
        if given is not None and given != running[1]:
            return "TransactionIdMismatch"
        out["transactionId"] = running[0]
    elif "transactionId" in profile:
        return "TransactionIdNotAllowed"
    return out


def v16_replaces(installed: InstalledProfile, evse_id: int, profile: dict) -> bool:
    """Does installing `profile` (2.0.1 form, from `profile_from_v16`) on `evse_id` replace `installed`?

    OCPP 1.6: the same id, or the same stackLevel and purpose on the same connector.
    """
    other = installed.profile
    if other.get("id") == profile.get("id"):
        return True
    return (installed.evse_id == evse_id and other.get("stackLevel") == profile.get("stackLevel")
            and other.get("chargingProfilePurpose") == profile.get("chargingProfilePurpose"))
