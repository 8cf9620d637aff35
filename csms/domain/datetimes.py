"""OCPP date-times: one canonical text form, and the instant it names.

The official schemas accept RFC 3339 date-times in forms Python's and SQLite's date functions
do not all read: lowercase ``t``/``z``, ``+hhmm`` offsets, a leap second (``:60``). Every
date-time is normalised once, where it enters, so every reader (SQLite's ``julianday``, Redis
scores, ``datetime.fromisoformat``) sees the same text and the same instant:

- ``t``/``z`` become ``T``/``Z``; ``+hhmm`` becomes ``+hh:mm``; no offset means UTC (``Z``);
- a leap second ``hh:mm:60[.f]`` becomes ``hh:mm:59.999999``: the last instant of that minute
  Python can represent, so the order of events is kept;
- a date-time that names no instant in years 0001-9999 (UTC) is refused (``ValueError``).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

# The form every reader takes as it is: upper-case T and Z, a colon in the offset, seconds < 60.
_CANONICAL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:[0-5]\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)\Z")
_PARTS = re.compile(r"(?P<date>\d{4}-\d\d-\d\d)[Tt](?P<hm>\d\d:\d\d):(?P<s>\d\d)(?P<frac>\.\d+)?"
                    r"(?P<zone>[Zz]|[+-]\d\d:?\d\d)?\Z")


class BadDateTime(ValueError):
    """A date-time that cannot be stored as an instant."""


def normalise(text: object) -> str:
    """The canonical form of an RFC 3339 date-time; BadDateTime if it names no representable instant."""
    if not isinstance(text, str):
        raise BadDateTime(f"expected an RFC 3339 date-time string, got {text!r}")
    if _CANONICAL.match(text):
        instant(text)  # a calendar date and a representable instant?
        return text
    m = _PARTS.match(text)
    if m is None:
        raise BadDateTime(f"{text!r} is not an ISO 8601 date-time (RFC 3339)")
    seconds, frac = m["s"], m["frac"] or ""
    if seconds == "60":
        seconds, frac = "59", ".999999"
    zone = (m["zone"] or "Z").upper()  # no offset: UTC
    if len(zone) == 5:  # +hhmm
        zone = f"{zone[:3]}:{zone[3:]}"
    out = f"{m['date']}T{m['hm']}:{seconds}{frac}{zone}"
    instant(out)  # refuses what names no instant
    return out


def is_canonical(text: str) -> bool:
    """Cheap, for a date-time the schema's ``date-time`` format already accepted (it checked the
    shape and the calendar date): is it in canonical form, in a year no offset can push out of
    range? :func:`normalise` checks any text completely."""
    return (text[10:11] == "T" and (text[-1:] == "Z" or text[-3:-2] == ":") and text[17:19] != "60"
            and not text.startswith(_EDGE_YEARS))


_EDGE_YEARS = ("0000", "0001-01-01", "9999-12-31")


def instant(text: str) -> datetime:
    """The UTC instant of a canonical date-time; BadDateTime if there is none in years 0001-9999."""
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise BadDateTime(f"{text!r} names no instant in the years 0001-9999") from None


def parse(text: str) -> datetime:
    """The instant of any accepted date-time text (also rows stored before normalisation)."""
    return instant(normalise(text))
