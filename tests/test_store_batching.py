"""Group commit: one failing job in a batch fails alone; the others are committed (SQLite's batches,
and the same promise on every backend)."""

import asyncio
import sqlite3
from datetime import datetime, timezone

import pytest

from csms.config import StoreConfig
from csms.store.factory import open_store as _open_store
from csms.store.sqlite import SqliteStore
from tests.edge_kit import BACKENDS, backend_overrides


def open_store(section):
    """The backend a ``store`` config section names, through the daemon's own factory."""
    return _open_store(StoreConfig(**section))


async def test_failing_job_fails_alone_and_batch_commits(tmp_path):
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        await store._submit(lambda c: c.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)"))

        def insert(k):
            return lambda c: c.execute("INSERT INTO t VALUES (?)", (k,))

        # Queue all jobs before the writer wakes, so they land in one batch; job 3 is a duplicate key.
        futs = [store._submit(insert(k)) for k in (1, 2, 2, 4)]
        results = await asyncio.gather(*futs, return_exceptions=True)
        assert [isinstance(r, sqlite3.IntegrityError) for r in results] == [False, False, True, False]
        rows = await store._rows("SELECT k FROM t ORDER BY k")
        assert [r["k"] for r in rows] == [1, 2, 4]
    finally:
        await store.close()

    # Committed means durable: a fresh connection sees the rows.
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert [k for (k,) in conn.execute("SELECT k FROM t ORDER BY k")] == [1, 2, 4]


async def test_closed_store_refuses_jobs(tmp_path):
    store = SqliteStore(str(tmp_path / "s.db"))
    with pytest.raises(RuntimeError, match="not open"):
        await store.get_station("x")


# Every backend: a refused write among concurrent ones fails alone ---------------------------------------
def _deep(depth: int) -> dict:
    value: object = "leaf"
    for _ in range(depth):
        value = {"d": value}
    return {"d": value}


@pytest.fixture(params=BACKENDS)
async def store_section(request, tmp_path):
    async with backend_overrides(request.param, tmp_path) as section:
        yield section


async def test_a_refused_write_among_concurrent_ones_fails_alone(store_section):
    """On SQLite the refused job shares a batch with the others (the batch is replayed job by job); on
    Redis it is refused before it joins a batch (tests/test_redis_group_commit.py: errors within one);
    on PostgreSQL each write is its own transaction. Either way only it fails, and a store opened
    afresh (a restarted daemon) reads the others."""
    at = datetime(2024, 3, 1, tzinfo=timezone.utc)
    store = open_store(store_section)
    await store.open()
    try:
        writes = [store.record_station_message("CS-1", "DataTransfer", {"n": i}, at) for i in range(8)]
        writes.insert(3, store.record_station_message("CS-1", "DataTransfer", _deep(400), at))
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert [isinstance(r, ValueError) for r in results] == [False] * 3 + [True] + [False] * 5, results
    finally:
        await store.close()
    again = open_store(store_section)
    await again.open()
    try:
        assert sorted(m["payload"]["n"] for m in await again.list_station_messages("CS-1")) == list(range(8))
    finally:
        await again.close()


async def test_every_closed_backend_refuses_calls(store_section):
    store = open_store(store_section)
    with pytest.raises(RuntimeError, match="not open"):
        await store.get_station("x")
