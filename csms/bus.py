"""In-process domain events.

The protocol edge publishes what happened (a station connected, a transaction started, meter
values arrived, EV needs arrived, a limit changed ...); the grid controller, the operator API's
live stream and the metrics subscribe. Publishing is synchronous and cheap so it can sit on the
per-message path; slow consumers get their own bounded queue and lose the oldest events rather
than stall the daemon.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # e.g. "station.connected", "transaction.started", "meter.values", "grid.limit"
    station_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


Listener = Callable[[Event], None]


class Bus:
    def __init__(self) -> None:
        self._listeners: list[tuple[str | None, Listener]] = []

    def subscribe(self, listener: Listener, prefix: str | None = None) -> Callable[[], None]:
        """Call ``listener`` for every event whose kind starts with ``prefix``; returns an unsubscribe."""
        entry = (prefix, listener)
        self._listeners.append(entry)
        return lambda: self._listeners.remove(entry) if entry in self._listeners else None

    def queue(self, prefix: str | None = None, maxsize: int = 10000) -> tuple[asyncio.Queue[Event], Callable[[], None]]:
        """A bounded queue fed with matching events (the oldest is dropped when it is full)."""
        q: asyncio.Queue[Event] = asyncio.Queue(maxsize)

        def put(ev: Event) -> None:
            if q.full():
                q.get_nowait()
            q.put_nowait(ev)
        return q, self.subscribe(put, prefix)

    def publish(self, kind: str, station_id: str | None = None, **data: Any) -> None:
        ev = Event(kind, station_id, data)
        for prefix, listener in list(self._listeners):
            if prefix is None or kind.startswith(prefix):
                try:
                    listener(ev)
                except Exception:  # noqa: BLE001 - a broken subscriber must not break the edge
                    log.exception("bus listener failed for %s", kind)
