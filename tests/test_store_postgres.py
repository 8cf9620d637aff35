"""What only the PostgreSQL store has to show besides the shared contract (tests/test_store_contract.py):
several nodes on one database, a refused write failing alone, its options and config keys, the
schema it creates, and the tables as an operator queries them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from csms.config import ConfigError, parse_config, store_location
from csms.domain.records import StationRecord
from csms.store.postgres import PostgresStore
from tests.pg_kit import PG_DSN, pg_schema, schema_exists
from tests.test_store_contract import tx_event

pytestmark = pytest.mark.postgres
T0 = datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    async with pg_schema() as name:
        yield name


@pytest.fixture
async def nodes(schema: str) -> AsyncIterator[list[PostgresStore]]:
    """Two stores on one schema, as two daemon nodes sharing the database."""
    stores = [PostgresStore(PG_DSN, schema) for _ in range(2)]
    await asyncio.gather(*(s.open() for s in stores))  # both create the schema at once: one waits
    try:
        yield stores
    finally:
        for s in stores:
            await s.close()


async def test_two_nodes_store_a_retransmission_once(nodes: list[PostgresStore]) -> None:
    ev = tx_event("Updated", 3, T0, charging_state="Charging", energy_wh=10)
    outcomes = await asyncio.gather(*(nodes[i % 2].record_transaction_event("CS-1", ev, T0) for i in range(10)))
    assert sorted(outcomes) == [False] * 9 + [True]
    tx = await nodes[1].get_transaction("CS-1", "TX-1")
    assert tx is not None and tx.first_seen_as == "Updated" and tx.energy_wh == 10.0
    assert len(await nodes[0].meter_samples("CS-1")) == 1


async def test_two_nodes_merge_one_transactions_events_without_losing_any(nodes: list[PostgresStore]) -> None:
    """Every event of a new transaction at once, newest first, over two nodes: the first insert of the
    transaction's row wins, every other event merges into it under the row lock."""
    events = [tx_event("Started" if i == 0 else "Updated", i, T0 + timedelta(minutes=i), charging_state="Charging",
                       energy_wh=100.0 * i, evse={"id": 1, "connectorId": 1}) for i in range(24)]
    outcomes = await asyncio.gather(*(nodes[i % 2].record_transaction_event("CS-1", ev, T0)
                                      for i, ev in enumerate(reversed(events))))
    assert outcomes == [True] * 24
    tx = await nodes[0].get_transaction("CS-1", "TX-1")
    assert tx is not None and (tx.last_seq_no, tx.energy_wh, tx.started_at, tx.active) == (23, 2300.0, T0, True)
    assert len(await nodes[1].transaction_events("CS-1", "TX-1")) == 24
    assert [s["value"] for s in await nodes[1].meter_samples("CS-1", transaction_id="TX-1")] == [
        100.0 * i for i in range(24)]


async def test_counters_never_repeat_across_nodes(nodes: list[PostgresStore]) -> None:
    numbers = await asyncio.gather(*(nodes[i % 2].next_number("reservation") for i in range(40)))
    assert sorted(numbers) == list(range(1, 41))


async def test_a_refused_write_fails_alone_and_the_others_are_committed(schema: str) -> None:
    """A value PostgreSQL cannot hold (an integer beyond its column) is bad input: ValueError, nothing
    of it stored; the writes around it commit, and a fresh store (a restarted daemon) reads them."""
    store = PostgresStore(PG_DSN, schema, pool_size=4)
    await store.open()
    try:
        writes = [store.put_station(StationRecord(f"CS-{i}", security_profile=i)) for i in range(8)]
        writes.insert(3, store.put_station(StationRecord("CS-huge", security_profile=2**70)))
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert [isinstance(r, ValueError) for r in results] == [False] * 3 + [True] + [False] * 5, results
        assert "out of range" in str(results[3])
    finally:
        await store.close()
    again = PostgresStore(PG_DSN, schema)
    await again.open()  # the schema exists: opening again changes nothing
    try:
        assert [(s.station_id, s.security_profile) for s in await again.list_stations()] == [
            (f"CS-{i}", i) for i in range(8)]
    finally:
        await again.close()


async def test_text_with_nul_characters_is_kept_as_sent(schema: str) -> None:
    """PostgreSQL text cannot hold NUL; a station may send it in any free text (the edge lets control
    characters through outside id tokens), and SQLite and Redis keep it: so does this store."""
    odd = ["TX-\x00", "\x10", "a\x10\x00b\x10\x10", "\x100", "plain"]
    store = PostgresStore(PG_DSN, schema)
    await store.open()
    try:
        for i, text in enumerate(odd):
            assert await store.record_transaction_event("CS-1", tx_event("Started", 0, T0, tx_id=text, energy_wh=i), T0)
            assert not await store.record_transaction_event("CS-1", tx_event("Started", 0, T0, tx_id=text), T0)
            tx = await store.get_transaction("CS-1", text)
            assert tx is not None and tx.transaction_id == text and tx.energy_wh == i
            assert [s["transaction_id"] for s in await store.meter_samples("CS-1", transaction_id=text)] == [text]
            await store.record_security_event("CS-1", text, text, text, T0)
            await store.record_variables("CS-1", [{"component": {"name": text}, "variable": {"name": text},
                                                   "value": text}], T0)
        assert {t.transaction_id for t in await store.list_transactions()} == set(odd)
        assert [e["tech_info"] for e in await store.list_security_events("CS-1")] == odd[::-1]
        assert sorted(v["value"] for v in await store.list_variables("CS-1")) == sorted(odd)
    finally:
        await store.close()
    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        plain = await (await conn.execute(
            f"SELECT count(*) FROM {schema}.transactions WHERE transaction_id = 'plain'")).fetchone()
        assert plain == (1,)  # real text is stored as it is


async def test_closed_store_refuses_calls(schema: str) -> None:
    store = PostgresStore(PG_DSN, schema)
    with pytest.raises(RuntimeError, match="not open"):
        await store.get_station("x")
    await store.open()
    await store.close()
    with pytest.raises(RuntimeError, match="not open"):
        await store.put_station(StationRecord("x"))


async def test_tables_are_in_their_own_schema_and_queryable_as_sql(schema: str) -> None:
    store = PostgresStore(PG_DSN, schema)
    await store.open()
    try:
        assert await schema_exists(schema)
        await store.record_transaction_event("CS-1", tx_event("Started", 0, T0, energy_wh=1500,
                                                              evse={"id": 1, "connectorId": 1}), T0)
        await store.record_transaction_event("CS-1", tx_event("Ended", 1, T0 + timedelta(hours=1), energy_wh=9500,
                                                              stopped_reason="Local"), T0)
    finally:
        await store.close()
    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        table = f"{schema}.transactions"
        row = await (await conn.execute(
            f"SELECT started, ended - started AS duration, energy_wh, active FROM {table}")).fetchone()
        assert row == (T0, timedelta(hours=1), 9500.0, False)
        kinds = await (await conn.execute(
            f"SELECT payload->>'eventType' FROM {schema}.transaction_events ORDER BY seq_no")).fetchall()
        assert kinds == [("Started",), ("Ended",)]
        public = await (await conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'transactions'")).fetchone()
        assert public == (0,)


# Options and config ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"dsn": "http://127.0.0.1:5432/x"}, "postgres_dsn a URI must start with postgresql://"),
    ({"dsn": "nonsense here"}, "postgres_dsn not a libpq connection string"),
    ({"dsn": ""}, "postgres_dsn must be a libpq connection string"),
    ({"schema": "Netbewust"}, "postgres_schema must be 1-63 characters"),
    ({"schema": "a; DROP TABLE x"}, "postgres_schema must be"),
    ({"schema": "pg_catalog"}, "postgres_schema must be"),
    ({"pool_size": 0}, "postgres_pool_size must be an integer >= 1"),
])
def test_bad_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"dsn": PG_DSN, "schema": "netbewust", **kwargs}
    with pytest.raises(ValueError, match=message):
        PostgresStore(**args)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"store": {"backend": "postgres", "postgres_dsn": "mysql://x", "postgres_schema": "Bad-Name",
                                "postgres_pool_size": 0}}, "c.yaml")
    keys = sorted(issue.key for issue in err.value.issues)
    assert keys == ["store.postgres_dsn", "store.postgres_pool_size", "store.postgres_schema"], err.value
    with pytest.raises(ConfigError) as err:
        parse_config({"store": {"backend": "postgresql"}}, "c.yaml")
    assert [issue.key for issue in err.value.issues] == ["store.backend"]
    with pytest.raises(ConfigError) as err:
        parse_config({"store": {"backend": "postgres", "dsn": PG_DSN}}, "c.yaml")
    assert [issue.key for issue in err.value.issues] == ["store.dsn"]
    good = parse_config({"store": {"backend": "postgres", "postgres_dsn": "postgresql://u:secret@127.0.0.1/db",
                                   "postgres_schema": "site_a"}}, "c.yaml")
    assert (good.store.postgres_schema, good.store.postgres_pool_size) == ("site_a", 16)
    assert "secret" not in store_location(good.store) and "site_a" in store_location(good.store)


async def test_unreachable_server_gives_a_clear_error_without_the_password() -> None:
    store = PostgresStore("postgresql://postgres:secret@127.0.0.1:1/netbewust_test", "nbtest_unreachable")
    with pytest.raises(ConnectionError, match="cannot reach PostgreSQL at") as err:
        await store.open()
    assert "secret" not in str(err.value) and "***" in str(err.value)


async def test_a_missing_database_is_named() -> None:
    store = PostgresStore(PG_DSN.rsplit("/", 1)[0] + "/nbtest_no_such_database", "netbewust")
    with pytest.raises(ConnectionError, match="nbtest_no_such_database"):
        await store.open()
