"""The figures of ``csms report``, computed from what the store kept (pure: no I/O, no clock).

* per settlement interval (15 min): energy taken, mean and peak load, the strictest limit and the
  energy above the limit, counted only outside the reaction window after a limit became stricter
  (the grid gets that long to push and the cars to follow; what stays above it after that is ours);
* per session: delivered energy against its need and guaranteed minimum at departure;
* profiles sent and verification findings per interval and by outcome.

A point is one history slot: ``t`` (its start, Unix seconds) and kW figures, any of them None.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Point = dict[str, float | None]

SETTLEMENT_S = 900


@dataclass
class Interval:
    start: float  # Unix seconds
    covered_s: float = 0.0  # seconds of it with a measured load
    energy_kwh: float = 0.0
    peak_kw: float | None = None
    limit_kw: float | None = None  # the strictest limit in force during it
    above_kwh: float = 0.0  # energy above the limit, all of it
    above_after_reaction_kwh: float = 0.0  # ... outside the reaction windows
    profiles: int = 0
    findings: int = 0

    @property
    def mean_kw(self) -> float | None:
        return None if self.covered_s <= 0 else self.energy_kwh * 3600.0 / self.covered_s


def reaction_windows(points: Sequence[Point], reaction_s: float) -> list[tuple[float, float]]:
    """``[start, end)`` after every step down of the limit (or a limit appearing) in ``points``."""
    windows: list[tuple[float, float]] = []
    previous: float | None = None
    for p in points:
        limit, t = p.get("limit_kw"), p["t"]
        assert t is not None
        if limit is not None and (previous is None or limit < previous - 1e-9):
            windows.append((t, t + reaction_s))
        previous = limit
    return windows


def settle(points: Sequence[Point], resolution_s: float, since: float, until: float, reaction_s: float,
           interval_s: int = SETTLEMENT_S) -> list[Interval]:
    """``points`` (time order) folded into the settlement intervals covering ``[since, until)``."""
    first = math.floor(since / interval_s) * interval_s
    intervals = [Interval(float(start)) for start in range(int(first), int(math.ceil(until)), interval_s)]
    if not intervals:
        return []
    windows = reaction_windows(points, reaction_s)
    w = 0
    for p in points:
        t = p["t"]
        assert t is not None
        if t < since or t >= until:
            continue
        i = int((t - first) // interval_s)
        if not 0 <= i < len(intervals):
            continue
        iv = intervals[i]
        load, limit = p.get("load_kw"), p.get("limit_kw")
        peak = p.get("peak_kw") if p.get("peak_kw") is not None else load
        if limit is not None:
            iv.limit_kw = limit if iv.limit_kw is None else min(iv.limit_kw, limit)
        if load is None:
            continue
        hours = resolution_s / 3600.0
        iv.covered_s += resolution_s
        iv.energy_kwh += load * hours
        if peak is not None:
            iv.peak_kw = peak if iv.peak_kw is None else max(iv.peak_kw, peak)
        if limit is not None and load > limit:
            above = (load - limit) * hours
            iv.above_kwh += above
            while w < len(windows) and windows[w][1] <= t:
                w += 1
            if not (w < len(windows) and windows[w][0] <= t < windows[w][1]):
                iv.above_after_reaction_kwh += above
    return intervals


def count_into(intervals: list[Interval], times: Iterable[float], attr: str, interval_s: int = SETTLEMENT_S) -> None:
    """Add one to ``attr`` of the interval holding each time (times outside are ignored)."""
    if not intervals:
        return
    first = intervals[0].start
    for t in times:
        i = int((t - first) // interval_s)
        if 0 <= i < len(intervals) and t >= first:
            setattr(intervals[i], attr, getattr(intervals[i], attr) + 1)


@dataclass
class SessionOutcome:
    station_id: str
    evse_id: int
    transaction_id: str
    started_at: datetime
    ended_at: datetime
    departure: datetime | None
    delivered_kwh: float
    need_kwh: float | None
    guaranteed_kwh: float | None
    need_source: str
    fixed_reason: str | None = None

    @property
    def need_met(self) -> bool | None:
        return None if self.need_kwh is None else self.delivered_kwh >= self.need_kwh - 0.01

    @property
    def guarantee_met(self) -> bool | None:
        """The guaranteed minimum is owed by the departure: a car that left before the departure it
        was planned for, short of its guarantee, is not judged (None), and is counted as left early."""
        if self.guaranteed_kwh is None:
            return None
        if self.delivered_kwh >= self.guaranteed_kwh - 0.01:
            return True
        return None if self.left_early else False

    @property
    def left_early(self) -> bool:
        return self.departure is not None and self.ended_at < self.departure


def outcome_of(doc: dict[str, Any]) -> SessionOutcome | None:
    """A ``grid:served`` document as an outcome; None when it is damaged (a bad record never breaks a report)."""
    try:
        departure = doc.get("departure")
        return SessionOutcome(
            station_id=str(doc["station_id"]), evse_id=int(doc["evse_id"]), transaction_id=str(doc["transaction_id"]),
            started_at=datetime.fromisoformat(doc["started_at"]), ended_at=datetime.fromisoformat(doc["ended_at"]),
            departure=datetime.fromisoformat(departure) if departure else None,
            delivered_kwh=float(doc["delivered_kwh"]),
            need_kwh=None if doc.get("need_kwh") is None else float(doc["need_kwh"]),
            guaranteed_kwh=None if doc.get("guaranteed_kwh") is None else float(doc["guaranteed_kwh"]),
            need_source=str(doc.get("need_source", "unknown")), fixed_reason=doc.get("fixed_reason"))
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class SessionSummary:
    served: int = 0
    need_met: int = 0
    guarantee_met: int = 0
    guarantee_judged: int = 0  # sessions with a guarantee that stayed until their departure or got it
    guarantee_missed: list[SessionOutcome] = field(default_factory=list)
    left_early: int = 0
    delivered_kwh: float = 0.0


def summarize(outcomes: Iterable[SessionOutcome]) -> SessionSummary:
    out = SessionSummary()
    for o in outcomes:
        out.served += 1
        out.delivered_kwh += o.delivered_kwh
        out.need_met += bool(o.need_met)
        out.left_early += o.left_early
        if o.guarantee_met is not None:
            out.guarantee_judged += 1
        if o.guarantee_met is False:
            out.guarantee_missed.append(o)
        elif o.guarantee_met:
            out.guarantee_met += 1
    return out


def tally(values: Iterable[str]) -> list[tuple[str, int]]:
    """Outcomes by count, most frequent first (then by name)."""
    return sorted(Counter(values).items(), key=lambda kv: (-kv[1], kv[0]))
