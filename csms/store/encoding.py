"""How both store backends write values as text (UTC ISO 8601 times, compact JSON), and the input
checks they share, so both refuse the same things with the same words (docs/storage.md, "Odd input")."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import orjson

from csms.domain.datetimes import BadDateTime, parse
from csms.domain.records import TransactionRecord
from csms.domain.transactions import Registers
from csms.domain.values import int64


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(timezone.utc).isoformat()


def from_iso(s: str | None) -> datetime | None:
    """A stored time; rows written before date-times were normalised (``...t10:00:00z``) read too."""
    if s is None:
        return None
    try:
        return datetime.fromisoformat(s)
    except ValueError:
        try:
            return parse(s)
        except BadDateTime:
            return None  # never written since the store checks date-times; a reader must not fail on it


def to_json(v: Any) -> str:
    """Compact JSON; ValueError (nothing stored) for what the encoder cannot represent, e.g. nesting
    deeper than it allows or integers beyond 64 bits."""
    try:
        return orjson.dumps(v).decode()
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"cannot be stored as JSON: {exc}") from None


def connector_ids(evse_id: Any, connector_id: Any) -> tuple[int, int]:
    """EVSE and connector id of a status, both within 64 bits (ValueError otherwise)."""
    return int64(evse_id, "evse id"), int64(connector_id, "connector id")


def transaction_record(row: Mapping[str, Any], registers: Registers) -> TransactionRecord:
    """A transaction as every backend answers it, from its stored row (SQLite, PostgreSQL) or hash
    (Redis): the same fields, times parsed, ``registers`` already read the backend's way."""
    return TransactionRecord(
        station_id=row["station_id"], transaction_id=row["transaction_id"], evse_id=row.get("evse_id"),
        connector_id=row.get("connector_id"), id_token=row.get("id_token"), started_at=from_iso(row.get("started_at")),
        ended_at=from_iso(row.get("ended_at")), active=bool(row.get("active")), charging_state=row.get("charging_state"),
        stopped_reason=row.get("stopped_reason"), last_seq_no=row["last_seq_no"], energy_wh=row.get("energy_wh"),
        first_seen_as=row["first_seen_as"], export_wh=registers.export_register_wh, net_energy_wh=registers.net_wh)
