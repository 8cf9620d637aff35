"""Simulated time: the station logic never reads the wall clock directly.

Simulation timers (meter interval, EV arrivals, profile periods) run on a `Clock` so a fleet
can run faster than real time (`speed`) and unit tests can step time by hand (`ManualClock`).
Network timers (heartbeat, reconnect, call timeouts) stay in real seconds because the central
system judges liveness by its own wall clock.

A clock starts on the wall clock unless told otherwise; `origin` says which kind it is
(`wall`, `offset`: the wall clock skewed on purpose, `pinned`: a fixed date, `manual`: tests),
and `describe()` / `info()` say so when a station connects and in a fleet's report.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta


def utc_now() -> datetime:
    return datetime.now(UTC)


ORIGINS = ("wall", "offset", "pinned", "manual")


class Clock:
    """Real time scaled by `speed`, starting at `start` (default: now, the wall clock)."""

    def __init__(self, speed: float = 1.0, start: datetime | None = None, *, origin: str | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed must be > 0, got {speed!r}")
        wall = utc_now()
        self.speed = float(speed)
        self.start = (start or wall).astimezone(UTC)
        self.origin = origin or ("wall" if start is None else "pinned")
        if self.origin not in ORIGINS:
            raise ValueError(f"clock origin must be one of {', '.join(ORIGINS)}, got {origin!r}")
        self.skew_s = (self.start - wall).total_seconds()  # station time minus wall time at the start
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed())

    def elapsed(self) -> float:
        """Simulated seconds since `start`."""
        return (time.monotonic() - self._t0) * self.speed

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds) / self.speed)

    def real_seconds(self, sim_seconds: float) -> float:
        return sim_seconds / self.speed

    def info(self) -> dict:
        """The clock in figures, for reports."""
        return {"mode": self.origin, "start": self.start.isoformat(), "speed": self.speed,
                "skew_s": round(self.skew_s, 1)}

    def describe(self) -> str:
        """One line for logs: which clock the station's timestamps and profiles run on."""
        pace = "" if self.speed == 1 else f", running {self.speed:g}x real time"
        if self.origin == "wall":
            return f"clock: wall clock{pace}"
        if self.origin == "manual":
            return f"clock: manual, from {self.start.isoformat()}"
        skew = _duration(self.skew_s)
        if self.origin == "offset":
            return f"clock: wall clock {skew} (skewed on purpose){pace}"
        return f"clock: pinned to {self.start.isoformat()} ({skew} against the wall clock){pace}"


def _duration(seconds: float) -> str:
    """+3600 -> '+1 h', -90 -> '-90 s', 3.6e7 -> '+416.7 days'."""
    sign = "-" if seconds < 0 else "+"
    value = abs(seconds)
    if value >= 2 * 86_400:
        return f"{sign}{value / 86_400:.1f} days"
    if value >= 7_200:
        return f"{sign}{value / 3600:.1f} h"
    return f"{sign}{value:.0f} s"


class ManualClock(Clock):
    """A clock that only moves when a test calls `advance`: drives the network-free station core."""

    def __init__(self, start: datetime | None = None) -> None:
        super().__init__(1.0, start, origin="manual")
        self._elapsed = 0.0

    def elapsed(self) -> float:
        return self._elapsed

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._elapsed += seconds
        return self.now()
