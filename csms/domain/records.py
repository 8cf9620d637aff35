"""What the central system remembers about stations, id tokens and transactions."""

from __future__ import annotations

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
    export_wh: float = 0.0  # last Energy.Active.Export.Register seen (0: none, or a record from before)
    net_energy_wh: float | None = None  # import minus export over the transaction (None: no import reading)


@dataclass(frozen=True)
class BootInfo:
    """What a station says about itself when it boots (every version has these)."""

    vendor: str | None = None
    model: str | None = None
    serial_number: str | None = None
    firmware_version: str | None = None
    reason: str | None = None
