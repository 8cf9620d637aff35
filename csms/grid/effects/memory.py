"""The grid's durable state: what must survive a restart of the daemon.

Every accepted limit signal (whatever its source), each group's safe-mode state, and the needs
operators set for running sessions are written to the store as documents
(:class:`csms.store.base.DocumentStore`, scopes ``grid:<kind>``) in the order they happened, and
read back before the first plan after a start. Writes are queued in order on one task; each
returns a future, so the operator API can persist before it answers. Writes of different keys
waiting together go out together (a new leader remembers 10,000 set-ups at once; one at a time,
each a store round trip, they fell minutes behind); a key's writes stay in the order asked.

The limits (signals, safe mode, and what a source registers with :meth:`GridMemory.prioritise`)
have a lane of their own, with its own writer: their writes never wait behind the thousands of
set-ups, needs and findings queued at a busy moment (at 10,000 sessions a limit was answered 2.2 s
late behind them). A kind belongs to one lane, so each key's writes still land in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from csms.store.base import DocumentStore

log = logging.getLogger("csms.grid")

MAX_RECORDS = 1_000_000  # read back per kind at start (a need per running session at most)
WRITES_AT_ONCE = 256  # writes of distinct keys sent together (the store batches them into few round trips)
SIGNAL = "signal"  # key: "<transformer>|<source>", value: LimitSignal.to_record()
SAFE_MODE = "safe_mode"  # key: transformer, value: {"causes": {...}, "last_heard": iso | None}
NEED = "need"  # key: "<station>|<transaction>", value: the operator's need for that session
SETUP = "station_setup"  # key: station, value: what its set-up learnt and installed, and for which boot
LIMIT_KINDS = (SIGNAL, SAFE_MODE)  # written in the limit lane, ahead of everything else


def signal_key(transformer_id: str, source: str) -> str:
    return f"{transformer_id}|{source}"


def need_key(station_id: str, transaction_id: str) -> str:
    return f"{station_id}|{transaction_id}"


class GridMemory:
    """Ordered writes of the grid's durable state, in two lanes (limits, the rest), and reading it back."""

    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        self.limits = _Lane("limit")
        self.bulk = _Lane("bulk")
        self._limit_kinds: set[str] = set(LIMIT_KINDS)

    @property
    def failed(self) -> int:
        return self.limits.failed + self.bulk.failed

    def prioritise(self, *kinds: str) -> None:
        """Write these kinds in the limit lane (a source's own state that its limits depend on).
        Call before the first write of them, so a key never has writes in both lanes."""
        self._limit_kinds.update(kinds)

    def put(self, kind: str, key: str, value: dict[str, Any]) -> asyncio.Future[None]:
        """Write ``value`` after every write of its lane asked for before; await the result to know it is durable."""
        return self._lane(kind).add((kind, key), lambda: self.store.put_document(_scope(kind), key, value),
                                    f"{kind} {key}")

    def delete(self, kind: str, key: str) -> asyncio.Future[None]:
        async def job() -> None:
            await self.store.delete_document(_scope(kind), key)
        return self._lane(kind).add((kind, key), job, f"delete {kind} {key}")

    async def load(self, kind: str) -> dict[str, dict[str, Any]]:
        return dict(await self.store.list_documents(_scope(kind), MAX_RECORDS))

    async def flush(self) -> None:
        """Until every write asked for so far has ended (for a clean stop)."""
        await self.limits.flush()
        await self.bulk.flush()

    async def flush_limits(self) -> None:
        """Until every write of the limit lane asked for so far has ended (what a limit's answer waits for)."""
        await self.limits.flush()

    def _lane(self, kind: str) -> _Lane:
        return self.limits if kind in self._limit_kinds else self.bulk


class _Lane:
    """One writer task takes the writes in order from a queue (not a chain of tasks each awaiting the
    one before: 10,000 set-ups remembered at once made a chain that deep, and cancelling it at a
    term's end overflowed the recursion limit). It sends the writes at the head of the queue
    together, up to the first that touches a key already among them, so each key's writes land in
    the order they were asked for."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failed = 0
        self._queue: deque[_Write] = deque()
        self._writer: asyncio.Task[None] | None = None

    def add(self, key: tuple[str, str], write: Callable[[], Awaitable[None]], what: str) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        done.add_done_callback(_consume)
        self._queue.append(_Write(key, write, done, what))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_all(), name=f"grid memory writer ({self.name})")
        return done

    async def flush(self) -> None:
        while self._writer is not None and not self._writer.done():
            await asyncio.gather(asyncio.shield(self._writer), return_exceptions=True)

    async def _write_all(self) -> None:
        try:
            while self._queue:
                batch = self._next_batch()
                await asyncio.gather(*(self._write_one(w) for w in batch))
                for _ in batch:
                    self._queue.popleft()
        except asyncio.CancelledError:
            while self._queue:  # nobody will write these: their waiters learn it
                self._queue.popleft().done.cancel()
            raise

    def _next_batch(self) -> list[_Write]:
        """The writes at the head of the queue up to the first whose key is already among them."""
        batch: list[_Write] = []
        keys: set[tuple[str, str]] = set()
        for w in self._queue:
            if w.key in keys or len(batch) >= WRITES_AT_ONCE:
                break
            keys.add(w.key)
            batch.append(w)
        return batch

    async def _write_one(self, w: _Write) -> None:
        if w.done.cancelled():
            return
        try:
            await w.write()
        except Exception as exc:  # a failure is its own: the other writes go on
            self.failed += 1
            log.exception("grid state not saved (%s)", w.what)
            if not w.done.done():
                w.done.set_exception(exc)
        else:
            if not w.done.done():
                w.done.set_result(None)


@dataclass(frozen=True)
class _Write:
    key: tuple[str, str]  # (kind, key): writes of one key keep their order
    write: Callable[[], Awaitable[None]]
    done: asyncio.Future[None]
    what: str


def _scope(kind: str) -> str:
    return f"grid:{kind}"


def _consume(task: asyncio.Future[None]) -> None:
    """A write nobody awaits must not warn "exception never retrieved" (it was logged already)."""
    if not task.cancelled():
        task.exception()
