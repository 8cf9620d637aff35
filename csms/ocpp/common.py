"""Small helpers every version's handlers share."""

from __future__ import annotations

from datetime import datetime, timezone


def now() -> datetime:
    return datetime.now(timezone.utc)


def ocpp_time(dt: datetime | None = None) -> str:
    """An OCPP date-time: UTC, millisecond precision, 'Z' suffix (what the widest range of stations parses)."""
    dt = (dt or now()).astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
