"""Measure like a grid operator and like a driver: pure functions over energy, no I/O.

Grid side: the energy a capacity group took in each settlement interval (15 minutes) against the
energy its limit allowed in that interval, the same per minute outside the reaction window that
follows every limit change, and the worst interval average. Everything comes from a cumulative
energy register (interpolated linearly between readings), never from instantaneous power samples,
so a figure does not depend on when a sample happened to be taken.

Drivers: at departure, energy on the grid side (imported, exported) and on the battery side against
what the driver needed and was guaranteed; cars still plugged in are counted apart.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

Series = Sequence[tuple[datetime, float]]  # (instant, value), sorted by instant
SETTLEMENT_S = 900.0
MINUTE_S = 60.0
TOLERANCE_KWH = 0.05  # a driver counts as served when at most this much short of the need
OVER_EPS_KWH = 1e-6  # below this an interval is not over (rounding of the register, not energy)


@dataclass(frozen=True)
class Interval:
    """One interval: energy taken and energy the limit allowed (kWh)."""

    start: datetime
    seconds: float
    energy_kwh: float
    limit_kwh: float

    @property
    def over_kwh(self) -> float:
        over = self.energy_kwh - self.limit_kwh
        return over if over > OVER_EPS_KWH else 0.0

    @property
    def average_over_kw(self) -> float:
        """Average load minus average limit over the interval (negative: below the limit)."""
        return (self.energy_kwh - self.limit_kwh) / (self.seconds / 3600.0)

    def as_dict(self) -> dict[str, object]:
        return {"start": self.start.isoformat(), "seconds": self.seconds, "energy_kwh": round(self.energy_kwh, 6),
                "limit_kwh": round(self.limit_kwh, 6), "over_kwh": round(self.over_kwh, 6)}


def register_at(register: Series, at: datetime) -> float:
    """The cumulative energy at ``at``, interpolated linearly; clamped to the first/last reading."""
    if not register:
        raise ValueError("an energy register needs at least one reading")
    times = [t for t, _ in register]
    i = bisect.bisect_right(times, at)
    if i == 0:
        return register[0][1]
    if i == len(register):
        return register[-1][1]
    (t0, e0), (t1, e1) = register[i - 1], register[i]
    span = (t1 - t0).total_seconds()
    return e1 if span <= 0 else e0 + (e1 - e0) * (at - t0).total_seconds() / span


def limit_energy(limit: Series, start: datetime, end: datetime) -> float:
    """kWh a step limit (kW from each instant until the next) allows over [start, end)."""
    if end <= start:
        return 0.0
    if not limit:
        raise ValueError("a limit needs at least one step")
    total = 0.0
    for i, (at, kw) in enumerate(limit):
        step_end = limit[i + 1][0] if i + 1 < len(limit) else end
        lo, hi = max(start, at), min(end, step_end)
        if hi > lo:
            total += kw * (hi - lo).total_seconds() / 3600.0
    first_at = limit[0][0]
    if start < first_at:  # before the first step the first value holds
        total += limit[0][1] * (min(end, first_at) - start).total_seconds() / 3600.0
    return total


def intervals(register: Series, limit: Series, start: datetime, end: datetime,
              seconds: float = SETTLEMENT_S) -> list[Interval]:
    """Consecutive whole intervals of ``seconds`` from ``start`` that end by ``end``."""
    if seconds <= 0:
        raise ValueError(f"interval length must be > 0 s, got {seconds}")
    out = []
    n = math.floor((end - start).total_seconds() / seconds + 1e-9)
    step = timedelta(seconds=seconds)
    for k in range(n):
        a, b = start + k * step, start + (k + 1) * step
        out.append(Interval(a, seconds, register_at(register, b) - register_at(register, a),
                            limit_energy(limit, a, b)))
    return out


def outside_reaction(items: list[Interval], limit: Series, reaction_s: float) -> list[Interval]:
    """The intervals that do not overlap the ``reaction_s`` after any change of the limit."""
    changes = [at for (at, kw), (_, before) in zip(limit[1:], limit[:-1]) if kw != before]
    window = timedelta(seconds=reaction_s)

    def quiet(item: Interval) -> bool:
        end = item.start + timedelta(seconds=item.seconds)
        return not any(item.start < at + window and at < end for at in changes)

    return [item for item in items if quiet(item)]


@dataclass(frozen=True)
class GridMeasures:
    settlement: list[Interval]
    minutes: list[Interval]  # outside the reaction windows
    reaction_s: float

    @property
    def over_kwh(self) -> float:
        return sum(i.over_kwh for i in self.settlement)

    @property
    def intervals_over(self) -> int:
        return sum(i.over_kwh > 0 for i in self.settlement)

    @property
    def worst_interval_over_kw(self) -> float:
        return max((i.average_over_kw for i in self.settlement), default=0.0)

    @property
    def over_kwh_minutes(self) -> float:
        return sum(i.over_kwh for i in self.minutes)

    @property
    def minutes_over(self) -> int:
        return sum(i.over_kwh > 0 for i in self.minutes)

    def as_dict(self) -> dict[str, object]:
        return {"settlement_interval_s": self.settlement[0].seconds if self.settlement else SETTLEMENT_S,
                "reaction_window_s": self.reaction_s, "intervals": [i.as_dict() for i in self.settlement],
                "intervals_over": self.intervals_over, "over_kwh": round(self.over_kwh, 6),
                "worst_interval_over_kw": round(self.worst_interval_over_kw, 6),
                "minutes_over": self.minutes_over, "over_kwh_minutes": round(self.over_kwh_minutes, 6)}


def grid_measures(register: Series, limit: Series, start: datetime, end: datetime, reaction_s: float,
                  settlement_s: float = SETTLEMENT_S, minute_s: float = MINUTE_S) -> GridMeasures:
    """Settlement intervals over [start, end) and the minutes outside the reaction windows."""
    return GridMeasures(intervals(register, limit, start, end, settlement_s),
                        outside_reaction(intervals(register, limit, start, end, minute_s), limit, reaction_s),
                        reaction_s)


@dataclass(frozen=True)
class SessionOutcome:
    """One driver's session. Battery side: energy that reached the battery; grid side: through the meter."""

    need_kwh: float
    guaranteed_kwh: float
    battery_kwh: float
    grid_import_kwh: float
    grid_export_kwh: float
    departed: bool


@dataclass(frozen=True)
class DriverMeasures:
    sessions: int
    departed: int
    need_kwh: float
    battery_kwh: float
    grid_import_kwh: float
    grid_export_kwh: float
    fully_served: int
    below_guarantee: int

    @property
    def plugged_in_at_end(self) -> int:
        return self.sessions - self.departed

    def as_dict(self) -> dict[str, object]:
        return {"sessions": self.sessions, "departed": self.departed, "plugged_in_at_end": self.plugged_in_at_end,
                "need_kwh": round(self.need_kwh, 6), "battery_kwh": round(self.battery_kwh, 6),
                "grid_import_kwh": round(self.grid_import_kwh, 6), "grid_export_kwh": round(self.grid_export_kwh, 6),
                "fully_served": self.fully_served, "below_guarantee": self.below_guarantee}


def driver_measures(outcomes: Sequence[SessionOutcome]) -> DriverMeasures:
    """Figures at departure: only sessions whose car has left count (the rest is still charging)."""
    gone = [o for o in outcomes if o.departed]
    return DriverMeasures(
        sessions=len(outcomes), departed=len(gone),
        need_kwh=sum(o.need_kwh for o in gone), battery_kwh=sum(o.battery_kwh for o in gone),
        grid_import_kwh=sum(o.grid_import_kwh for o in gone), grid_export_kwh=sum(o.grid_export_kwh for o in gone),
        fully_served=sum(o.battery_kwh >= o.need_kwh - TOLERANCE_KWH for o in gone),
        below_guarantee=sum(o.battery_kwh < o.guaranteed_kwh - TOLERANCE_KWH for o in gone))
