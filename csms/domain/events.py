"""Typed domain events, published on the bus after the station got its answer.

Each event is a frozen dataclass with a ``kind`` ("transaction.started", "grid.limit" ...):
subscribers pick events by kind prefix (the operator API's live stream, ``csms tail``) or by
type (the grid controller). :meth:`Event.data` is the event's payload as the live stream shows it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

from csms.domain.meter import Reading

#: Fields every event has; :meth:`Event.data` leaves them out (the stream sends them apart).
_ENVELOPE = frozenset({"station_id", "at"})


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something that happened: which station (None for grid-wide events) and when."""

    KIND: ClassVar[str] = "event"
    station_id: str | None = None
    at: datetime = field(default_factory=utc_now)

    @property
    def kind(self) -> str:
        return self.KIND

    def data(self) -> dict[str, Any]:
        """The event's own fields (without station and time), as the live stream shows them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _ENVELOPE}


# Stations ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class StationConnected(Event):
    KIND: ClassVar[str] = "station.connected"
    remote: str = ""
    accepted: bool = False
    subprotocol: str = ""  # the OCPP version negotiated, e.g. "ocpp2.1"
    #: The same socket, announced again after its node's lease had lapsed and a sweep had released
    #: it (with several nodes): the station never went away, so what it holds is what it was sent.
    resumed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StationDisconnected(Event):
    KIND: ClassVar[str] = "station.disconnected"


@dataclass(frozen=True, slots=True, kw_only=True)
class StationBooted(Event):
    KIND: ClassVar[str] = "station.booted"
    status: str  # Accepted | Pending | Rejected (the answer the station got)
    vendor: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorStatusChanged(Event):
    KIND: ClassVar[str] = "connector.status"
    evse_id: int
    connector_id: int
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StationReport(Event):
    """One part of a device-model report (NotifyReport)."""

    KIND: ClassVar[str] = "station.report"
    request_id: int
    seq_no: int
    to_be_continued: bool
    variables: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StationMonitoringEvent(Event):
    """Device-model events (NotifyEvent)."""

    KIND: ClassVar[str] = "station.event"
    events: list[dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class StationNotification(Event):
    """A status notification kept as it arrived (firmware, logs, displays, reservations ...)."""

    action: str
    payload: dict[str, Any]

    @property
    def kind(self) -> str:
        return f"station.{self.action}"

    def data(self) -> dict[str, Any]:
        return {"payload": self.payload}


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityEvent(Event):
    """A security event reported by a station, or recorded by the central system (``source``)."""

    KIND: ClassVar[str] = "station.security_event"
    type: str
    tech_info: str | None = None
    source: str | None = None  # "csms" when the central system noticed it (e.g. a refused login)

    def data(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "tech_info": self.tech_info}
        if self.source is not None:
            out["source"] = self.source
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorAction(Event):
    """An operator changed a station's registration (registered, blocked, unblocked, unregistered)."""

    action: str
    when: str | None = None  # ISO time, for "unregistered" (the record is gone)

    @property
    def kind(self) -> str:
        return f"station.{self.action}"

    def data(self) -> dict[str, Any]:
        return {} if self.when is None else {"at": self.when}


# Transactions and energy ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionChanged(Event):
    """A transaction event stored for the first time (retransmissions are not published)."""

    event_type: str  # Started | Updated | Ended
    transaction_id: str
    evse_id: int | None = None
    seq_no: int = 0
    trigger_reason: str | None = None
    charging_state: str | None = None
    stopped_reason: str | None = None
    offline: bool = False
    timestamp: str = ""
    reading: Reading | None = None
    id_token: str | None = None
    vehicle_ids: tuple[str, ...] = ()  # keys the car is known by (csms/domain/vehicles.py)

    @property
    def kind(self) -> str:
        return f"transaction.{self.event_type.lower()}"

    def data(self) -> dict[str, Any]:
        return {"transaction_id": self.transaction_id, "evse_id": self.evse_id, "seq_no": self.seq_no,
                "trigger_reason": self.trigger_reason, "charging_state": self.charging_state,
                "stopped_reason": self.stopped_reason, "offline": self.offline, "timestamp": self.timestamp,
                "reading": self.reading, "id_token": self.id_token, "vehicle_ids": list(self.vehicle_ids)}


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterValuesReceived(Event):
    KIND: ClassVar[str] = "meter.values"
    evse_id: int
    reading: Reading | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EvChargingNeeds(Event):
    """What the car asked for (ISO 15118 through NotifyEVChargingNeeds); ``needs`` is the
    version's chargingNeeds object, read by :func:`csms.grid.model.sessions.need_from_ev`."""

    KIND: ClassVar[str] = "ev.needs"
    evse_id: int
    needs: dict[str, Any]
    max_schedule_tuples: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EvChargingSchedule(Event):
    KIND: ClassVar[str] = "ev.schedule"
    evse_id: int
    schedule: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargingLimitSet(Event):
    """A limit set at the station by another source (NotifyChargingLimit)."""

    KIND: ClassVar[str] = "station.charging_limit"
    evse_id: int | None
    limit: dict[str, Any]
    schedules: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargingLimitCleared(Event):
    KIND: ClassVar[str] = "station.charging_limit_cleared"
    evse_id: int | None
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargingProfilesReported(Event):
    KIND: ClassVar[str] = "station.charging_profiles"
    request_id: int
    evse_id: int
    profiles: list[dict[str, Any]]
    to_be_continued: bool


# Grid -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class LimitChanged(Event):
    """The limit in force of a capacity group changed (or a signal was applied)."""

    KIND: ClassVar[str] = "grid.limit"
    transformer_id: str
    limit_kw: float
    source: str
    signal_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SafeModeChanged(Event):
    KIND: ClassVar[str] = "grid.safe_mode"
    transformer_id: str
    on: bool
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalRejected(Event):
    KIND: ClassVar[str] = "grid.signal_rejected"
    transformer_id: str
    reason: str
    signal_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfilePushed(Event):
    """The outcome of one TxProfile push of the grid controller."""

    KIND: ClassVar[str] = "grid.push"
    evse_id: int
    status: str
    limit: float | None
    unit: str
    limit_a: float | None
    trigger: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupPlanned(Event):
    """One capacity group after a cut or plan went out (figures for the dashboard)."""

    KIND: ClassVar[str] = "grid.plan"
    transformer: str
    limit_kw: float
    limit_source: str
    planned_kw: float
    base_load_kw: float
    sessions: int
    infeasible: bool
    trigger: str
    pushed: int
    skipped: int
    accepted: int
    superseded: int
    reasons: list[str] | None = None

    def data(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _ENVELOPE}
        if out["reasons"] is None:
            del out["reasons"]
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationFinding(Event):
    """A station or car not doing what it was told (or doing it again): see csms.grid.effects.verify."""

    KIND: ClassVar[str] = "grid.finding"
    finding: str  # rejected | overdraw | no_resume | resumed
    evse_id: int
    transaction_id: str
    detail: str
    fixed_kw: float | None = None
