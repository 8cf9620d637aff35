"""Limit signals and the book of every limit that applies to each capacity group.

Pure state and pure functions: no I/O and no clock of their own (the caller passes `now`), so the
listener, the operator API and the tests all see exactly the same rules. At every moment the
strictest of these wins: the rated capacity, contract windows, the latest signal of each source,
and the safe limit while in safe mode.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from csms.grid.config import WEEKDAYS, ContractConfig, GridConfig, TransformerConfig, hhmm_minutes

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_INTERVALS = 7 * 96  # a week of 15-minute intervals
CLOCK_SKEW_S = 60.0  # a signal may be timestamped this far in our future (clocks differ a little)
DEFAULT_SOURCE = "dso"
PAYLOAD_KEYS = ("signal_id", "source", "transformer", "timestamp", "valid_from", "valid_until", "limit_kw",
                "intervals")
INTERVAL_KEYS = ("start", "end", "limit_kw")
_SOURCE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_FAR_PAST = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=timezone.utc)

Interval = tuple[datetime, datetime | None, float]  # [start, end) in UTC; end None = until replaced


class SignalError(ValueError):
    """A limit signal was refused; `reason` says precisely why (it goes into logs and status messages)."""

    def __init__(self, reason: str, signal_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.signal_id = signal_id


@dataclass(frozen=True)
class LimitSignal:
    signal_id: str
    transformer_id: str
    source: str
    intervals: tuple[Interval, ...]  # sorted, non-overlapping, already clipped to the validity window
    received_at: datetime
    issued_at: datetime | None = None
    digest: str = ""  # of the canonical payload: tells a harmless re-send from a conflicting one

    def limit_at(self, at: datetime) -> float | None:
        for start, end, kw in self.intervals:
            if start <= at and (end is None or at < end):
                return kw
        return None

    @property
    def ends_at(self) -> datetime | None:
        return self.intervals[-1][1] if self.intervals else None

    def label(self) -> str:
        return f"signal:{self.source}:{self.signal_id}"

    def to_record(self) -> dict[str, Any]:
        """The signal as a JSON-able record (what the store keeps so it survives a restart)."""
        return {"signal_id": self.signal_id, "transformer_id": self.transformer_id, "source": self.source,
                "intervals": [[start.isoformat(), None if end is None else end.isoformat(), kw]
                              for start, end, kw in self.intervals],
                "received_at": self.received_at.isoformat(),
                "issued_at": None if self.issued_at is None else self.issued_at.isoformat(), "digest": self.digest}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> LimitSignal:
        """The signal :meth:`to_record` wrote; ValueError (or KeyError/TypeError) for a damaged record."""
        intervals = tuple((datetime.fromisoformat(start), None if end is None else datetime.fromisoformat(end),
                           float(kw)) for start, end, kw in record["intervals"])
        for start, end, _ in intervals:
            if start.tzinfo is None or (end is not None and end.tzinfo is None):
                raise ValueError("stored signal intervals need a UTC offset")
        issued = record.get("issued_at")
        return cls(signal_id=str(record["signal_id"]), transformer_id=str(record["transformer_id"]),
                   source=str(record["source"]), intervals=intervals,
                   received_at=datetime.fromisoformat(record["received_at"]),
                   issued_at=None if issued is None else datetime.fromisoformat(issued),
                   digest=str(record.get("digest", "")))


# ------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def decode_payload(payload: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """A JSON object from an MQTT/HTTP body, with a precise SignalError for anything else."""
    if isinstance(payload, dict):
        return payload
    if isinstance(payload, (bytes, bytearray)):
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise SignalError(f"payload too large: {len(payload)} bytes (at most {MAX_PAYLOAD_BYTES})")
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SignalError(f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from None
    if not isinstance(payload, str):
        raise SignalError(f"payload must be JSON text or an object, got {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SignalError(f"payload too large: {len(payload)} characters (at most {MAX_PAYLOAD_BYTES})")
    try:
        data = json.loads(payload, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise SignalError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise SignalError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise SignalError("malformed JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise SignalError(f"payload must be a JSON object, got {type(data).__name__}")
    return data


def _timestamp(data: dict[str, Any], key: str, sid: str | None) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SignalError(f"{key} must be an ISO 8601 timestamp string, got {value!r}", sid)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SignalError(f"{key} is not an ISO 8601 timestamp: {value!r}", sid) from None
    if parsed.tzinfo is None:
        raise SignalError(f"{key} needs a UTC offset (e.g. 'Z' or '+01:00'): {value!r}", sid)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:30+01:00 is before year 1 in UTC
        raise SignalError(f"{key} is out of range once converted to UTC: {value!r}", sid) from None


def _limit(value: Any, where: str, group: TransformerConfig | None, sid: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SignalError(f"{where} must be a number (kW), got {value!r}"[:200], sid)
    try:
        kw = float(value)  # a JSON integer of hundreds of digits does not fit a float
    except OverflowError:
        raise SignalError(f"{where} is far too large to be a limit in kW", sid) from None
    if not math.isfinite(kw):
        raise SignalError(f"{where} must be a finite number (kW), got {kw!r}", sid)
    if kw < 0:
        raise SignalError(f"{where} must be >= 0 kW (an import limit), got {kw}", sid)
    if group is not None and kw > group.capacity_kw:
        raise SignalError(f"{where} {kw} kW exceeds the rated capacity {group.capacity_kw} kW of "
                          f"{group.id!r} (wrong unit?)", sid)
    return kw


def _intervals(raw: Any, group: TransformerConfig | None, sid: str | None) -> list[Interval]:
    if not isinstance(raw, list) or not raw:
        raise SignalError(f"intervals must be a non-empty list, got {raw!r}"[:200], sid)
    if len(raw) > MAX_INTERVALS:
        raise SignalError(f"too many intervals: {len(raw)} (at most {MAX_INTERVALS})", sid)
    out: list[Interval] = []
    for i, item in enumerate(raw):
        where = f"intervals[{i}]"
        if not isinstance(item, dict):
            raise SignalError(f"{where} must be an object with start, end, limit_kw", sid)
        unknown = sorted(set(item) - set(INTERVAL_KEYS))
        if unknown:
            raise SignalError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(INTERVAL_KEYS)})", sid)
        if "start" not in item:
            raise SignalError(f"{where}.start is missing", sid)
        if "limit_kw" not in item:
            raise SignalError(f"{where}.limit_kw is missing", sid)
        start = _timestamp(item, "start", sid)
        end = _timestamp(item, "end", sid)
        assert start is not None
        if end is None and i != len(raw) - 1:
            raise SignalError(f"{where}.end is missing (only the last interval may be open-ended)", sid)
        if end is not None and end <= start:
            raise SignalError(f"{where} ends ({item['end']}) before it starts ({item['start']})", sid)
        if out:
            prev_start, prev_end, _ = out[-1]
            if start < prev_start:
                raise SignalError(f"{where} starts before intervals[{i - 1}]: intervals must be sorted", sid)
            if prev_end is not None and start < prev_end:
                raise SignalError(f"{where} overlaps intervals[{i - 1}]", sid)
        out.append((start, end, _limit(item["limit_kw"], f"{where}.limit_kw", group, sid)))
    return out


def _clip(intervals: list[Interval], lo: datetime | None, hi: datetime | None, now: datetime) -> list[Interval]:
    """Cut intervals to the validity window and drop what has already ended."""
    out: list[Interval] = []
    for start, end, kw in intervals:
        if lo is not None and start < lo:
            start = lo
        if hi is not None and (end is None or end > hi):
            end = hi
        if end is not None and (end <= start or end <= now):
            continue
        out.append((start, end, kw))
    return out


def parse_signal(payload: bytes | str | dict[str, Any], transformer_id: str, now: datetime, *,
                 grid: GridConfig | None = None, max_age_s: float | None = None) -> LimitSignal:
    """Validate a limit signal for `transformer_id` (the topic's group) received at `now`.

    With `grid`, the group must exist and no limit may exceed its rated capacity; `max_age_s`
    (default: `grid.signal_max_age_s`) bounds how old the signal's `timestamp` may be.
    Raises SignalError with a precise reason.
    """
    now = now.astimezone(timezone.utc)
    data = decode_payload(payload)
    raw_id = data.get("signal_id")
    sid = raw_id if isinstance(raw_id, str) else None
    unknown = sorted(str(k) for k in set(data) - set(PAYLOAD_KEYS))
    if unknown:
        raise SignalError(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(PAYLOAD_KEYS)})", sid)
    if not isinstance(raw_id, str) or not 1 <= len(raw_id) <= 128 or not raw_id.isprintable():
        raise SignalError(f"signal_id must be a printable string of 1-128 characters, got {raw_id!r}"[:200], sid)
    source = data.get("source", DEFAULT_SOURCE)
    if not isinstance(source, str) or not _SOURCE_RE.match(source):
        raise SignalError(f"source must be 1-64 characters out of A-Z a-z 0-9 _ . -, got {source!r}"[:200], sid)
    named = data.get("transformer")
    if named is not None and named != transformer_id:
        raise SignalError(f"payload names transformer {named!r} but arrived for {transformer_id!r}", sid)
    group = None
    if grid is not None:
        group = grid.transformers.get(transformer_id)
        if group is None:
            raise SignalError(f"unknown transformer {transformer_id!r} (known: {', '.join(grid.transformers)})"[:300], sid)
        if max_age_s is None:
            max_age_s = grid.signal_max_age_s
    issued = _timestamp(data, "timestamp", sid)
    if issued is not None:
        age = (now - issued).total_seconds()
        if max_age_s is not None and age > max_age_s:
            raise SignalError(f"stale: timestamp {data['timestamp']} is {age:.0f} s old (at most {max_age_s:g} s)", sid)
        if age < -CLOCK_SKEW_S:
            raise SignalError(f"timestamp {data['timestamp']} is {-age:.0f} s in the future", sid)
    valid_from = _timestamp(data, "valid_from", sid)
    valid_until = _timestamp(data, "valid_until", sid)
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise SignalError(f"valid_until ({data['valid_until']}) is not after valid_from ({data['valid_from']})", sid)
    if valid_until is not None and valid_until <= now:
        raise SignalError(f"stale: validity ended at {data['valid_until']}", sid)
    has_flat, has_intervals = "limit_kw" in data, "intervals" in data
    if has_flat == has_intervals:
        raise SignalError("needs exactly one of limit_kw (one limit for the validity window) or intervals "
                          "(a schedule)" + (", got both" if has_flat else ", got neither"), sid)
    if has_flat:
        intervals = [(valid_from or now, valid_until, _limit(data["limit_kw"], "limit_kw", group, sid))]
    else:
        intervals = _intervals(data["intervals"], group, sid)
    clipped = _clip(intervals, valid_from, valid_until, now)
    if not clipped:
        raise SignalError("stale: every interval has already ended (or lies outside the validity window)", sid)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return LimitSignal(signal_id=raw_id, transformer_id=transformer_id, source=source, intervals=tuple(clipped),
                       received_at=now, issued_at=issued, digest=hashlib.sha256(canonical.encode()).hexdigest())


# ------------------------------------------------------------------------------------------------
# The book
# ------------------------------------------------------------------------------------------------

# On equal kW the more specific/volatile reason is reported.
_RANK = {"safe_mode": 0, "signal": 1, "contract": 2, "capacity": 3}


@dataclass(frozen=True)
class _Piece:
    start: datetime
    end: datetime
    kw: float
    source: str

    @property
    def rank(self) -> int:
        return _RANK[self.source.split(":", 1)[0]]


def contract_windows(contract: ContractConfig, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """UTC windows of a recurring contract that overlap [start, end), honouring DST."""
    tz = ZoneInfo(contract.timezone)
    first: date = start.astimezone(tz).date() - timedelta(days=1)
    last: date = end.astimezone(tz).date()
    s_min, e_min = hhmm_minutes(contract.start), hhmm_minutes(contract.end)
    day = first
    while day <= last:
        if WEEKDAYS[day.weekday()] in contract.days:
            w_start = datetime.combine(day, time(s_min // 60, s_min % 60), tzinfo=tz)
            end_day = day + timedelta(days=1) if e_min <= s_min or e_min == 1440 else day
            e = e_min % 1440
            w_end = datetime.combine(end_day, time(e // 60, e % 60), tzinfo=tz)
            ws, we = w_start.astimezone(timezone.utc), w_end.astimezone(timezone.utc)
            if ws < end and we > start:
                yield ws, we
        day += timedelta(days=1)


class LimitBook:
    """Everything that limits each group, and the non-EV load behind it. Not thread-safe; no I/O."""

    def __init__(self, grid: GridConfig, *, remember_ids: int = 1000) -> None:
        self.grid = grid
        self._remember = remember_ids
        self._signals: dict[str, dict[str, LimitSignal]] = {tid: {} for tid in grid.transformers}
        self._seen: dict[str, OrderedDict[str, str]] = {tid: OrderedDict() for tid in grid.transformers}
        self._heard: dict[str, datetime] = {}
        self._safe: dict[str, str] = {}
        self._measured: dict[str, tuple[float, datetime]] = {}

    def _group(self, transformer_id: str) -> TransformerConfig:
        try:
            return self.grid.transformers[transformer_id]
        except KeyError:
            raise KeyError(f"unknown transformer {transformer_id!r}") from None

    # Signals --------------------------------------------------------------------------------------
    def apply(self, signal: LimitSignal) -> bool:
        """Put `signal` in force, replacing the previous signal of the same source.

        Returns False for a re-send of an already applied signal id (idempotent). Raises
        SignalError when the id was used before with other content, or when the signal is older
        (by `timestamp`) than the one of the same source already in force.
        """
        if not self.is_new(signal):
            return False
        tid = signal.transformer_id
        self._signals[tid][signal.source] = signal
        seen = self._seen[tid]
        seen[signal.signal_id] = signal.digest
        while len(seen) > self._remember:
            seen.popitem(last=False)
        return True

    def is_new(self, signal: LimitSignal) -> bool:
        """What :meth:`apply` would answer, without applying: False for a re-send, SignalError for
        a conflict (so the caller can store a signal before it takes effect)."""
        tid = signal.transformer_id
        if tid not in self._signals:
            raise SignalError(f"unknown transformer {tid!r}", signal.signal_id)
        seen = self._seen[tid]
        if signal.signal_id in seen:
            if seen[signal.signal_id] == signal.digest:
                return False
            raise SignalError(f"signal id {signal.signal_id!r} was already applied with different content",
                              signal.signal_id)
        current = self._signals[tid].get(signal.source)
        if (current is not None and current.issued_at is not None and signal.issued_at is not None
                and signal.issued_at < current.issued_at):
            raise SignalError(f"superseded: timestamp {signal.issued_at.isoformat()} is older than signal "
                              f"{current.signal_id!r} of source {signal.source!r} already in force", signal.signal_id)
        return True

    def restore(self, signal: LimitSignal) -> None:
        """Put back a signal that was in force before a restart (validated when it was accepted)."""
        tid = signal.transformer_id
        if tid not in self._signals:
            raise SignalError(f"unknown transformer {tid!r}", signal.signal_id)
        self._signals[tid][signal.source] = signal
        self._seen[tid][signal.signal_id] = signal.digest

    def remove(self, transformer_id: str, source: str) -> LimitSignal | None:
        """Take the signal of ``source`` out of force (an operator clears a limit); its id stays
        remembered, so a redelivery of the same message does not bring it back."""
        self._group(transformer_id)
        return self._signals[transformer_id].pop(source, None)

    def signals(self, transformer_id: str) -> list[LimitSignal]:
        self._group(transformer_id)
        return list(self._signals[transformer_id].values())

    def prune(self, now: datetime) -> list[LimitSignal]:
        """Forget signals whose every interval has ended (their ids stay remembered); returns them."""
        gone = []
        for by_source in self._signals.values():
            for source, sig in list(by_source.items()):
                if sig.ends_at is not None and sig.ends_at <= now:
                    gone.append(by_source.pop(source))
        return gone

    # Liveness and safe mode -------------------------------------------------------------------------
    def mark_heard(self, transformer_id: str, at: datetime) -> None:
        self._group(transformer_id)
        previous = self._heard.get(transformer_id)
        if previous is None or at > previous:
            self._heard[transformer_id] = at

    def last_heard(self, transformer_id: str) -> datetime | None:
        return self._heard.get(transformer_id)

    def is_silent(self, transformer_id: str, now: datetime, since: datetime | None = None) -> bool:
        """Whether the group expects signals and none was heard within its signal_timeout_s.

        `since` (e.g. the listener's start) counts as heard when nothing was heard yet: a grace period.
        """
        timeout = self._group(transformer_id).signal_timeout_s
        heard = self._heard.get(transformer_id) or since
        return timeout is not None and (heard is None or (now - heard).total_seconds() > timeout)

    def set_safe_mode(self, transformer_id: str, on: bool, reason: str) -> bool:
        """Switch safe mode; returns whether anything changed (the reason alone counts as a change)."""
        self._group(transformer_id)
        before = self._safe.get(transformer_id)
        if on:
            self._safe[transformer_id] = reason
        else:
            self._safe.pop(transformer_id, None)
        return before != self._safe.get(transformer_id)

    def in_safe_mode(self, transformer_id: str) -> bool:
        return transformer_id in self._safe

    def safe_mode_reason(self, transformer_id: str) -> str | None:
        return self._safe.get(transformer_id)

    # Limits -------------------------------------------------------------------------------------
    def _pieces(self, transformer_id: str, start: datetime, end: datetime) -> list[_Piece]:
        group = self._group(transformer_id)
        pieces = [_Piece(_FAR_PAST, _FAR_FUTURE, group.capacity_kw, "capacity")]
        if transformer_id in self._safe:
            # We cannot know when the link comes back: the safe limit holds over the whole horizon.
            pieces.append(_Piece(_FAR_PAST, _FAR_FUTURE, group.safe_limit_kw, "safe_mode"))
        for i, contract in enumerate(group.contracts):
            label = f"contract:{contract.name or i}"
            pieces.extend(_Piece(ws, we, contract.limit_kw, label) for ws, we in contract_windows(contract, start, end))
        for sig in self._signals[transformer_id].values():
            for s, e, kw in sig.intervals:
                pieces.append(_Piece(s, e or _FAR_FUTURE, kw, sig.label()))
        return pieces

    @staticmethod
    def _strictest(pieces: list[_Piece]) -> tuple[float, str]:
        best = min(pieces, key=lambda p: (p.kw, p.rank))
        return best.kw, best.source

    def limit_at(self, transformer_id: str, at: datetime) -> tuple[float, str]:
        """The group's own limit in force at `at` (kW) and what imposes it.

        Sources: "capacity", "contract:<name or index>", "signal:<source>:<signal id>", "safe_mode".
        Parents are not folded in: the controller plans the whole chain (Topology.chain).
        """
        at = at.astimezone(timezone.utc)
        pieces = self._pieces(transformer_id, at, at + timedelta(seconds=1))
        return self._strictest([p for p in pieces if p.start <= at < p.end])

    def schedule(self, transformer_id: str, start: datetime, slots: int, slot_s: float) -> list[tuple[float, str]]:
        """Per slot [start + i*slot_s, +slot_s): the strictest limit touching any part of the slot."""
        if slots <= 0:
            return []
        if not slot_s > 0:
            raise ValueError(f"slot_s must be > 0, got {slot_s!r}")
        start = start.astimezone(timezone.utc)
        step = timedelta(seconds=slot_s)
        pieces = self._pieces(transformer_id, start, start + step * slots)
        out = []
        for i in range(slots):
            s, e = start + step * i, start + step * (i + 1)
            out.append(self._strictest([p for p in pieces if p.start < e and p.end > s]))
        return out

    # Base load ----------------------------------------------------------------------------------
    def set_measured_base_load(self, transformer_id: str, kw: float, at: datetime) -> None:
        self._group(transformer_id)
        if isinstance(kw, bool) or not isinstance(kw, (int, float)) or not math.isfinite(kw):
            raise ValueError(f"base load must be a finite number (kW), got {kw!r}")
        previous = self._measured.get(transformer_id)
        if previous is None or at >= previous[1]:
            self._measured[transformer_id] = (float(kw), at)

    def measured_base_load(self, transformer_id: str) -> tuple[float, datetime] | None:
        return self._measured.get(transformer_id)

    def base_load_kw(self, transformer_id: str, at: datetime) -> float:
        """Non-EV load behind the group at `at` (its own, not that of nested groups).

        kind "mqtt": the measurement while it is at most max_age_s old relative to `at`; beyond
        that (e.g. further into a planning horizon) the profile if configured, else fallback_kw.
        """
        cfg = self._group(transformer_id).base_load
        if cfg.kind == "zero":
            return 0.0
        if cfg.kind == "mqtt":
            measured = self._measured.get(transformer_id)
            if measured is not None and 0 <= (at - measured[1]).total_seconds() <= cfg.max_age_s:
                return measured[0]
            if not cfg.profile:
                return cfg.fallback_kw
        return _profile_at(cfg.profile, ZoneInfo(cfg.timezone), at)


def _profile_at(profile: tuple[tuple[str, float], ...], tz: ZoneInfo, at: datetime) -> float:
    """Step profile: the last point at or before the local time of day (wrapping to the day before)."""
    if not profile:
        return 0.0
    local = at.astimezone(tz)
    minute = local.hour * 60 + local.minute
    value = profile[-1][1]
    for hhmm, kw in profile:
        if hhmm_minutes(hhmm) <= minute:
            value = kw
    return value


# ------------------------------------------------------------------------------------------------
# Measured base load
# ------------------------------------------------------------------------------------------------


def parse_base_load(payload: bytes | str, now: datetime) -> tuple[float, datetime]:
    """A bare number (kW) or {"kw": number, "timestamp": ISO 8601}; returns (kW, measured at)."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    try:
        return _finite_base_load(float(text.strip())), now
    except ValueError:
        pass
    data = decode_payload(text)
    unknown = sorted(set(data) - {"kw", "timestamp"})
    if unknown:
        raise SignalError(f"unknown field(s) {', '.join(unknown)} (known: kw, timestamp)")
    if "kw" not in data:
        raise SignalError("kw is missing")
    kw = data["kw"]
    if isinstance(kw, bool) or not isinstance(kw, (int, float)):
        raise SignalError(f"kw must be a number, got {kw!r}")
    at = now
    if data.get("timestamp") is not None:
        raw = data["timestamp"]
        stamped: datetime | None = None
        try:
            stamped = datetime.fromisoformat(raw) if isinstance(raw, str) else None
        except ValueError:
            pass
        if stamped is None or stamped.tzinfo is None:
            raise SignalError(f"timestamp must be ISO 8601 with a UTC offset, got {raw!r}")
        at = stamped
        try:
            at = at.astimezone(timezone.utc)
        except OverflowError:  # e.g. 9999-12-31T23:59-01:00 lies past year 9999 in UTC
            raise SignalError(f"timestamp is out of range once converted to UTC: {raw!r}") from None
    try:
        value = float(kw)
    except OverflowError:  # a JSON integer of hundreds of digits
        raise SignalError("kw is far too large to be a base load in kW") from None
    return _finite_base_load(value), at


def _finite_base_load(value: float) -> float:
    if not math.isfinite(value):
        raise SignalError(f"base load must be a finite number, got {value!r}")
    return value
