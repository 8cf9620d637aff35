"""Group commit: one failing job in a batch fails alone; the others are committed."""

import asyncio
import sqlite3

import pytest

from csms.store.sqlite import SqliteStore


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
