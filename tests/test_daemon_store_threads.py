"""The SQLite store's writer thread under concurrent load.

A write used to return its sqlite3 cursor to the event loop, where it was finalised on the loop's
thread while the writer thread used the same connection: under load a write then failed with
"bad parameter or other API misuse" and the station got an InternalError.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from csms.domain.meter import flatten
from csms.domain.records import IdTokenRecord, StationRecord
from csms.ocpp.v201.transactions import tx_event
from csms.store.sqlite import SqliteStore
from tests.test_daemon_kit import meter_value, transaction_event

AT = datetime(2025, 1, 1, tzinfo=timezone.utc)


async def test_the_writer_thread_never_hands_a_cursor_to_the_event_loop(tmp_path: Path) -> None:
    """White-box on purpose: the race needs minutes of load to show, the cause is visible at once."""
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        result = await store._submit(lambda c: c.execute("INSERT INTO station_messages VALUES ('S','X','{}','t')"))
        assert not isinstance(result, sqlite3.Cursor)
        rows = await store.list_station_messages("S")
        assert [r["action"] for r in rows] == ["X"]  # and the write itself went through
        await store.put_station(StationRecord("S"))
        await store.put_id_token(IdTokenRecord("T"))
        assert (await store.get_station("S")) is not None and (await store.get_id_token("T")) is not None
    finally:
        await store.close()


async def test_many_concurrent_writers_all_succeed_and_are_all_stored(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "load.db"))
    await store.open()

    async def writer(n: int) -> None:
        for i in range(60):
            await store.record_meter_values(f"W{n}", flatten([meter_value(float(i), 1.0)], 1, None), AT)
            await store.record_transaction_event(f"W{n}", tx_event(transaction_event("Updated", "T", i,
                                                                                       energy_wh=float(i))), AT)

    try:
        await asyncio.wait_for(asyncio.gather(*(writer(n) for n in range(40))), 60)
        for n in (0, 17, 39):
            samples = await store.meter_samples(f"W{n}", evse_id=1)
            assert len(samples) == 60 * 2 + 60 * 2  # MeterValues and TransactionEvent samples
            assert len(await store.transaction_events(f"W{n}", "T")) == 60
    finally:
        await store.close()
