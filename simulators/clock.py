"""Simulated time: the station logic never reads the wall clock directly.

Simulation timers (meter interval, EV arrivals, profile periods) run on a `Clock` so a fleet
can run faster than real time (`speed`) and unit tests can step time by hand (`ManualClock`).
Network timers (heartbeat, reconnect, call timeouts) stay in real seconds because the central
system judges liveness by its own wall clock.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Clock:
    """Real time scaled by `speed`, starting at `start` (default: now)."""

    def __init__(self, speed: float = 1.0, start: datetime | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed must be > 0, got {speed!r}")
        self.speed = float(speed)
        self.start = (start or utc_now()).astimezone(timezone.utc)
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


class ManualClock(Clock):
    """A clock that only moves when a test calls `advance`: drives the network-free station core."""

    def __init__(self, start: datetime | None = None) -> None:
        super().__init__(1.0, start)
        self._elapsed = 0.0

    def elapsed(self) -> float:
        return self._elapsed

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._elapsed += seconds
        return self.now()
