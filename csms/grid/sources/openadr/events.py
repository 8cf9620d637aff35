"""OpenADR 3 events to limit signals: pure functions, no I/O, the caller passes ``now``.

An event of the grid-aware charging (GAC) profile is a time series of import-capacity limits in kW
for the grid connection(s) named by its EAN-18 targets. :func:`parse_event` checks what the profile
asks (and what we need to obey it safely) and resolves the intervals to UTC start/end;
:func:`merge` folds every event of one program that concerns one capacity group into a single
schedule, the strictest value wherever events overlap; :func:`signal_payload` turns that schedule
into the limit signal the intake validates like any other. Both 3.0.1 targets (valuesMaps
``POWER_SERVICE_LOCATION`` / ``VEN_NAME``) and 3.1.0 targets (plain strings) are read.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

PAYLOAD_TYPE = "IMPORT_CAPACITY_LIMIT"
UNITS = "KW"
MAX_INTERVALS = 7 * 96  # the limit book's bound on one signal
_EAN18 = re.compile(r"^\d{18}$")
_DURATION = re.compile(r"^P(?=\d|T\d)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)([DW]))?"
                       r"(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")
# The spec writes "no end" as P9999Y; the GAC safe-mode event as PT0S.
_OPEN_ENDED = timedelta(days=365 * 1000)

Interval = tuple[datetime, datetime | None, float]  # [start, end) UTC; end None = open-ended


class EventError(ValueError):
    """An event we refuse; ``reason`` names the broken part."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ParsedEvent:
    event_id: str
    modified: str  # modificationDateTime as the VTN wrote it (tells an update)
    name: str | None
    eans: frozenset[str]
    intervals: tuple[Interval, ...]  # sorted, non-overlapping
    interval_ids: tuple[int, ...] = ()  # the event's id of each interval (same order)
    reports: tuple[tuple[str, str | None], ...] = ()  # (payloadType, units) the event asks to be reported

    def ended(self, now: datetime) -> bool:
        return all(end is not None and end <= now for _, end, _ in self.intervals)

    def to_record(self) -> dict[str, Any]:
        return {"id": self.event_id, "modified": self.modified, "name": self.name, "eans": sorted(self.eans),
                "intervals": [[s.isoformat(), None if e is None else e.isoformat(), kw] for s, e, kw in self.intervals],
                "interval_ids": list(self.interval_ids), "reports": [list(r) for r in self.reports]}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ParsedEvent:
        intervals = tuple((datetime.fromisoformat(s), None if e is None else datetime.fromisoformat(e), float(kw))
                          for s, e, kw in record["intervals"])
        return cls(str(record["id"]), str(record["modified"]), record.get("name"),
                   frozenset(str(e) for e in record["eans"]), intervals,
                   tuple(int(i) for i in record.get("interval_ids") or ()),
                   tuple((str(t), None if u is None else str(u)) for t, u in record.get("reports") or ()))


def parse_duration(text: Any, where: str) -> timedelta:
    """An ISO 8601 duration as the spec's pattern allows (years and months as 365 and 30 days)."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise EventError(f"{where}: not an ISO 8601 duration: {text!r}"[:200])
    years, months, days, unit, hours, minutes, seconds = match.groups()
    day_count = int(days or 0) * (7 if unit == "W" else 1) + int(years or 0) * 365 + int(months or 0) * 30
    try:
        return timedelta(days=day_count, hours=int(hours or 0), minutes=int(minutes or 0), seconds=float(seconds or 0))
    except OverflowError:
        raise EventError(f"{where}: duration {text!r} is out of range") from None


def parse_time(text: Any, where: str) -> datetime:
    if not isinstance(text, str):
        raise EventError(f"{where}: expected an ISO 8601 date-time, got {text!r}"[:200])
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise EventError(f"{where}: not an ISO 8601 date-time: {text!r}"[:200]) from None
    if at.tzinfo is None:
        raise EventError(f"{where}: needs a UTC offset: {text!r}")
    try:
        return at.astimezone(UTC)
    except OverflowError:
        raise EventError(f"{where}: out of range in UTC: {text!r}") from None


def targets_of(targets: Any) -> tuple[set[str], set[str] | None]:
    """(EAN-18 service locations, VEN names or None when not named) of 3.0.1 or 3.1.0 targets."""
    if targets is None:
        return set(), None
    if not isinstance(targets, list):
        raise EventError(f"targets: expected a list, got {type(targets).__name__}")
    eans: set[str] = set()
    vens: set[str] | None = None
    for i, target in enumerate(targets):
        if isinstance(target, str):  # 3.1.0: the strings are the service locations (GAC)
            eans.add(target)
        elif isinstance(target, dict) and isinstance(target.get("values"), list):
            values = {str(v) for v in target["values"]}
            if target.get("type") == "POWER_SERVICE_LOCATION":
                eans |= values
            elif target.get("type") == "VEN_NAME":
                vens = (vens or set()) | values
        else:
            raise EventError(f"targets[{i}]: expected a string or a valuesMap, got {target!r}"[:200])
    bad = sorted(e for e in eans if not _EAN18.match(e))
    if bad:
        raise EventError(f"targets: service locations must be EAN-18 codes, got {bad[:3]}")
    return eans, vens


def _value(interval: dict[str, Any], where: str) -> float:
    payloads = interval.get("payloads")
    if not isinstance(payloads, list) or len(payloads) != 1 or not isinstance(payloads[0], dict):
        raise EventError(f"{where}: exactly one payload required")
    payload = payloads[0]
    if payload.get("type") != PAYLOAD_TYPE:
        raise EventError(f"{where}: payload type must be {PAYLOAD_TYPE}, got {payload.get('type')!r}"[:200])
    values = payload.get("values")
    if not isinstance(values, list) or len(values) != 1:
        raise EventError(f"{where}: exactly one value required, got {values!r}"[:200])
    value = values[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise EventError(f"{where}: the limit must be a number (kW), got {value!r}"[:200])
    if value < 0:
        raise EventError(f"{where}: an import capacity limit must be >= 0 kW, got {value}")
    return float(value)


def _period(period: Any, where: str) -> tuple[datetime, timedelta | None]:
    """(start, duration or None for open-ended) of an intervalPeriod."""
    if not isinstance(period, dict):
        raise EventError(f"{where}: expected an object with start and duration")
    start = parse_time(period.get("start"), f"{where}.start")
    span = parse_duration(period.get("duration", "PT0S"), f"{where}.duration")
    return start, None if span <= timedelta(0) or span >= _OPEN_ENDED else span


def _check_descriptors(event: dict[str, Any]) -> None:
    if event.get("priority") is not None:
        raise EventError("priority must not be set (GAC profile)")
    descriptors = event.get("payloadDescriptors")
    if not isinstance(descriptors, list) or len(descriptors) != 1 or not isinstance(descriptors[0], dict):
        raise EventError("exactly one payload descriptor required (IMPORT_CAPACITY_LIMIT in KW)")
    descriptor = descriptors[0]
    if descriptor.get("payloadType") != PAYLOAD_TYPE or descriptor.get("units") != UNITS:
        raise EventError(f"payload descriptor must be IMPORT_CAPACITY_LIMIT in KW, got "
                         f"{descriptor.get('payloadType')!r} in {descriptor.get('units')!r}"[:200])


def _intervals(event: dict[str, Any]) -> list[tuple[Interval, int]]:
    raw = event.get("intervals")
    if not isinstance(raw, list) or not raw:
        raise EventError("at least one interval required")
    if len(raw) > MAX_INTERVALS:
        raise EventError(f"too many intervals: {len(raw)} (at most {MAX_INTERVALS})")
    if not all(isinstance(i, dict) for i in raw):
        raise EventError("every interval must be an object")
    ids = [i.get("id") for i in raw]
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in ids):
        raise EventError(f"interval ids must be integers, got {ids[:5]}"[:200])
    if any(b <= a for a, b in zip(ids, ids[1:], strict=False)):
        raise EventError("interval ids must increase strictly")
    own = [i.get("intervalPeriod") is not None for i in raw]
    event_period = event.get("intervalPeriod")
    out: list[tuple[Interval, int]] = []
    if event_period is not None:
        if any(own):
            raise EventError("interval period on the event and on intervals (give one or the other)")
        start, span = _period(event_period, "intervalPeriod")
        if span is None and len(raw) > 1:
            raise EventError("an open-ended interval period fits one interval only")
        for n, interval in enumerate(raw):
            begin = start + (span or timedelta(0)) * n
            out.append(((begin, None if span is None else begin + span,
                         _value(interval, f"intervals[{n}] (id {interval['id']})")), interval["id"]))
        return out
    if not all(own):
        raise EventError("interval period missing on the event and on some interval")
    for n, interval in enumerate(raw):
        where = f"intervals[{n}] (id {interval['id']})"
        begin, span = _period(interval["intervalPeriod"], f"{where}.intervalPeriod")
        out.append(((begin, None if span is None else begin + span, _value(interval, where)), interval["id"]))
    out.sort(key=lambda pair: pair[0][0])
    for ((s0, e0, _), _), ((s1, _, _), _) in zip(out, out[1:], strict=False):
        if e0 is None or s1 < e0:
            raise EventError(f"intervals overlap (the one from {s0.isoformat()} runs past {s1.isoformat()})")
    return out


def parse_event(event: Any, ven_name: str) -> ParsedEvent | None:
    """The event's limits, or None when it is not for us (another VEN named, no service location).

    Raises EventError naming what breaks the OpenADR schema or the GAC profile (and nothing else,
    whatever the input: one broken event must never fail a whole poll)."""
    try:
        return _parse_event(event, ven_name)
    except EventError:
        raise
    except (ArithmeticError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise EventError(f"unusable event: {type(exc).__name__}: {exc}"[:200]) from None


def _parse_event(event: Any, ven_name: str) -> ParsedEvent | None:
    if not isinstance(event, dict):
        raise EventError(f"expected an event object, got {type(event).__name__}")
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise EventError("the event has no id")
    eans, vens = targets_of(event.get("targets"))
    if vens is not None and ven_name not in vens:
        return None
    _check_descriptors(event)
    pairs = _intervals(event)
    if not eans:
        raise EventError("no POWER_SERVICE_LOCATION (EAN-18) target: we cannot tell which connection it limits")
    name = event.get("eventName")
    return ParsedEvent(event_id, str(event.get("modificationDateTime") or ""), name if isinstance(name, str) else None,
                       frozenset(eans), tuple(iv for iv, _ in pairs), tuple(i for _, i in pairs),
                       _report_requests(event.get("reportDescriptors")))


def _report_requests(raw: Any) -> tuple[tuple[str, str | None], ...]:
    """(payloadType, units) of each report descriptor; a broken list refuses the event."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(d, dict) and isinstance(d.get("payloadType"), str)
                                            for d in raw):
        raise EventError("reportDescriptors: expected a list of objects with a payloadType")
    return tuple((d["payloadType"], d["units"] if isinstance(d.get("units"), str) else None) for d in raw)


def merge(intervals: list[Interval], cap_kw: float | None = None) -> list[Interval]:
    """One schedule from overlapping intervals: at each moment the strictest value (capped at
    ``cap_kw``); gaps stay gaps, equal neighbours are joined. Only the last piece can be open-ended.
    A sweep over the edges with a heap of the intervals in force: n log n for a week of events."""
    if not intervals:
        return []
    edges = sorted({s for s, _, _ in intervals} | {e for _, e, _ in intervals if e is not None})
    by_start = sorted(intervals, key=lambda iv: iv[0])
    active: list[tuple[float, int, datetime | None]] = []  # (kW, tiebreak, end); ended ones dropped lazily
    out: list[Interval] = []
    taken = 0
    for n, start in enumerate(edges):
        end = edges[n + 1] if n + 1 < len(edges) else None
        while taken < len(by_start) and by_start[taken][0] <= start:
            _, e, kw = by_start[taken]
            heapq.heappush(active, (kw, taken, e))
            taken += 1
        while active and (ends := active[0][2]) is not None and ends <= start:
            heapq.heappop(active)
        if not active:
            continue
        kw = active[0][0] if cap_kw is None else min(active[0][0], cap_kw)
        if out and out[-1][1] == start and out[-1][2] == kw:
            out[-1] = (out[-1][0], end, kw)
        else:
            out.append((start, end, kw))
    return out


def signal_payload(source: str, transformer_id: str, schedule: list[Interval], now: datetime) -> dict[str, Any] | None:
    """The limit signal for one group from one program (None when nothing lies ahead).

    Its id is a digest of the source, group and schedule: polling the same events again gives the
    same id. (The limit book ignores a re-sent id, so a schedule that comes back after another one,
    as after a fallback, needs a fresh id: the source adds one.)"""
    ahead = [iv for iv in schedule if iv[1] is None or iv[1] > now]
    if not ahead:
        return None
    ahead = ahead[:MAX_INTERVALS]
    intervals = [{"start": _iso(s), "end": None if e is None else _iso(e), "limit_kw": kw} for s, e, kw in ahead]
    if intervals[-1]["end"] is None:
        intervals[-1].pop("end")
    digest = hashlib.sha256(json.dumps([source, transformer_id, intervals], sort_keys=True).encode()).hexdigest()
    return {"signal_id": f"oadr-{digest[:20]}", "source": source, "transformer": transformer_id,
            "intervals": intervals}


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def source_name(program: str) -> str:
    """``openadr:<program>`` within the limit book's 64 characters (other characters become _)."""
    return "openadr:" + re.sub(r"[^A-Za-z0-9_.-]", "_", program)[:56]
