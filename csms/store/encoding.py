"""How both store backends write values as text: UTC ISO 8601 times and compact JSON."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(timezone.utc).isoformat()


def from_iso(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


def to_json(v: Any) -> str:
    return orjson.dumps(v).decode()
