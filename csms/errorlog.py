"""Rate-limited error logging: one traceback per incident and class, then counts.

During an outage (the store is gone, a broker is down) every message fails the same way. Logging
each with its traceback buried the operator's log under thousands of identical tracebacks
(issue 16). Here a failure is keyed by where it happened and its exception class: the first one
of an incident is logged with its traceback, repeats are counted and reported as one line every
``window_s`` while they last, and once more when the place works again (the incident ends).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_INCIDENTS = 1000  # distinct (place, class) pairs tracked at once


@dataclass(slots=True)
class _Incident:
    started: float
    reported: float
    repeats: int = 0  # failures since the last line about this incident
    total: int = 1


class ErrorLog:
    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._open: dict[tuple[str, str], _Incident] = {}

    @property
    def active(self) -> bool:
        """Whether any incident is open (cheap: checked after every handled message)."""
        return bool(self._open)

    def failed(self, logger: logging.Logger, where: str, exc: BaseException, message: str = "failed") -> None:
        """Log ``exc`` at ``where``: with its traceback if it starts an incident, else counted."""
        key = (where, type(exc).__qualname__)
        now = self.clock()
        incident = self._open.get(key)
        if incident is None:
            if len(self._open) >= MAX_INCIDENTS:
                self._open.pop(next(iter(self._open)))
            self._open[key] = _Incident(now, now)
            logger.error("%s: %s (further %s here are counted, not logged one by one)", where, message, key[1],
                         exc_info=exc)
            return
        incident.repeats += 1
        incident.total += 1
        if now - incident.reported >= self.window_s:
            logger.error("%s: %s %d more times in the last %.0f s (%s: %s); still failing", where, message,
                         incident.repeats, now - incident.reported, key[1], exc)
            incident.repeats, incident.reported = 0, now

    def succeeded(self, logger: logging.Logger, where: str) -> None:
        """``where`` worked: end its incidents, saying how many failures were not logged."""
        if not self._open:
            return
        for key in [k for k in self._open if k[0] == where]:
            incident = self._open.pop(key)
            logger.warning("%s works again after %d failures (%s) in %.0f s%s", where, incident.total, key[1],
                           self.clock() - incident.started,
                           f"; {incident.repeats} since the last line about it" if incident.repeats else "")
