"""How both store backends write values as text (UTC ISO 8601 times, compact JSON), and the input
checks they share, so both refuse the same things with the same words (docs/storage.md, "Odd input")."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson

from csms.domain.datetimes import BadDateTime, parse
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
