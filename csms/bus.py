"""The in-process bus: domain events from the protocol edge and the grid to whoever listens.

The edge publishes what happened (a station connected, a transaction started, meter values
arrived ...) after the station got its answer; the grid controller, the operator API's live
stream and the grid's own parts subscribe. Publishing is synchronous and cheap so it can sit on
the per-message path; slow consumers get their own bounded queue and lose the oldest events
rather than stall the daemon. It implements :class:`csms.interfaces.Bus`; a bus shared by several
nodes (e.g. on Redis Streams) implements the same three methods.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from csms.domain.events import Event
from csms.interfaces import Listener

log = logging.getLogger(__name__)


class LocalBus:
    def __init__(self) -> None:
        self._listeners: list[tuple[str | None, Listener]] = []

    def subscribe(self, listener: Listener, prefix: str | None = None) -> Callable[[], None]:
        """Call ``listener`` for every event whose kind starts with ``prefix``; returns an unsubscribe."""
        entry = (prefix, listener)
        self._listeners.append(entry)

        def unsubscribe() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)
        return unsubscribe

    def queue(self, prefix: str | None = None, maxsize: int = 10000) -> tuple[asyncio.Queue[Event], Callable[[], None]]:
        """A bounded queue fed with matching events (the oldest is dropped when it is full)."""
        q: asyncio.Queue[Event] = asyncio.Queue(maxsize)

        def put(ev: Event) -> None:
            if q.full():
                q.get_nowait()
            q.put_nowait(ev)
        return q, self.subscribe(put, prefix)

    def publish(self, event: Event) -> None:
        kind = event.kind
        for prefix, listener in list(self._listeners):
            if prefix is None or kind.startswith(prefix):
                try:
                    listener(event)
                except Exception:  # noqa: BLE001 - a broken subscriber must not break the edge
                    log.exception("bus listener failed for %s", kind)
