"""The store as small interfaces, one per concern; every backend implements all of them.

Writes return only after the data is durable (the caller then acknowledges to the station):
"persist before you acknowledge" is the contract of every ``record_*``/``put_*`` method, except
the two records nobody acknowledges on (:class:`CommandLog`), which a backend may write behind.
Payload-shaped data is kept as the OCPP JSON it arrived as, so nothing a station said is lost
to a schema we chose too early. A part of the daemon is handed only the Protocols it uses; a new
backend (PostgreSQL ...) implements :class:`Store` and joins the contract suite
(tests/test_store_contract.py), which runs every test against every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

from csms.domain.meter import Sample
from csms.domain.records import BootInfo, IdTokenRecord, StationRecord, TransactionRecord
from csms.domain.transactions import TxEvent

#: How a CSMS-initiated call ended: the station answered (CALLRESULT or CALLERROR), it did not
#: answer in time, it was not connected, or the caller gave up (its own timeout, shutdown).
CommandOutcome = Literal["result", "callerror", "timeout", "offline", "cancelled"]


def check_limit(limit: int) -> int:
    """Every backend refuses the same bad ``limit`` of a list query, with the same words."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an integer >= 0, got {limit!r}")
    return limit


class StationStore(Protocol):
    """Stations, their connection state and connectors."""

    async def get_station(self, station_id: str) -> StationRecord | None: ...

    async def list_stations(self) -> list[StationRecord]: ...

    async def put_station(self, station: StationRecord) -> None:
        """Insert or replace the whole station record."""
        ...

    async def delete_station(self, station_id: str) -> bool: ...

    async def record_boot(self, station_id: str, boot: BootInfo, registration: str, at: datetime) -> None:
        """Insert or update the station with what it said at boot; keeps operator fields (registered, credentials)."""
        ...

    async def set_connection_state(self, station_id: str, connected: bool, at: datetime) -> None: ...

    async def touch_stations(self, last_seen: dict[str, datetime]) -> None:
        """Batch-update last-seen times (kept in memory on the hot path, flushed periodically)."""
        ...

    async def set_connector_status(self, station_id: str, evse_id: int, connector_id: int, status: str,
                                   at: datetime) -> None: ...

    async def list_connectors(self, station_id: str) -> list[dict[str, Any]]: ...


class IdTokenStore(Protocol):
    async def get_id_token(self, id_token: str) -> IdTokenRecord | None: ...

    async def put_id_token(self, token: IdTokenRecord) -> None: ...

    async def list_id_tokens(self) -> list[IdTokenRecord]: ...

    async def delete_id_token(self, id_token: str) -> bool: ...


class TransactionStore(Protocol):
    """Transactions, their events and the meter values."""

    async def record_transaction_event(self, station_id: str, event: TxEvent, received_at: datetime) -> bool:
        """Store one event with its meter values and fold it into the transaction's record with
        :func:`csms.domain.transactions.merge`, atomically; False if (station, transaction, seqNo)
        was already stored (nothing changes then, not even on another node sharing the store)."""
        ...

    async def record_meter_values(self, station_id: str, samples: Sequence[Sample], received_at: datetime) -> None:
        """Samples outside a transaction event (MeterValues), already checked (csms.domain.meter.flatten)."""
        ...

    async def get_transaction(self, station_id: str, transaction_id: str) -> TransactionRecord | None: ...

    async def list_transactions(self, *, station_id: str | None = None, active: bool | None = None,
                                since: datetime | None = None, until: datetime | None = None,
                                limit: int = 1000) -> list[TransactionRecord]: ...

    async def transaction_events(self, station_id: str, transaction_id: str) -> list[dict[str, Any]]: ...

    async def meter_samples(self, station_id: str, *, transaction_id: str | None = None,
                            evse_id: int | None = None, since: datetime | None = None,
                            limit: int = 100000) -> list[dict[str, Any]]:
        """Flat samples: timestamp, evse_id, transaction_id, measurand, phase, value, unit, context."""
        ...

    async def meter_bounds(self, transactions: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """For each (station, transaction): the flat samples (as :meth:`meter_samples`) that decide
        its registers and its latest reading, not all of them: every sample of an energy register
        (import, export; no phase) at that register's earliest and at its latest instant, and every
        sample at the transaction's latest timestamp (as text, as
        :func:`csms.domain.meter.latest_reading` takes it). A backend may add others (SQLite's
        instants are in milliseconds). One read for many transactions (a new grid leader's
        read-back of thousands, ~1,000 a call); a transaction without samples maps to []."""
        ...


class SmartChargingStore(Protocol):
    async def record_ev_charging_needs(self, station_id: str, evse_id: int, payload: dict[str, Any],
                                       at: datetime) -> None: ...

    async def latest_ev_charging_needs(self, station_id: str, evse_id: int) -> dict[str, Any] | None: ...

    async def latest_ev_charging_needs_many(self, evses: Sequence[tuple[str, int]]
                                            ) -> dict[tuple[str, int], dict[str, Any] | None]:
        """:meth:`latest_ev_charging_needs` of many (station, EVSE) in one read."""
        ...

    async def list_charging_profiles(self, station_id: str, newest: int | None = None) -> list[dict[str, Any]]:
        """The profiles sent to the station and their answers, oldest first; ``newest``: only the last
        that many (a station's history grows with every push: readers that need the recent ones only
        must not read years of it)."""
        ...

    async def list_charging_profiles_many(self, station_ids: Sequence[str], newest: int
                                          ) -> dict[str, list[dict[str, Any]]]:
        """:meth:`list_charging_profiles` (the ``newest`` only) of many stations in one read."""
        ...


class DeviceModelStore(Protocol):
    async def record_variables(self, station_id: str, variables: list[dict[str, Any]], at: datetime) -> None:
        """Each item: component, variable, attributeType, value (from NotifyReport / GetVariables / NotifyEvent)."""
        ...

    async def list_variables(self, station_id: str) -> list[dict[str, Any]]: ...


class MessageLog(Protocol):
    """What stations reported that is kept as it arrived: security events and notifications."""

    async def record_security_event(self, station_id: str, type_: str, timestamp: str, tech_info: str | None,
                                    at: datetime) -> None: ...

    async def list_security_events(self, station_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]: ...

    async def record_station_message(self, station_id: str, action: str, payload: dict[str, Any],
                                     at: datetime) -> None:
        """Notifications kept as they arrived (firmware/log status, charging limits, reports ...)."""
        ...

    async def list_station_messages(self, station_id: str, action: str | None = None,
                                    limit: int = 1000) -> list[dict[str, Any]]: ...


class CommandLog(Protocol):
    """Records of what the central system sent: every command and every charging profile.

    Nobody acknowledges on these, and a fan-out of thousands of calls must not wait for as many
    commits, so a backend may write them behind: ``record_*`` may return before the record is
    durable, but it is committed in order with every later write, seen by every later read, and
    committed before :meth:`Lifecycle.close` returns. :meth:`flush` returns once everything
    recorded so far is durable.
    """

    async def record_command(self, station_id: str, action: str, request: dict[str, Any],
                             outcome: CommandOutcome, response: dict[str, Any] | None, sent_at: datetime,
                             finished_at: datetime) -> None: ...

    async def list_commands(self, station_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]: ...

    async def record_charging_profile(self, station_id: str, evse_id: int, profile: dict[str, Any],
                                      status: str, status_info: dict[str, Any] | None, at: datetime) -> None:
        """A profile the CSMS sent and the station's verdict (Accepted / Rejected / an error's class name)."""
        ...

    async def flush(self) -> None: ...


class DocumentStore(Protocol):
    """JSON documents the operations of OCPP 2.0.1 keep (local lists, firmware and log requests,
    certificates, monitors, customer information, display messages, reservations, tariff plans,
    session costs): one document per (scope, key), its shape decided by the domain
    (csms/domain/operations.py, csms/domain/tariffs.py); and durable counters for the ids the
    central system hands out (reservations, requests, messages)."""

    async def get_document(self, scope: str, key: str) -> dict[str, Any] | None: ...

    async def put_document(self, scope: str, key: str, document: dict[str, Any]) -> None:
        """Insert or replace the document."""
        ...

    async def delete_document(self, scope: str, key: str) -> bool: ...

    async def list_documents(self, scope: str, limit: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """(key, document) of a scope in key order, at most ``limit``."""
        ...

    async def next_number(self, name: str) -> int:
        """1, 2, 3 ... per name, never the same twice (also across restarts and nodes)."""
        ...


class Lifecycle(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None:
        """Flush everything pending and release resources."""
        ...


class Store(StationStore, IdTokenStore, TransactionStore, SmartChargingStore, DeviceModelStore, MessageLog,
            CommandLog, DocumentStore, Lifecycle, Protocol):
    """Durable state of the central system: what a backend implements."""
