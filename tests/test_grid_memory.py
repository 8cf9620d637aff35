"""GridMemory: the grid's durable writes go out in order, one writer, at any depth of queue."""

from __future__ import annotations

import asyncio
from pathlib import Path

from csms.grid.effects.memory import SETUP, GridMemory
from csms.grid.model.sessions import SessionBook
from csms.store.sqlite import SqliteStore


async def test_twenty_thousand_queued_writes_land_in_order_and_a_stop_cancels_the_rest(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "csms.db"))
    await store.open()
    try:
        memory = GridMemory(store)
        first = [memory.put(SETUP, f"CS-{i:05d}", {"n": i}) for i in range(2_000)]
        memory.delete(SETUP, "CS-00007")
        await memory.flush()
        assert all(f.done() and f.exception() is None for f in first)
        stored = dict(await memory.load(SETUP))
        assert len(stored) == 1_999 and "CS-00007" not in stored and stored["CS-01999"] == {"n": 1999}
        # A queue as deep as a whole fleet's set-ups, cancelled at a term's end: no recursion, waiters told.
        rest = [memory.put(SETUP, f"CS-{i:05d}", {"n": -i}) for i in range(20_000)]
        await asyncio.sleep(0)
        assert memory.bulk._writer is not None
        memory.bulk._writer.cancel()
        await asyncio.gather(memory.bulk._writer, return_exceptions=True)
        assert sum(f.cancelled() for f in rest) > 19_000
        assert all(f.done() for f in rest)
    finally:
        await store.close()


async def test_a_failed_write_fails_only_its_own_waiter(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "csms.db"))
    await store.open()
    try:
        memory = GridMemory(store)
        ok = memory.put(SETUP, "CS-1", {"n": 1})
        bad = memory.put(SETUP, "CS-2", {"n": {1, 2}})  # not JSON: the store refuses it
        after = memory.put(SETUP, "CS-3", {"n": 3})
        await memory.flush()
        assert ok.exception() is None and after.exception() is None
        assert bad.exception() is not None and memory.failed == 1
        assert sorted(k for k, _ in await store.list_documents("grid:" + SETUP)) == ["CS-1", "CS-3"]
    finally:
        await store.close()


def test_of_station_follows_sessions_started_and_ended() -> None:
    from datetime import UTC, datetime
    book = SessionBook()
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    for i in range(3):
        book.adopt("CS-A", 3 - i, f"tx-a{i}", t0)
    book.adopt("CS-B", 1, "tx-b", t0)
    assert [s.evse_id for s in book.of_station("CS-A")] == [1, 2, 3]
    book.adopt("CS-A", 2, "tx-a-new", t0)  # a new transaction on the same EVSE replaces the old
    assert [s.transaction_id for s in book.of_station("CS-A")] == ["tx-a2", "tx-a-new", "tx-a0"]
    book.ended("CS-A", "tx-a2")
    book.ended("CS-B", "tx-b")
    assert [s.evse_id for s in book.of_station("CS-A")] == [2, 3] and book.of_station("CS-B") == []


class _Watched:
    """A real store, watched: how many writes are in progress at once, and each key's values in the
    order they reached it."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.now = self.most = 0
        self.order: dict[str, list[object]] = {}

    async def put_document(self, scope: str, key: str, value: dict[str, object]) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        self.order.setdefault(key, []).append(value["n"])
        try:
            await asyncio.sleep(0)  # let the others start, as a store round trip would
            await self.store.put_document(scope, key, value)
        finally:
            self.now -= 1

    async def delete_document(self, scope: str, key: str) -> None:
        await self.store.delete_document(scope, key)

    async def list_documents(self, scope: str, limit: int) -> list[tuple[str, dict[str, object]]]:
        return await self.store.list_documents(scope, limit)


async def test_writes_of_different_keys_go_together_and_each_key_keeps_its_order(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "csms.db"))
    await store.open()
    try:
        watched = _Watched(store)
        memory = GridMemory(watched)  # type: ignore[arg-type]
        futures = []
        for i in range(600):
            futures.append(memory.put(SETUP, f"CS-{i:04d}", {"n": i}))
            if i % 100 == 0:
                futures.append(memory.put(SETUP, "CS-SAME", {"n": i}))  # one key written again and again
        await memory.flush()
        assert all(f.exception() is None for f in futures)
        assert watched.most > 50  # a new leader's thousands of set-ups are not written one by one
        assert watched.order["CS-SAME"] == sorted(watched.order["CS-SAME"]) and len(watched.order["CS-SAME"]) == 6
        assert dict(await memory.load(SETUP))["CS-SAME"] == {"n": 500}
    finally:
        await store.close()
