"""The store interface every backend implements.

Writes return only after the data is durable (the caller then acknowledges to the station);
"persist before you acknowledge" is the contract of every ``record_*``/``put_*`` method.
Payload-shaped data is kept as the OCPP JSON it arrived as, so nothing a station said is lost
to a schema we chose too early.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class StationRecord:
    station_id: str
    registration: str = "Unknown"  # Accepted | Pending | Rejected | Blocked | Unknown (never registered)
    registered: bool = False  # added by an operator (registered_only policy admits only these)
    vendor: str | None = None
    model: str | None = None
    serial_number: str | None = None
    firmware_version: str | None = None
    boot_reason: str | None = None
    last_boot: datetime | None = None
    last_seen: datetime | None = None
    connected: bool = False
    security_profile: int = 0
    password_hash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class IdTokenRecord:
    id_token: str
    type: str = "ISO14443"
    status: str = "Accepted"  # Accepted | Blocked | Expired | Invalid ...
    expiry: datetime | None = None
    group_id: str | None = None


@dataclass
class TransactionRecord:
    station_id: str
    transaction_id: str
    evse_id: int | None
    connector_id: int | None
    id_token: str | None
    started_at: datetime | None
    ended_at: datetime | None
    active: bool
    charging_state: str | None
    stopped_reason: str | None
    last_seq_no: int
    energy_wh: float | None  # last Energy.Active.Import.Register seen
    first_seen_as: str  # Started | Updated | Ended (Updated: we missed its start, e.g. after a reconnect)


class Store(abc.ABC):
    """Durable state of the central system."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush everything pending and release resources."""

    # Stations ---------------------------------------------------------------------------------
    @abc.abstractmethod
    async def get_station(self, station_id: str) -> StationRecord | None: ...

    @abc.abstractmethod
    async def list_stations(self) -> list[StationRecord]: ...

    @abc.abstractmethod
    async def put_station(self, station: StationRecord) -> None:
        """Insert or replace the whole station record."""

    @abc.abstractmethod
    async def delete_station(self, station_id: str) -> bool: ...

    @abc.abstractmethod
    async def record_boot(self, station_id: str, payload: dict[str, Any], registration: str, at: datetime) -> None: ...

    @abc.abstractmethod
    async def set_connection_state(self, station_id: str, connected: bool, at: datetime) -> None: ...

    @abc.abstractmethod
    async def touch_stations(self, last_seen: dict[str, datetime]) -> None:
        """Batch-update last-seen times (kept in memory on the hot path, flushed periodically)."""

    # EVSEs and connectors ---------------------------------------------------------------------
    @abc.abstractmethod
    async def set_connector_status(self, station_id: str, evse_id: int, connector_id: int, status: str,
                                   at: datetime) -> None: ...

    @abc.abstractmethod
    async def list_connectors(self, station_id: str) -> list[dict[str, Any]]: ...

    # Id tokens --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def get_id_token(self, id_token: str) -> IdTokenRecord | None: ...

    @abc.abstractmethod
    async def put_id_token(self, token: IdTokenRecord) -> None: ...

    @abc.abstractmethod
    async def list_id_tokens(self) -> list[IdTokenRecord]: ...

    @abc.abstractmethod
    async def delete_id_token(self, id_token: str) -> bool: ...

    # Transactions and meter values ------------------------------------------------------------
    @abc.abstractmethod
    async def record_transaction_event(self, station_id: str, payload: dict[str, Any],
                                       received_at: datetime) -> bool:
        """Store one TransactionEvent with its meter values; False if (station, tx, seqNo) was already stored."""

    @abc.abstractmethod
    async def record_meter_values(self, station_id: str, evse_id: int, meter_values: list[dict[str, Any]],
                                  received_at: datetime) -> None: ...

    @abc.abstractmethod
    async def get_transaction(self, station_id: str, transaction_id: str) -> TransactionRecord | None: ...

    @abc.abstractmethod
    async def list_transactions(self, *, station_id: str | None = None, active: bool | None = None,
                                since: datetime | None = None, until: datetime | None = None,
                                limit: int = 1000) -> list[TransactionRecord]: ...

    @abc.abstractmethod
    async def transaction_events(self, station_id: str, transaction_id: str) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def meter_samples(self, station_id: str, *, transaction_id: str | None = None,
                            evse_id: int | None = None, since: datetime | None = None,
                            limit: int = 100000) -> list[dict[str, Any]]:
        """Flat samples: timestamp, evse_id, transaction_id, measurand, phase, value, unit, context."""

    # Smart charging ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def record_ev_charging_needs(self, station_id: str, evse_id: int, payload: dict[str, Any],
                                       at: datetime) -> None: ...

    @abc.abstractmethod
    async def latest_ev_charging_needs(self, station_id: str, evse_id: int) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def record_charging_profile(self, station_id: str, evse_id: int, profile: dict[str, Any],
                                      status: str, status_info: dict[str, Any] | None, at: datetime) -> None:
        """A profile the CSMS sent and the station's verdict (Accepted / Rejected / timeout / error)."""

    @abc.abstractmethod
    async def list_charging_profiles(self, station_id: str) -> list[dict[str, Any]]: ...

    # Device model, events, commands -----------------------------------------------------------
    @abc.abstractmethod
    async def record_variables(self, station_id: str, variables: list[dict[str, Any]], at: datetime) -> None:
        """Each item: component, variable, attributeType, value (from NotifyReport / GetVariables / NotifyEvent)."""

    @abc.abstractmethod
    async def list_variables(self, station_id: str) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def record_security_event(self, station_id: str, type_: str, timestamp: str, tech_info: str | None,
                                    at: datetime) -> None: ...

    @abc.abstractmethod
    async def list_security_events(self, station_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def record_station_message(self, station_id: str, action: str, payload: dict[str, Any],
                                     at: datetime) -> None:
        """Notifications kept as they arrived (firmware/log status, charging limits, reports ...)."""

    @abc.abstractmethod
    async def list_station_messages(self, station_id: str, action: str | None = None,
                                    limit: int = 1000) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def record_command(self, station_id: str, action: str, request: dict[str, Any], outcome: str,
                             response: dict[str, Any] | None, sent_at: datetime, finished_at: datetime) -> None:
        """A CSMS-initiated call: outcome is 'result', 'callerror', 'timeout' or 'offline'."""

    @abc.abstractmethod
    async def list_commands(self, station_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]: ...
