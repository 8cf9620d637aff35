"""A station's installed charging profiles: accept/reject, clear, report, and the applied limit.

Stacking maths is shared with the central system (`profiles.composite`); this module adds what
needs the station's installed set (replace by id, duplicate stack levels), the model's quirks
(apply delay, V2G capability) and a per-EVSE cache so the per-second limit lookup stays cheap.
Profiles are held in the OCPP 2.0.1 form whatever the station's version: the version layer
(`simulators.versions`) maps 1.6 profiles onto it and says which rules differ (`ProfileRules`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta

from profiles.composite import (
    InstalledProfile,
    Period,
    Unit,
    composite_schedule,
    parse_datetime,
    v16_replaces,
    validate_profile,
)
from simulators.models import StationModel

_HORIZON_S = 3600


@dataclass
class _Cache:
    key: tuple
    until: datetime
    starts: list[datetime]
    periods: list[Period]


@dataclass(frozen=True)
class ProfileRules:
    """What an OCPP version changes about installing a profile."""

    operation_modes: frozenset[str] | None = None  # OCPP 2.1: the modes accepted (None: no modes)
    replace_same_stack: bool = False  # OCPP 1.6: same stackLevel + purpose + connector replaces
    max_installed: int | None = None  # OCPP 1.6 MaxChargingProfilesInstalled
    negative_limits: bool = False  # the legacy "negative limit = discharge" convention
    negative_setpoints: bool = False  # OCPP 2.1 discharge setpoints / dischargeLimit < 0


class ProfileStore:
    """Installed profiles of one station, in amps internally (per phase, signed)."""

    def __init__(self, model: StationModel, evse_ids: list[int], rules: ProfileRules | None = None) -> None:
        self.model = model
        self.evse_ids = evse_ids
        self.rules = rules or ProfileRules(negative_limits=model.v2g)
        self.installed: list[InstalledProfile] = []
        self.pending: list[InstalledProfile] = []  # accepted, waiting for the apply delay
        self._cache: dict[int, _Cache] = {}
        self.version = 0

    # --- SetChargingProfile -----------------------------------------------------------------

    def set_profile(self, evse_id: int, profile: dict, now: datetime,
                    active_transaction_id: str | None) -> tuple[str, str | None]:
        """Returns (status, reasonCode) as a station answers SetChargingProfile."""
        if evse_id != 0 and evse_id not in self.evse_ids:
            return "Rejected", "UnknownEvse"
        rules = self.rules
        reason = validate_profile(profile, evse_id=evse_id, allowed_units=set(self.model.rate_units),
                                  max_stack_level=self.model.max_stack_level,
                                  max_periods=self.model.periods_per_schedule,
                                  active_transaction_id=active_transaction_id,
                                  operation_modes=rules.operation_modes)
        if reason is not None:
            return "Rejected", reason
        if not rules.negative_limits and _has_negative_limit(profile):
            return "Rejected", "DischargeNotSupported"
        if _has_negative_limit(profile) and profile["chargingProfilePurpose"] == "ChargingStationMaxProfile":
            return "Rejected", "NegativeStationMax"
        if not rules.negative_setpoints and _has_discharge_setpoint(profile):
            return "Rejected", "DischargeNotSupported"
        if rules.replace_same_stack:
            def replaced(p: InstalledProfile) -> bool:
                return v16_replaces(p, evse_id, profile)
        else:
            if self._duplicate(evse_id, profile):
                return "Rejected", "DuplicateStackLevel"

            def replaced(p: InstalledProfile) -> bool:
                return p.profile["id"] == profile["id"]
        kept = sum(1 for p in self.installed + self.pending if not replaced(p))
        if rules.max_installed is not None and kept >= rules.max_installed:
            return "Rejected", "TooManyProfiles"
        self._remove(replaced)
        # whole seconds, like a station's RTC: a GetCompositeSchedule in the same second sees it
        effective = (now + timedelta(seconds=self.model.profile_apply_delay_s)).replace(microsecond=0)
        entry = InstalledProfile(evse_id=evse_id, profile=profile, received_at=effective)
        (self.pending if self.model.profile_apply_delay_s > 0 else self.installed).append(entry)
        self._changed()
        return "Accepted", None

    def _duplicate(self, evse_id: int, profile: dict) -> bool:
        for p in self.installed + self.pending:
            other = p.profile
            if (p.evse_id == evse_id and other["id"] != profile["id"]
                    and other["stackLevel"] == profile["stackLevel"]
                    and other["chargingProfilePurpose"] == profile["chargingProfilePurpose"]
                    and other.get("transactionId") == profile.get("transactionId")
                    and _overlap(other, profile)):
                return True
        return False

    # --- Clear / Get ----------------------------------------------------------------------------

    def clear(self, profile_id: int | None, criteria: dict | None) -> int:
        """Remove matching profiles; returns how many were removed."""
        criteria = criteria or {}

        def matches(p: InstalledProfile) -> bool:
            if profile_id is not None and p.profile["id"] != profile_id:
                return False
            if "evseId" in criteria and p.evse_id != criteria["evseId"]:
                return False
            if "chargingProfilePurpose" in criteria and \
                    p.profile["chargingProfilePurpose"] != criteria["chargingProfilePurpose"]:
                return False
            return not ("stackLevel" in criteria and p.profile["stackLevel"] != criteria["stackLevel"])

        removed = self._remove(matches)
        if removed:
            self._changed()
        return removed

    def clear_transaction(self, transaction_id: str) -> None:
        """TxProfiles die with their transaction."""
        if self._remove(lambda p: p.profile.get("transactionId") == transaction_id):
            self._changed()

    def query(self, evse_id: int | None, criteria: dict) -> dict[int, list[dict]]:
        """Installed profiles grouped by EVSE, filtered as GetChargingProfiles asks."""
        ids = criteria.get("chargingProfileId")
        sources = criteria.get("chargingLimitSource")
        out: dict[int, list[dict]] = {}
        if sources is not None and "CSO" not in sources:
            return out
        for p in self.installed + self.pending:
            if evse_id is not None and p.evse_id != evse_id:
                continue
            if ids and p.profile["id"] not in ids:
                continue
            if "chargingProfilePurpose" in criteria and \
                    p.profile["chargingProfilePurpose"] != criteria["chargingProfilePurpose"]:
                continue
            if "stackLevel" in criteria and p.profile["stackLevel"] != criteria["stackLevel"]:
                continue
            out.setdefault(p.evse_id, []).append(p.profile)
        return out

    # --- What applies -----------------------------------------------------------------------------

    def promote(self, now: datetime) -> bool:
        """Move profiles whose apply delay has passed into force; True if anything changed."""
        ready = [p for p in self.pending if p.received_at <= now]
        if not ready:
            return False
        self.pending = [p for p in self.pending if p.received_at > now]
        self.installed.extend(ready)
        self._changed()
        return True

    def next_promotion(self) -> datetime | None:
        return min((p.received_at for p in self.pending), default=None)

    def schedule(self, evse_id: int, start: datetime, duration_s: int, unit: str,
                 transaction_id: str | None, transaction_start: datetime | None) -> list[Period]:
        max_limit = self.model.max_current_a
        if unit == "W":
            max_limit = self.model.max_current_a * self.model.phases * 230.0
        if unit not in ("A", "W"):
            raise ValueError(f"unit must be 'A' or 'W', got {unit!r}")
        rate_unit: Unit = "W" if unit == "W" else "A"
        return composite_schedule(self.installed, evse_id=evse_id, start=start, duration_s=duration_s, unit=rate_unit,
                                  max_limit=max_limit, transaction_id=transaction_id,
                                  transaction_start=transaction_start, default_phases=self.model.phases)

    def limit_a(self, evse_id: int, now: datetime, transaction_id: str | None,
                transaction_start: datetime | None) -> tuple[float, int]:
        """(per-phase amps, phases) in force on `evse_id` at `now`, from a cached hour of schedule."""
        period = self.target_a(evse_id, now, transaction_id, transaction_start)
        return period.limit, period.number_phases

    def target_a(self, evse_id: int, now: datetime, transaction_id: str | None,
                 transaction_start: datetime | None) -> Period:
        """The period in force on `evse_id` at `now` in amps (limit, phases, 2.1 mode and setpoint)."""
        key = (self.version, transaction_id, transaction_start)
        cache = self._cache.get(evse_id)
        if cache is None or cache.key != key or not cache.starts[0] <= now < cache.until:
            periods = self.schedule(evse_id, now, _HORIZON_S, "A", transaction_id, transaction_start)
            cache = _Cache(key, now + timedelta(seconds=_HORIZON_S), [p.start for p in periods], periods)
            self._cache[evse_id] = cache
        index = bisect.bisect_right(cache.starts, now) - 1
        return cache.periods[max(0, index)]

    def next_change(self, evse_id: int, now: datetime, transaction_id: str | None,
                    transaction_start: datetime | None) -> datetime | None:
        """When the limit on `evse_id` may next change after `now` (None: not within the cached hour)."""
        self.limit_a(evse_id, now, transaction_id, transaction_start)
        cache = self._cache[evse_id]
        index = bisect.bisect_right(cache.starts, now)
        return cache.starts[index] if index < len(cache.starts) else cache.until

    def _remove(self, predicate) -> int:
        before = len(self.installed) + len(self.pending)
        self.installed = [p for p in self.installed if not predicate(p)]
        self.pending = [p for p in self.pending if not predicate(p)]
        return before - len(self.installed) - len(self.pending)

    def _changed(self) -> None:
        self.version += 1

    def __len__(self) -> int:
        return len(self.installed) + len(self.pending)


_SCHEDULE_REASONS = {"InvalidChargingSchedule", "MissingStartSchedule", "RelativeWithStartSchedule", "InvalidDuration",
                     "NoPeriods", "TooManyPeriods", "InvalidPeriod", "FirstStartPeriodNotZero",
                     "StartPeriodsNotIncreasing", "InvalidNumberPhases", "LimitTooManyDecimals", "InvalidDate"}
_REASON_CODES = {"UnitNotAllowed": "UnsupportedRateUnit", "StackLevelTooHigh": "InvalidStackLevel",
                 "InvalidStackLevel": "InvalidStackLevel", "NoActiveTransaction": "TxNotFound",
                 "TransactionIdMismatch": "TxNotFound", "MissingTransactionId": "TxNotFound",
                 "DuplicateStackLevel": "DuplicateProfile", "DischargeNotSupported": "InvalidValue",
                 "NegativeStationMax": "InvalidValue", "UnknownEvse": "UnknownEvse",
                 "UnsupportedOperationMode": "UnsupportedParam", "MissingSetpoint": "InvalidSchedule",
                 "NegativeLimit": "InvalidValue", "PositiveDischargeLimit": "InvalidValue",
                 "TooManyProfiles": "TooManyProfiles"}


def status_info(reason: str) -> dict:
    """statusInfo for a rejection: a short reasonCode (the schema allows 20 characters) + the detail."""
    code = _REASON_CODES.get(reason) or ("InvalidSchedule" if reason in _SCHEDULE_REASONS else "InvalidProfile")
    return {"reasonCode": code, "additionalInfo": reason}


def _periods(profile: dict):
    for schedule in profile["chargingSchedule"]:
        yield from schedule["chargingSchedulePeriod"]


def _has_negative_limit(profile: dict) -> bool:
    return any(period.get("limit", 0) < 0 for period in _periods(profile))


def _has_discharge_setpoint(profile: dict) -> bool:
    """An OCPP 2.1 discharge: a negative setpoint or a dischargeLimit below 0."""
    return any(period.get("setpoint", 0) < 0 or period.get("dischargeLimit", 0) < 0 for period in _periods(profile))


def _overlap(a: dict, b: dict) -> bool:
    """Do two profiles' validity windows overlap (absent bounds are open-ended)?"""
    a_from = parse_datetime(a["validFrom"]) if "validFrom" in a else None
    b_from = parse_datetime(b["validFrom"]) if "validFrom" in b else None
    a_to = parse_datetime(a["validTo"]) if "validTo" in a else None
    b_to = parse_datetime(b["validTo"]) if "validTo" in b else None
    if a_to is not None and b_from is not None and a_to <= b_from:
        return False
    return not (b_to is not None and a_from is not None and b_to <= a_from)
