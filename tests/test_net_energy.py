"""Net energy (import minus export) from both meter registers: the merge rule, both stores, old
records, and what the grid makes of it (a V2G car's remaining need grows by what it exported).

The property tests drive a meter that imports and exports in random steps; its registers are
reported in random events (either register, both or none; Wh or kWh), which then arrive in any
order and some of them twice. Whatever the order, the transaction's net energy must be what the
meter's registers say between the first and the last event that carried them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csms.domain.transactions import Registers, TxEvent, TxState, merge
from csms.ocpp.v201.transactions import tx_event
from csms.store.base import Store
from csms.store.postgres import PostgresStore
from csms.store.redis_store import RedisStore
from csms.store.sqlite import SqliteStore
from tests.pg_kit import PG_DSN, pg_schema
from tests.redis_kit import REDIS_URL, delete_prefix

T0 = datetime(2024, 3, 1, 17, 0, tzinfo=timezone.utc)


def z(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Report:
    """One TransactionEvent: which registers it carries (Wh) and in which unit it says them."""

    seq: int
    import_wh: float | None
    export_wh: float | None
    kwh: bool

    def payload(self, tx_id: str) -> dict[str, Any]:
        kind = "Started" if self.seq == 0 else "Updated"
        sampled = []
        for measurand, wh in (("Energy.Active.Import.Register", self.import_wh),
                              ("Energy.Active.Export.Register", self.export_wh)):
            if wh is not None:
                value = wh / 1000.0 if self.kwh else wh
                sampled.append({"value": value, "measurand": measurand,
                                "unitOfMeasure": {"unit": "kWh" if self.kwh else "Wh"}})
        p: dict[str, Any] = {"eventType": kind, "timestamp": z(T0 + timedelta(minutes=self.seq)),
                             "triggerReason": "MeterValuePeriodic", "seqNo": self.seq,
                             "transactionInfo": {"transactionId": tx_id}, "evse": {"id": 1}}
        if sampled:
            p["meterValue"] = [{"timestamp": p["timestamp"], "sampledValue": sampled}]
        return p


@st.composite
def meter_reports(draw: st.DrawFn) -> list[Report]:
    """A meter moving in random import/export steps (whole Wh, so kWh stays exact enough),
    reported after each step by an event carrying a random subset of its registers."""
    imp = float(draw(st.integers(0, 10**7)))
    exp = float(draw(st.integers(0, 10**6)))
    reports = []
    for seq in range(draw(st.integers(1, 12))):
        if seq:
            step = draw(st.integers(0, 20000))
            if draw(st.booleans()):
                imp += step
            else:
                exp += step
        carry = draw(st.sampled_from(["both", "both", "import", "export", "none"]))
        reports.append(Report(seq, imp if carry in ("both", "import") else None,
                              exp if carry in ("both", "export") else None, draw(st.booleans())))
    return reports


def expected_net(reports: list[Report]) -> float | None:
    """What the meter says: each register's value at the last event carrying it minus at the first."""
    imp = [r.import_wh for r in reports if r.import_wh is not None]
    exp = [r.export_wh for r in reports if r.export_wh is not None]
    if not imp:
        return None
    return (imp[-1] - imp[0]) - ((exp[-1] - exp[0]) if exp else 0.0)


def arrival(reports: list[Report], rnd: Any) -> list[Report]:
    """Reordered, with some events sent twice (retransmissions)."""
    sent = list(reports) + [r for r in reports if rnd.random() < 0.3]
    rnd.shuffle(sent)
    return sent


@settings(max_examples=150, deadline=None)
@given(meter_reports(), st.randoms(use_true_random=False))
def test_net_energy_is_what_the_registers_say_in_any_order(reports: list[Report], rnd: Any) -> None:
    state: TxState | None = None
    seen: set[int] = set()
    for r in arrival(reports, rnd):
        if r.seq in seen:  # the store refuses a seqNo it has (tested against both stores below)
            continue
        seen.add(r.seq)
        state = merge(state, tx_event(r.payload("TX")))
    assert state is not None
    want = expected_net(reports)
    got = state.registers.net_wh
    assert (got is None) == (want is None)
    if want is not None:
        assert got == pytest.approx(want, abs=1e-6)
    last_export = next((r.export_wh for r in reversed(reports) if r.export_wh is not None), 0.0)
    assert state.export_wh == pytest.approx(last_export)
    # Every step exported is counted once, however the events came in.
    if reports[0].import_wh is not None and reports[0].export_wh is not None \
            and reports[-1].import_wh is not None and reports[-1].export_wh is not None:
        steps_in = reports[-1].import_wh - reports[0].import_wh
        steps_out = reports[-1].export_wh - reports[0].export_wh
        assert got == pytest.approx(steps_in - steps_out)


def test_registers_round_trip_and_bad_records_read_as_none() -> None:
    regs = Registers().fold(3, 100.0, 5.0).fold(1, 80.0, None).fold(7, 150.0, 40.0)
    assert Registers.from_record(regs.record()) == regs
    assert regs.net_wh == pytest.approx(70.0 - 35.0)
    for bad in (None, "x", {"import_first": "nope"}, {"import_last": [1, True]}, {"export_last": [1]}):
        assert Registers.from_record(bad).export_register_wh == 0.0


# Both stores -------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "postgres":
        async with pg_schema() as schema:
            pg: Store = PostgresStore(PG_DSN, schema)
            await pg.open()
            try:
                yield pg
            finally:
                await pg.close()
        return
    prefix = f"nbtest:net:{uuid.uuid4().hex}:"
    backend: Store = (SqliteStore(str(tmp_path / "net.db")) if request.param == "sqlite"
                      else RedisStore(REDIS_URL, prefix))
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
        if request.param == "redis":
            await delete_prefix(prefix)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(meter_reports(), min_size=1, max_size=3), st.randoms(use_true_random=False))
async def test_both_stores_keep_net_energy_whatever_the_order(store: Store, runs: list[list[Report]],
                                                              rnd: Any) -> None:
    """Each example uses fresh transaction ids in the same store (the fixture is per test)."""
    base = uuid.uuid4().hex[:8]
    for n, reports in enumerate(runs):
        tx_id = f"{base}-{n}"
        stored = []
        for r in arrival(reports, rnd):
            stored.append(await asyncio.wait_for(
                store.record_transaction_event("CS-N", tx_event(r.payload(tx_id)), T0), 10))
        assert sum(stored) == len(reports)  # duplicates refused
        record = await store.get_transaction("CS-N", tx_id)
        assert record is not None
        want = expected_net(reports)
        assert (record.net_energy_wh is None) == (want is None)
        if want is not None:
            assert record.net_energy_wh == pytest.approx(want, abs=1e-6)
        last_export = next((r.export_wh for r in reversed(reports) if r.export_wh is not None), 0.0)
        assert record.export_wh == pytest.approx(last_export)


async def test_a_sqlite_record_from_before_reads_as_no_export(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the transactions table before the registers were kept
        conn.execute("CREATE TABLE transactions (station_id TEXT, transaction_id TEXT, evse_id INTEGER,"
                     " connector_id INTEGER, id_token TEXT, started_at TEXT, ended_at TEXT, active INTEGER,"
                     " charging_state TEXT, stopped_reason TEXT, last_seq_no INTEGER, energy_wh REAL,"
                     " first_seen_as TEXT, started_seq_no INTEGER, started_by TEXT,"
                     " PRIMARY KEY (station_id, transaction_id))")
        conn.execute("INSERT INTO transactions VALUES ('CS-1','OLD',1,1,NULL,'2024-03-01T17:00:00Z',NULL,1,"
                     "'Charging',NULL,3,100.0,'Started',0,'Started')")
    store = SqliteStore(str(path))
    await store.open()
    try:
        old = await store.get_transaction("CS-1", "OLD")
        assert old is not None and old.energy_wh == 100.0 and old.export_wh == 0.0 and old.net_energy_wh is None
        later = Report(4, 300.0, 50.0, False).payload("OLD")
        assert await store.record_transaction_event("CS-1", tx_event(later), T0)
        old = await store.get_transaction("CS-1", "OLD")
        assert old is not None and old.energy_wh == 300.0 and old.export_wh == 50.0
    finally:
        await store.close()


@pytest.mark.redis
async def test_a_redis_record_from_before_reads_as_no_export() -> None:
    prefix = f"nbtest:net:{uuid.uuid4().hex}:"
    store = RedisStore(REDIS_URL, prefix)
    await store.open()
    try:
        assert await store.record_transaction_event("CS-1", tx_event(Report(0, 100.0, 7.0, False).payload("OLD")), T0)
        client = aioredis.from_url(REDIS_URL, decode_responses=True)
        try:
            keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
            hashes = [k for k in keys if await client.type(k) == "hash" and await client.hexists(k, "registers")]
            assert len(hashes) == 1
            await client.hdel(hashes[0], "registers")  # as a record written before the registers were kept
        finally:
            await client.aclose()
        old = await store.get_transaction("CS-1", "OLD")
        assert old is not None and old.energy_wh == 100.0 and old.export_wh == 0.0 and old.net_energy_wh is None
        assert await store.record_transaction_event("CS-1", tx_event(Report(1, 180.0, 20.0, True).payload("OLD")), T0)
        old = await store.get_transaction("CS-1", "OLD")
        assert old is not None and old.export_wh == pytest.approx(20.0) and old.net_energy_wh == pytest.approx(0.0)
    finally:
        await store.close()
        await delete_prefix(prefix)


def test_event_registers_in_any_unit() -> None:
    ev: TxEvent = tx_event(Report(2, 12345.0, 678.0, True).payload("TX"))
    assert ev.energy_wh == pytest.approx(12345.0) and ev.export_wh == pytest.approx(678.0)
