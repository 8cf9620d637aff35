"""ISP arithmetic of UFTP messages: a period (local day), a time zone and an ISP duration number
the day's ISPs from 1 (96 of 15 minutes on most days, 92 and 100 on the daylight-saving days)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DURATION_RE = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$")


class IspError(ValueError):
    """A period, time zone, ISP duration or ISP number that does not make sense."""


def isp_seconds(duration: str) -> int:
    """Seconds of an ISP duration such as PT15M; it must divide an hour into whole ISPs."""
    match = _DURATION_RE.match(duration.strip())
    if not match or not any(match.groups()):
        raise IspError(f"ISP-Duration {duration!r} is not a duration in hours/minutes/seconds (e.g. PT15M)")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if not 0 < total <= 3600 or 3600 % total:
        raise IspError(f"ISP-Duration {duration!r} must divide an hour into whole ISPs")
    return total


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise IspError(f"unknown TimeZone {name!r}") from None


def _midnight(period: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(period, datetime.min.time(), tzinfo=tz).astimezone(UTC)


def isps_in_day(period: date, tz: ZoneInfo, isp_s: int) -> int:
    span = _midnight(period + timedelta(days=1), tz) - _midnight(period, tz)
    return int(span.total_seconds()) // isp_s


def isp_bounds(period: date, tz: ZoneInfo, isp_s: int, number: int) -> tuple[datetime, datetime]:
    """[start, end) in UTC of ISP ``number`` of the day (the first is 1)."""
    if not 1 <= number <= isps_in_day(period, tz, isp_s):
        raise IspError(f"ISP {number} is not in {period} ({isps_in_day(period, tz, isp_s)} ISPs that day)")
    start = _midnight(period, tz) + timedelta(seconds=isp_s * (number - 1))
    return start, start + timedelta(seconds=isp_s)
