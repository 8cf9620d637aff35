"""A station runs its charging profiles on its own clock; these pure functions keep a schedule made on
ours in force on a clock that is off (a year behind, hours ahead, a few seconds slow).

* :func:`clock_offset_s` estimates "station clock minus ours" from the timestamps of its live messages.
  A message is stamped before it is sent and a queued one long before, so the smallest delay, i.e. the
  largest ``timestamp - received``, of the last few is the best estimate (as NTP's minimum-delay filter).
* :func:`anchored` moves an Absolute TxProfile onto that clock and lets its first period begin
  ``lead_s`` earlier, so a station whose clock is a little behind our estimate still finds it in force
  (otherwise it would fall back to its TxDefaultProfile until its clock caught up).
* :func:`relative` turns the first period of a TxProfile into a Relative profile: it holds from the
  transaction's start, whatever the clock says, until it is replaced. Used for the immediate cut.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

OFFSET_WINDOW = 5  # live messages considered
DEFAULT_LEAD_S = 60.0


def clock_offset_s(observations: Sequence[float], window: int = OFFSET_WINDOW) -> float | None:
    """Station clock minus ours (s) from ``timestamp - received_at`` of its messages, oldest first."""
    recent = [x for x in observations[-window:] if not math.isnan(x)]
    return max(recent) if recent else None


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _iso(at: datetime) -> str:
    utc = at.astimezone(UTC)
    return utc.isoformat(timespec="milliseconds" if utc.microsecond else "seconds").replace("+00:00", "Z")


def _copy(profile: dict[str, Any]) -> dict[str, Any]:
    """A copy of what :func:`anchored` and :func:`relative` change (schedules and their periods); the
    rest is shared. Not ``copy.deepcopy``: a wave copies 10,000 profiles, and deepcopy was most of it."""
    return {**profile, "chargingSchedule": [
        {**schedule, "chargingSchedulePeriod": [dict(period) for period in schedule["chargingSchedulePeriod"]]}
        for schedule in profile["chargingSchedule"]]}


@functools.lru_cache(maxsize=1024)
def _shifted(start: str, seconds: float) -> str:
    """``start`` (ISO 8601) moved by ``seconds``: a wave's profiles share a few starts and offsets."""
    return _iso(_parse(start) + timedelta(seconds=seconds))


def anchored(profile: dict[str, Any], offset_s: float, lead_s: float = DEFAULT_LEAD_S, *,
             in_place: bool = False) -> dict[str, Any]:
    """A copy of an Absolute profile whose schedule starts ``offset_s`` later (the station's clock) and
    whose first period already holds ``lead_s`` before that; later periods keep their instants.
    ``in_place``: change ``profile`` itself instead (its caller just built it; a wave anchors 30,000)."""
    if profile.get("chargingProfileKind") != "Absolute":
        raise ValueError(f"only Absolute profiles can be anchored, got {profile.get('chargingProfileKind')!r}")
    if lead_s < 0:
        raise ValueError(f"lead_s must be >= 0, got {lead_s}")
    lead = round(lead_s)
    out = profile if in_place else _copy(profile)
    for schedule in out["chargingSchedule"]:
        schedule["startSchedule"] = _shifted(schedule["startSchedule"], offset_s - lead)
        for n, period in enumerate(schedule["chargingSchedulePeriod"]):
            if n:
                period["startPeriod"] += lead
        if schedule.get("duration") is not None:
            schedule["duration"] += lead
    return out


def relative(profile: dict[str, Any]) -> dict[str, Any]:
    """A copy of a TxProfile holding its first period's limit from the transaction's start on, until
    replaced: no startSchedule, no duration, one period."""
    out = {**profile, "chargingProfileKind": "Relative", "chargingSchedule": []}
    for schedule in profile["chargingSchedule"]:
        copied = {k: v for k, v in schedule.items() if k not in ("startSchedule", "duration")}
        copied["chargingSchedulePeriod"] = [dict(schedule["chargingSchedulePeriod"][0], startPeriod=0)]
        out["chargingSchedule"].append(copied)
    return out
