"""The grid's durable state: what must survive a restart of the daemon.

Every accepted limit signal (whatever its source), each group's safe-mode state, and the needs
operators set for running sessions are written to the store as documents
(:class:`csms.store.base.DocumentStore`, scopes ``grid:<kind>``) in the order they happened, and
read back before the first plan after a start. Writes are queued in order on one task; each
returns a future, so the operator API can persist before it answers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from csms.store.base import DocumentStore

log = logging.getLogger("csms.grid")

MAX_RECORDS = 1_000_000  # read back per kind at start (a need per running session at most)
SIGNAL = "signal"  # key: "<transformer>|<source>", value: LimitSignal.to_record()
SAFE_MODE = "safe_mode"  # key: transformer, value: {"causes": {...}, "last_heard": iso | None}
NEED = "need"  # key: "<station>|<transaction>", value: the operator's need for that session
SETUP = "station_setup"  # key: station, value: what its set-up learnt and installed, and for which boot


def signal_key(transformer_id: str, source: str) -> str:
    return f"{transformer_id}|{source}"


def need_key(station_id: str, transaction_id: str) -> str:
    return f"{station_id}|{transaction_id}"


class GridMemory:
    """Ordered writes of the grid's durable state, and reading it back."""

    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        self._tail: asyncio.Future[None] | None = None
        self.failed = 0

    def put(self, kind: str, key: str, value: dict[str, Any]) -> asyncio.Future[None]:
        """Write ``value`` after every write asked for before; await the result to know it is durable."""
        return self._chain(lambda: self.store.put_document(_scope(kind), key, value), f"{kind} {key}")

    def delete(self, kind: str, key: str) -> asyncio.Future[None]:
        async def job() -> None:
            await self.store.delete_document(_scope(kind), key)
        return self._chain(job, f"delete {kind} {key}")

    async def load(self, kind: str) -> dict[str, dict[str, Any]]:
        return dict(await self.store.list_documents(_scope(kind), MAX_RECORDS))

    async def flush(self) -> None:
        """Until every write asked for so far has ended (for a clean stop)."""
        if self._tail is not None:
            await asyncio.gather(self._tail, return_exceptions=True)

    def _chain(self, write: Any, what: str) -> asyncio.Future[None]:
        previous = self._tail

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)  # in order; an earlier failure is its own
            try:
                await write()
            except Exception:
                self.failed += 1
                log.exception("grid state not saved (%s)", what)
                raise

        task: asyncio.Future[None] = asyncio.ensure_future(run())
        task.add_done_callback(_consume)
        self._tail = task
        return task


def _scope(kind: str) -> str:
    return f"grid:{kind}"


def _consume(task: asyncio.Future[None]) -> None:
    """A write nobody awaits must not warn "exception never retrieved" (it was logged already)."""
    if not task.cancelled():
        task.exception()
