"""The Store contract: every backend (SQLite, Redis, PostgreSQL) must behave the same, value for value.

Each Redis test writes under its own key prefix and deletes those keys afterwards, and each
PostgreSQL test in its own schema, dropped afterwards (tests/pg_kit.py), so tests can run against
the shared servers on 127.0.0.1 without seeing each other.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from csms.domain.meter import REGISTERS, flatten
from csms.domain.records import BootInfo, IdTokenRecord, StationRecord
from csms.domain.transactions import TxEvent, epoch
from csms.ocpp.v201.provisioning import boot_info
from csms.ocpp.v201.transactions import tx_event as v201_tx_event
from csms.store.base import Store
from csms.store.postgres import PostgresStore
from csms.store.redis_store import RedisStore, ReplicationError
from csms.store.sqlite import SqliteStore
from tests.daemon_fixture import running_daemon
from tests.ocpp_client import RawStation
from tests.pg_kit import PG_DSN, pg_schema
from tests.redis_kit import REDIS_URL, delete_prefix

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc)


def z(dt: datetime) -> str:
    """A station-style timestamp ("...Z"), as chargers send them."""
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@pytest.fixture
def redis_prefix() -> str:
    return f"nbtest:{uuid.uuid4().hex}:"


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path, redis_prefix: str) -> AsyncIterator[Store]:
    if request.param == "postgres":
        async with pg_schema() as schema:
            backend: Store = PostgresStore(PG_DSN, schema)
            await backend.open()
            try:
                yield backend
            finally:
                await backend.close()
        return
    backend = (SqliteStore(str(tmp_path / "contract.db")) if request.param == "sqlite"
               else RedisStore(REDIS_URL, redis_prefix))
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
        if request.param == "redis":
            await delete_prefix(redis_prefix)


def tx_event(event_type: str, seq: int, ts: datetime, tx_id: str = "TX-1", **kw: Any) -> TxEvent:
    """The event as a 2.0.1 station sends it, in the domain's terms (what the handler hands the store)."""
    return v201_tx_event(tx_payload(event_type, seq, ts, tx_id, **kw))


def tx_payload(event_type: str, seq: int, ts: datetime, tx_id: str = "TX-1", *, charging_state: str | None = None,
               energy_wh: float | None = None, evse: dict[str, int] | None = None, id_token: str | None = None,
               stopped_reason: str | None = None, offline: bool = False, extra_samples: list[dict[str, Any]] = ()
               ) -> dict[str, Any]:
    info: dict[str, Any] = {"transactionId": tx_id}
    if charging_state:
        info["chargingState"] = charging_state
    if stopped_reason:
        info["stoppedReason"] = stopped_reason
    p: dict[str, Any] = {"eventType": event_type, "timestamp": z(ts), "triggerReason": "MeterValuePeriodic",
                         "seqNo": seq, "transactionInfo": info}
    if evse:
        p["evse"] = evse
    if id_token:
        p["idToken"] = {"idToken": id_token, "type": "ISO14443"}
    if offline:
        p["offline"] = True
    sampled = list(extra_samples)
    if energy_wh is not None:
        sampled.append({"value": energy_wh, "context": "Sample.Periodic"})
    if sampled:
        p["meterValue"] = [{"timestamp": z(ts), "sampledValue": sampled}]
    return p


# Stations ---------------------------------------------------------------------------------------
async def test_station_round_trip_and_replace(store: Store) -> None:
    assert await store.get_station("CS-1") is None
    rec = StationRecord("CS-1", registration="Accepted", registered=True, vendor="V", model="M",
                        serial_number="SN", firmware_version="1.2", boot_reason="PowerUp", last_boot=T0,
                        last_seen=T0 + timedelta(seconds=5), connected=True, security_profile=2,
                        password_hash="h$1", extra={"site": "Utrecht", "tags": [1, 2]})
    await store.put_station(rec)
    assert await store.get_station("CS-1") == rec
    replaced = StationRecord("CS-1", registration="Pending", extra={"site": "Zeist"})
    await store.put_station(replaced)
    assert await store.get_station("CS-1") == replaced  # whole record replaced, old fields gone
    await store.put_station(StationRecord("CS-0"))
    assert [s.station_id for s in await store.list_stations()] == ["CS-0", "CS-1"]


async def test_record_boot_inserts_then_updates_keeping_operator_fields(store: Store) -> None:
    boot = {"reason": "PowerUp", "chargingStation": {"vendorName": "V", "model": "M", "serialNumber": "SN",
                                                     "firmwareVersion": "1.0"}}
    await store.record_boot("CS-1", boot_info(boot), "Accepted", T0)
    first = await store.get_station("CS-1")
    assert first is not None
    assert (first.registration, first.registered, first.vendor, first.firmware_version, first.connected,
            first.last_boot, first.last_seen, first.security_profile, first.extra) == (
        "Accepted", False, "V", "1.0", True, T0, T0, 0, {})
    first.registered, first.security_profile, first.password_hash, first.extra = True, 2, "h", {"k": 1}
    first.connected = False
    await store.put_station(first)
    later = T0 + timedelta(hours=1)
    await store.record_boot("CS-1", BootInfo(vendor="V2", model="M", reason="Watchdog"), "Pending", later)
    again = await store.get_station("CS-1")
    assert again is not None
    assert (again.registration, again.vendor, again.firmware_version, again.serial_number, again.boot_reason,
            again.last_boot, again.connected) == ("Pending", "V2", None, None, "Watchdog", later, True)
    assert (again.registered, again.security_profile, again.password_hash, again.extra) == (True, 2, "h", {"k": 1})


async def test_connection_state_and_touch_only_update_known_stations(store: Store) -> None:
    await store.put_station(StationRecord("CS-1", registration="Accepted"))
    await store.set_connection_state("CS-1", True, T0)
    await store.set_connection_state("ghost", True, T0)
    rec = await store.get_station("CS-1")
    assert rec is not None and rec.connected and rec.last_seen == T0
    assert await store.get_station("ghost") is None
    await store.set_connection_state("CS-1", False, T0 + timedelta(seconds=1))
    rec = await store.get_station("CS-1")
    assert rec is not None and not rec.connected and rec.last_seen == T0 + timedelta(seconds=1)

    await store.touch_stations({})
    await store.touch_stations({"CS-1": T0 + timedelta(minutes=3), "ghost": T0})
    rec = await store.get_station("CS-1")
    assert rec is not None and rec.last_seen == T0 + timedelta(minutes=3) and rec.registration == "Accepted"
    assert await store.get_station("ghost") is None
    assert [s.station_id for s in await store.list_stations()] == ["CS-1"]


async def test_delete_station_removes_station_and_connectors_but_keeps_history(store: Store) -> None:
    await store.record_boot("CS-1", BootInfo(vendor="V", model="M", reason="PowerUp"), "Accepted", T0)
    await store.set_connector_status("CS-1", 1, 1, "Occupied", T0)
    assert await store.record_transaction_event("CS-1", tx_event("Started", 0, T0), T0)
    assert await store.delete_station("CS-1") is True
    assert await store.delete_station("CS-1") is False
    assert await store.get_station("CS-1") is None
    assert await store.list_stations() == []
    assert await store.list_connectors("CS-1") == []
    assert (await store.get_transaction("CS-1", "TX-1")) is not None


async def test_ids_with_separators_do_not_collide(store: Store) -> None:
    await store.record_station_message("A", "Heartbeat:x", {"n": 1}, T0)
    await store.record_station_message("A:Heartbeat", "x", {"n": 2}, T0)
    assert [m["payload"] for m in await store.list_station_messages("A")] == [{"n": 1}]
    assert [m["payload"] for m in await store.list_station_messages("A:Heartbeat")] == [{"n": 2}]
    assert await store.list_station_messages("A", "Heartbeat") == []


# Connectors and tokens --------------------------------------------------------------------------
async def test_connectors_upsert_and_order(store: Store) -> None:
    await store.set_connector_status("CS-1", 2, 1, "Available", T0)
    await store.set_connector_status("CS-1", 1, 2, "Faulted", T0)
    await store.set_connector_status("CS-1", 1, 1, "Available", T0)
    await store.set_connector_status("CS-1", 1, 1, "Occupied", T0 + timedelta(seconds=9))
    await store.set_connector_status("CS-2", 1, 1, "Unavailable", T0)
    rows = await store.list_connectors("CS-1")
    assert [(r["evse_id"], r["connector_id"], r["status"]) for r in rows] == [
        (1, 1, "Occupied"), (1, 2, "Faulted"), (2, 1, "Available")]
    assert datetime.fromisoformat(rows[0]["updated_at"]) == T0 + timedelta(seconds=9)


async def test_id_tokens_round_trip_replace_delete(store: Store) -> None:
    assert await store.get_id_token("TOK-1") is None
    tok = IdTokenRecord("TOK-1", "ISO14443", "Accepted", T0 + timedelta(days=30), "GROUP-A")
    await store.put_id_token(tok)
    await store.put_id_token(IdTokenRecord("TOK-0", "eMAID", "Blocked"))
    assert await store.get_id_token("TOK-1") == tok
    await store.put_id_token(IdTokenRecord("TOK-1", "ISO14443", "Expired"))
    assert await store.get_id_token("TOK-1") == IdTokenRecord("TOK-1", "ISO14443", "Expired", None, None)
    assert [t.id_token for t in await store.list_id_tokens()] == ["TOK-0", "TOK-1"]
    assert await store.delete_id_token("TOK-1") is True
    assert await store.delete_id_token("TOK-1") is False
    assert [t.id_token for t in await store.list_id_tokens()] == ["TOK-0"]


# Transactions -----------------------------------------------------------------------------------
async def test_transaction_lifecycle(store: Store) -> None:
    evse = {"id": 1, "connectorId": 1}
    assert await store.record_transaction_event(
        "CS-1", tx_event("Started", 0, T0, charging_state="EVConnected", energy_wh=1000, evse=evse,
                         id_token="TOK-1"), T0)
    assert await store.record_transaction_event(
        "CS-1", tx_event("Updated", 1, T0 + timedelta(minutes=15), charging_state="Charging", energy_wh=3500), T0)
    tx = await store.get_transaction("CS-1", "TX-1")
    assert tx is not None
    assert (tx.evse_id, tx.connector_id, tx.id_token, tx.started_at, tx.ended_at, tx.active, tx.charging_state,
            tx.last_seq_no, tx.energy_wh, tx.first_seen_as) == (
        1, 1, "TOK-1", T0, None, True, "Charging", 1, 3500.0, "Started")
    end = T0 + timedelta(hours=1)
    assert await store.record_transaction_event(
        "CS-1", tx_event("Ended", 2, end, charging_state="Idle", energy_wh=9000, stopped_reason="EVDisconnected"), T0)
    tx = await store.get_transaction("CS-1", "TX-1")
    assert tx is not None
    assert (tx.active, tx.ended_at, tx.stopped_reason, tx.energy_wh, tx.charging_state, tx.last_seq_no) == (
        False, end, "EVDisconnected", 9000.0, "Idle", 2)
    events = await store.transaction_events("CS-1", "TX-1")
    assert [e["seqNo"] for e in events] == [0, 1, 2]
    assert events[0]["idToken"]["idToken"] == "TOK-1" and datetime.fromisoformat(events[0]["receivedAt"]) == T0
    assert await store.get_transaction("CS-1", "TX-unknown") is None
    assert await store.get_transaction("CS-2", "TX-1") is None


async def test_retransmission_is_stored_once(store: Store) -> None:
    ev = tx_event("Started", 0, T0, energy_wh=500, evse={"id": 1, "connectorId": 1})
    assert await store.record_transaction_event("CS-1", ev, T0) is True
    changed = replace(ev, trigger_reason="Authorized", payload={**ev.payload, "triggerReason": "Authorized"})
    # same (station, tx, seqNo): still the same event
    assert await store.record_transaction_event("CS-1", changed, T0 + timedelta(seconds=30)) is False
    events = await store.transaction_events("CS-1", "TX-1")
    assert len(events) == 1 and events[0]["triggerReason"] == "MeterValuePeriodic"
    assert len(await store.meter_samples("CS-1")) == 1
    # The same seqNo on another station or transaction is a different event.
    assert await store.record_transaction_event("CS-2", ev, T0) is True
    assert await store.record_transaction_event("CS-1", tx_event("Started", 0, T0, tx_id="TX-2"), T0) is True


async def test_concurrent_retransmissions_store_exactly_one(store: Store) -> None:
    ev = tx_event("Updated", 7, T0, charging_state="Charging", energy_wh=42)
    outcomes = await asyncio.gather(*(store.record_transaction_event("CS-1", ev, T0) for _ in range(20)))
    assert sorted(outcomes) == [False] * 19 + [True]
    assert len(await store.transaction_events("CS-1", "TX-1")) == 1
    assert len(await store.meter_samples("CS-1", transaction_id="TX-1")) == 1


async def test_out_of_order_offline_events(store: Store) -> None:
    """The newest seqNo decides state and energy; the earliest event decides the start."""
    t = [T0 + timedelta(minutes=10 * i) for i in range(4)]
    assert await store.record_transaction_event("CS-1", tx_event("Started", 0, t[0], charging_state="EVConnected",
                                                                 energy_wh=0), t[0])
    assert await store.record_transaction_event("CS-1", tx_event("Updated", 3, t[3], charging_state="SuspendedEV",
                                                                 energy_wh=3000), t[3])
    # Queued while offline, delivered late:
    assert await store.record_transaction_event("CS-1", tx_event("Updated", 1, t[1], charging_state="Charging",
                                                                 energy_wh=1000, offline=True), t[3])
    assert await store.record_transaction_event("CS-1", tx_event("Updated", 2, t[2], charging_state="Charging",
                                                                 energy_wh=2000, offline=True), t[3])
    tx = await store.get_transaction("CS-1", "TX-1")
    assert tx is not None
    assert (tx.last_seq_no, tx.charging_state, tx.energy_wh, tx.started_at, tx.active) == (
        3, "SuspendedEV", 3000.0, t[0], True)
    assert [e["seqNo"] for e in await store.transaction_events("CS-1", "TX-1")] == [0, 1, 2, 3]
    assert [s["value"] for s in await store.meter_samples("CS-1", transaction_id="TX-1")] == [0, 1000, 2000, 3000]


async def test_first_seen_as_updated_then_late_started(store: Store) -> None:
    t1, t0 = T0 + timedelta(minutes=30), T0
    assert await store.record_transaction_event("CS-1", tx_event("Updated", 4, t1, charging_state="Charging",
                                                                 energy_wh=4000), t1)
    tx = await store.get_transaction("CS-1", "TX-1")
    assert tx is not None and (tx.first_seen_as, tx.started_at, tx.active, tx.evse_id) == ("Updated", t1, True, None)
    assert await store.record_transaction_event(
        "CS-1", tx_event("Started", 0, t0, charging_state="EVConnected", energy_wh=0, evse={"id": 2, "connectorId": 1},
                         id_token="TOK-9"), t1)
    tx = await store.get_transaction("CS-1", "TX-1")
    assert tx is not None
    assert (tx.first_seen_as, tx.started_at, tx.charging_state, tx.energy_wh, tx.last_seq_no, tx.evse_id,
            tx.connector_id, tx.id_token) == ("Updated", t0, "Charging", 4000.0, 4, 2, 1, "TOK-9")


async def test_first_seen_as_ended_and_late_update_after_end(store: Store) -> None:
    end = T0 + timedelta(hours=2)
    assert await store.record_transaction_event("CS-1", tx_event("Ended", 5, end, stopped_reason="Local",
                                                                 energy_wh=7000), end)
    tx = await store.get_transaction("CS-1", "TX-1")
    assert tx is not None
    assert (tx.first_seen_as, tx.active, tx.started_at, tx.ended_at, tx.stopped_reason) == (
        "Ended", False, end, end, "Local")
    assert await store.record_transaction_event("CS-1", tx_event("Updated", 3, T0 + timedelta(hours=1),
                                                                 charging_state="Charging", energy_wh=5000), end)
    tx = await store.get_transaction("CS-1", "TX-1")
    assert tx is not None
    assert (tx.active, tx.ended_at, tx.energy_wh, tx.last_seq_no, tx.started_at) == (
        False, end, 7000.0, 5, T0 + timedelta(hours=1))
    assert await store.list_transactions(active=True) == []


async def test_list_transactions_filters_order_and_limit(store: Store) -> None:
    # TX-A: CS-1, 08:00-09:00 ended; TX-B: CS-1, 10:00 active; TX-C: CS-2, 09:30 active; TX-D: CS-2 07:00-07:30
    spans = {"TX-A": ("CS-1", T0, T0 + timedelta(hours=1)), "TX-B": ("CS-1", T0 + timedelta(hours=2), None),
             "TX-C": ("CS-2", T0 + timedelta(hours=1, minutes=30), None),
             "TX-D": ("CS-2", T0 - timedelta(hours=1), T0 - timedelta(minutes=30))}
    for tx_id, (sid, start, end) in spans.items():
        assert await store.record_transaction_event(sid, tx_event("Started", 0, start, tx_id), start)
        if end is not None:
            assert await store.record_transaction_event(sid, tx_event("Ended", 1, end, tx_id), end)

    async def ids(**kw: Any) -> list[str]:
        return [t.transaction_id for t in await store.list_transactions(**kw)]

    assert await ids() == ["TX-B", "TX-C", "TX-A", "TX-D"]  # newest start first
    assert await ids(station_id="CS-1") == ["TX-B", "TX-A"]
    assert await ids(active=True) == ["TX-B", "TX-C"]
    assert await ids(active=False) == ["TX-A", "TX-D"]
    assert await ids(station_id="CS-2", active=True) == ["TX-C"]
    assert await ids(since=T0 + timedelta(minutes=30)) == ["TX-B", "TX-C", "TX-A"]  # ended before: out
    assert await ids(since=T0 + timedelta(hours=1)) == ["TX-B", "TX-C", "TX-A"]  # ended exactly then: in
    assert await ids(until=T0 + timedelta(hours=1)) == ["TX-A", "TX-D"]
    assert await ids(until=T0) == ["TX-A", "TX-D"]  # started exactly at ``until``: in
    assert await ids(since=T0 + timedelta(minutes=59), until=T0 + timedelta(hours=1, minutes=45)) == ["TX-C", "TX-A"]
    assert await ids(active=True, until=T0 + timedelta(hours=1, minutes=45)) == ["TX-C"]
    assert await ids(limit=2) == ["TX-B", "TX-C"]
    assert await ids(active=False, limit=1) == ["TX-A"]
    assert await ids(limit=0) == []
    assert await ids(station_id="CS-9") == []


async def test_list_transactions_pages_past_filtered_records(store: Store) -> None:
    """Many newer records failing the filter must not hide older ones that pass (bounded by limit)."""
    for i in range(30):
        start = T0 + timedelta(minutes=i)
        assert await store.record_transaction_event("CS-1", tx_event("Started", 0, start, f"TX-{i:02d}"), start)
        if i < 5:
            assert await store.record_transaction_event("CS-1", tx_event("Ended", 1, start, f"TX-{i:02d}"), start)
    found = await store.list_transactions(station_id="CS-1", active=False, limit=3)
    assert [t.transaction_id for t in found] == ["TX-04", "TX-03", "TX-02"]


# Meter values -----------------------------------------------------------------------------------
async def test_meter_samples_flattened_and_filtered(store: Store) -> None:
    t = [T0 + timedelta(minutes=i) for i in range(3)]
    mv = [{"timestamp": z(t[1]), "sampledValue": [
        {"value": 7.4, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "kW"}},
        {"value": 16, "measurand": "Current.Import", "phase": "L1", "unitOfMeasure": {"unit": "A"}},
        {"value": 2.5, "unitOfMeasure": {"unit": "Wh", "multiplier": 3}, "context": "Sample.Clock"}]},
        {"timestamp": z(t[0]), "sampledValue": [{"value": 1000}]}]
    await store.record_meter_values("CS-1", flatten(mv, 1, None), t[2])
    await store.record_meter_values("CS-1", flatten([{"timestamp": z(t[2]), "sampledValue": [{"value": 9}]}], 2, None),
                                    t[2])
    await store.record_meter_values("CS-2", flatten([{"timestamp": z(t[2]), "sampledValue": [{"value": 5}]}], 1, None),
                                    t[2])
    assert await store.record_transaction_event("CS-1", tx_event("Started", 0, t[2], energy_wh=2600,
                                                                 evse={"id": 1}), t[2])

    rows = await store.meter_samples("CS-1")
    assert [(r["timestamp"], r["evse_id"], r["transaction_id"], r["measurand"], r["phase"], r["value"], r["unit"],
             r["context"]) for r in rows] == [
        (z(t[0]), 1, None, "Energy.Active.Import.Register", None, 1000.0, None, None),
        (z(t[1]), 1, None, "Power.Active.Import", None, 7.4, "kW", None),
        (z(t[1]), 1, None, "Current.Import", "L1", 16.0, "A", None),
        (z(t[1]), 1, None, "Energy.Active.Import.Register", None, 2500.0, "Wh", "Sample.Clock"),
        (z(t[2]), 2, None, "Energy.Active.Import.Register", None, 9.0, None, None),
        (z(t[2]), 1, "TX-1", "Energy.Active.Import.Register", None, 2600.0, None, "Sample.Periodic"),
    ]
    assert [r["value"] for r in await store.meter_samples("CS-1", transaction_id="TX-1")] == [2600.0]
    assert [r["value"] for r in await store.meter_samples("CS-1", evse_id=2)] == [9.0]
    assert [r["value"] for r in await store.meter_samples("CS-1", since=t[1])] == [7.4, 16.0, 2500.0, 9.0, 2600.0]
    assert [r["value"] for r in await store.meter_samples("CS-1", evse_id=1, since=t[1], limit=2)] == [7.4, 16.0]
    assert await store.meter_samples("CS-1", limit=0) == []
    assert [r["value"] for r in await store.meter_samples("CS-2")] == [5.0]
    assert await store.meter_samples("CS-9") == []


async def test_meter_values_are_not_deduplicated(store: Store) -> None:
    """MeterValues has no sequence number: a repeat is stored again, as the station sent it twice."""
    mv = [{"timestamp": z(T0), "sampledValue": [{"value": 1}]}]
    await store.record_meter_values("CS-1", flatten(mv, 1, None), T0)
    await store.record_meter_values("CS-1", flatten(mv, 1, None), T0)
    assert [r["value"] for r in await store.meter_samples("CS-1")] == [1.0, 1.0]


def _meter_event(seq: int, values: list[tuple[str, list[dict[str, Any]]]], tx_id: str = "TX-A",
                 evse: int | None = None, offline: bool = False) -> TxEvent:
    """A TransactionEvent carrying meter values at the given (textual) timestamps."""
    payload: dict[str, Any] = {"eventType": "Started" if seq == 0 else "Updated", "timestamp": values[0][0],
                               "triggerReason": "MeterValuePeriodic", "seqNo": seq, "offline": offline,
                               "transactionInfo": {"transactionId": tx_id},
                               "meterValue": [{"timestamp": ts, "sampledValue": sv} for ts, sv in values]}
    if evse is not None:
        payload["evse"] = {"id": evse, "connectorId": 1}
    return v201_tx_event(payload)


def _kwh(value: float) -> dict[str, Any]:
    return {"value": value, "unitOfMeasure": {"unit": "kWh"}}


async def test_meter_bounds_decide_as_all_samples(store: Store) -> None:
    """The new grid leader reads only the samples that decide a session's registers and latest
    reading; on odd data (kWh and Wh, phase rows, equal instants written differently, events out
    of order, offsets whose text order is not their time order) they give what all samples give."""
    from csms.grid.effects.rebuild import _readings
    from csms.grid.model.sessions import Session
    power = "Power.Active.Import"
    events = [
        _meter_event(0, [("2024-03-01T08:00:00Z", [_kwh(2.0), {"value": 10, "measurand": "Energy.Active.Export.Register"},
                                                   {"value": 3.0, "measurand": power, "unitOfMeasure": {"unit": "kW"}}])],
                     evse=1),
        _meter_event(1, [("2024-03-01T08:00:00.000Z", [{"value": 1500}]),  # the same instant, less: the first
                         ("2024-03-01T09:30:00+01:00", [{"value": 99999, "phase": "L1"}, _kwh(4.5)])]),
        _meter_event(3, [("2024-03-01T09:00:00Z", [{"value": 9000},
                                                   {"value": 0.05, "measurand": "Energy.Active.Export.Register",
                                                    "unitOfMeasure": {"unit": "kWh"}}]),
                         ("2024-03-01T09:00:00.000Z", [_kwh(9.1)])]),  # the last instant twice: the larger
        _meter_event(2, [("2024-03-01T07:59:59.500Z", [{"value": 5, "measurand": "Energy.Active.Export.Register"},
                                                       {"value": 7, "measurand": power}])], offline=True),
        # the latest by text (08:45Z): per-phase power only, and a later instant (09:00Z) exists
        _meter_event(4, [("2024-03-01T09:45:00+01:00", [
            *({"value": 2.0, "measurand": power, "phase": p, "unitOfMeasure": {"unit": "kW"}} for p in ("L1", "L2", "L3")),
            {"value": 100, "measurand": "Power.Active.Export", "phase": "L1"},
            {"value": 50, "measurand": "SoC", "unitOfMeasure": {"unit": "Percent"}}])]),
    ]
    for ev in events:
        assert await store.record_transaction_event("CS-1", ev, T0)
    assert await store.record_transaction_event("CS-1", _meter_event(0, [
        ("2024-03-01T08:00:00Z", [{"value": 100}, {"value": 1000, "measurand": power}])], "TX-B", evse=2), T0)
    assert await store.record_transaction_event("CS-1", _meter_event(1, [  # the latest has no power
        ("2024-03-01T08:10:00Z", [{"value": 40, "measurand": "SoC"}])], "TX-B"), T0)
    assert await store.record_transaction_event("CS-2", _meter_event(0, [("2024-03-01T08:00:00Z", [{"value": 7}])],
                                                                     evse=1), T0)
    assert await store.record_transaction_event("CS-1", tx_event("Started", 0, T0, "TX-C", evse={"id": 3}), T0)
    await store.record_meter_values("CS-1", flatten([{"timestamp": "2024-03-01T10:00:00Z",
                                                      "sampledValue": [{"value": 1}]}], 1, None), T0)  # no transaction

    keys = [("CS-1", "TX-A"), ("CS-1", "TX-B"), ("CS-2", "TX-A"), ("CS-1", "TX-C"), ("CS-9", "TX-A")]
    bounds = await store.meter_bounds(keys)
    assert sorted(bounds) == sorted(keys)

    def readings(rows: list[dict[str, Any]]) -> tuple[float | None, ...]:
        session = Session("CS", 1, "TX", T0)
        _readings(session, rows, T0)
        return session.start_energy_wh, session.energy_wh, session.start_export_wh, session.export_wh, session.power_kw

    for sid, tx_id in keys:
        every = await store.meter_samples(sid, transaction_id=tx_id)
        assert all(row in every for row in bounds[(sid, tx_id)])
        assert readings(bounds[(sid, tx_id)]) == readings(every), (sid, tx_id)
    assert readings(bounds[("CS-1", "TX-A")]) == (1500.0, 9100.0, 5.0, 50.0, 5.9)
    assert len(bounds[("CS-1", "TX-A")]) < len(await store.meter_samples("CS-1", transaction_id="TX-A"))
    assert readings(bounds[("CS-1", "TX-B")]) == (100.0, 100.0, None, None, None)
    assert readings(bounds[("CS-2", "TX-A")]) == (7.0, 7.0, None, None, None)
    assert bounds[("CS-1", "TX-C")] == bounds[("CS-9", "TX-A")] == []
    assert await store.meter_bounds([]) == {}


def _odd_history(rng: random.Random, events: int = 80) -> list[TxEvent]:
    """A long transaction's events, shuffled (offline queues): the import register absent at the
    first instant (power and a phase register only), several samples at one instant written
    differently (``Z``, ``.000Z``, an offset), kWh and Wh, phase rows, an export register only in
    the middle, and the latest timestamp by text (``+02:00``) at an instant before the last."""
    power, export = "Power.Active.Import", "Energy.Active.Export.Register"
    start = datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc)
    out = []
    for seq in range(events):
        at = start + timedelta(minutes=seq)
        wh = 1000.0 + 100 * seq
        sampled: list[dict[str, Any]] = [{"value": 7.0 + seq, "measurand": power, "unitOfMeasure": {"unit": "kW"}},
                                         *({"value": 16.0, "measurand": "Current.Import", "phase": p}
                                           for p in ("L1", "L2", "L3"))]
        if seq:
            sampled.append(_kwh(wh / 1000) if rng.random() < 0.5 else {"value": wh})
        sampled.append({"value": wh / 3 + 9999, "phase": "L1"})  # a phase register decides nothing
        if events // 3 <= seq < events // 2:
            sampled.append({"value": float(seq), "measurand": export})
        values = [(z(at), sampled)]
        if seq % 7 == 3 or seq == events - 1:  # the same instant again, written differently, other values
            values.append((z(at).replace("Z", ".000Z"), [{"value": wh + 1}, {"value": wh - 1, "phase": "L2"}]))
            values.append(((at + timedelta(hours=1)).isoformat().replace("+00:00", "+01:00"), [{"value": wh + 2}]))
        if seq == events // 3:
            values.append((z(at), [{"value": -1.0, "measurand": export}]))  # two export rows at its first instant
        if seq == events // 2:  # the latest by text, not in time: per-phase power only
            values.append(((at + timedelta(hours=2)).isoformat().replace("+00:00", "+02:00"),
                           [{"value": 1.0, "measurand": power, "phase": p} for p in ("L1", "L2")]))
        out.append(_meter_event(seq, values, "TX-L", evse=1 if seq == 0 else None, offline=seq % 5 == 0))
    rng.shuffle(out)
    return out


def _deciding(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What :meth:`~csms.store.base.TransactionStore.meter_bounds` must give at least, from all samples."""
    if not rows:
        return []
    last = max(r["timestamp"] for r in rows)
    ends: dict[str, list[float]] = {}
    for r in rows:
        if r["phase"] is None and r["measurand"] in REGISTERS:
            ends.setdefault(r["measurand"], []).append(epoch(r["timestamp"], "sample"))
    return [r for r in rows if r["timestamp"] == last or (r["phase"] is None and r["measurand"] in ends and epoch(
        r["timestamp"], "sample") in (min(ends[r["measurand"]]), max(ends[r["measurand"]])))]


@pytest.mark.parametrize("seed", [1, 2])
async def test_meter_bounds_of_a_long_odd_history(store: Store, seed: int) -> None:
    """However long and odd a transaction's history, the read-back's samples decide as all do."""
    from csms.grid.effects.rebuild import _readings
    from csms.grid.model.sessions import Session
    for ev in _odd_history(random.Random(seed)):
        assert await store.record_transaction_event("CS-1", ev, T0)
    every = await store.meter_samples("CS-1", transaction_id="TX-L")
    bounds = (await store.meter_bounds([("CS-1", "TX-L")]))[("CS-1", "TX-L")]
    deciding = _deciding(every)
    assert len(every) > 500 and len(deciding) == 9  # import 1 + 3, export 2 + 1, the latest text 2
    assert all(row in every for row in bounds) and all(row in bounds for row in deciding)
    if isinstance(store, RedisStore):  # no extra samples: Redis has the instants exactly
        assert bounds == deciding

    def readings(rows: list[dict[str, Any]]) -> tuple[float | None, ...]:
        session = Session("CS", 1, "TX", T0)
        _readings(session, rows, T0)
        return session.start_energy_wh, session.energy_wh, session.start_export_wh, session.export_wh, session.power_kw

    assert readings(bounds) == readings(every)
    assert readings(bounds)[2:] == (-1.0, 39.0, 0.002)  # export from the middle; phase power (W) of the latest text


# Smart charging ---------------------------------------------------------------------------------
async def test_latest_ev_charging_needs(store: Store) -> None:
    assert await store.latest_ev_charging_needs("CS-1", 1) is None
    first = {"evseId": 1, "chargingNeeds": {"requestedEnergyTransfer": "AC_single_phase",
                                            "acChargingParameters": {"energyAmount": 20000, "evMinCurrent": 6,
                                                                     "evMaxCurrent": 32, "evMaxVoltage": 230}}}
    second = {"evseId": 1, "chargingNeeds": {**first["chargingNeeds"], "departureTime": z(T0)}}
    await store.record_ev_charging_needs("CS-1", 1, first, T0)
    await store.record_ev_charging_needs("CS-1", 1, second, T0 + timedelta(minutes=1))
    await store.record_ev_charging_needs("CS-1", 2, first, T0)
    assert await store.latest_ev_charging_needs("CS-1", 1) == second
    assert await store.latest_ev_charging_needs("CS-1", 2) == first
    assert await store.latest_ev_charging_needs("CS-2", 1) is None


async def test_latest_ev_charging_needs_of_many_evses(store: Store) -> None:
    needs = [{"evseId": e, "chargingNeeds": {"requestedEnergyTransfer": "AC_three_phase", "n": n}}
             for n, e in enumerate((1, 1, 2, 1))]
    await store.record_ev_charging_needs("CS-1", 1, needs[0], T0)
    await store.record_ev_charging_needs("CS-1", 1, needs[1], T0 + timedelta(minutes=1))
    await store.record_ev_charging_needs("CS-1", 2, needs[2], T0)
    await store.record_ev_charging_needs("CS-2", 1, needs[3], T0)
    evses = [("CS-1", 1), ("CS-1", 2), ("CS-2", 1), ("CS-2", 2), ("CS-9", 1)]
    many = await store.latest_ev_charging_needs_many(evses)
    assert many == {e: await store.latest_ev_charging_needs(*e) for e in evses}
    assert [many[e] for e in evses] == [needs[1], needs[2], needs[3], None, None]
    assert await store.latest_ev_charging_needs_many([]) == {}


async def test_charging_profiles_recorded_in_order(store: Store) -> None:
    p1 = {"id": 11, "stackLevel": 1, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
          "transactionId": "TX-1", "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                                                         "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}]}
    p2 = {**p1, "id": 12, "stackLevel": 2, "chargingProfilePurpose": "TxDefaultProfile"}
    del p2["transactionId"]
    await store.record_charging_profile("CS-1", 1, p1, "Accepted", None, T0)
    await store.record_charging_profile("CS-1", 0, p2, "Rejected", {"reasonCode": "InvalidSchedule"},
                                        T0 + timedelta(seconds=1))
    rows = await store.list_charging_profiles("CS-1")
    assert [(r["evse_id"], r["profile_id"], r["purpose"], r["stack_level"], r["transaction_id"], r["status"],
             r["status_info"]) for r in rows] == [
        (1, 11, "TxProfile", 1, "TX-1", "Accepted", None),
        (0, 12, "TxDefaultProfile", 2, None, "Rejected", {"reasonCode": "InvalidSchedule"})]
    assert rows[0]["profile"] == p1 and rows[1]["profile"] == p2
    assert datetime.fromisoformat(rows[1]["sent_at"]) == T0 + timedelta(seconds=1)
    assert await store.list_charging_profiles("CS-2") == []


async def test_the_newest_charging_profiles_only(store: Store) -> None:
    """A station's history grows with every push: the newest ones can be read without the rest."""
    base = {"stackLevel": 1, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
            "transactionId": "TX-1", "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                                                           "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}]}
    for i in range(5):
        await store.record_charging_profile("CS-1", 1, {**base, "id": 20 + i}, "Accepted", None, T0 + timedelta(seconds=i))
    assert [r["profile_id"] for r in await store.list_charging_profiles("CS-1", newest=2)] == [23, 24]
    assert [r["profile_id"] for r in await store.list_charging_profiles("CS-1", newest=9)] == [20, 21, 22, 23, 24]
    assert await store.list_charging_profiles("CS-1", newest=0) == []
    assert await store.list_charging_profiles("CS-2", newest=3) == []
    with pytest.raises(ValueError, match="limit"):
        await store.list_charging_profiles("CS-1", newest=-1)


async def test_the_newest_charging_profiles_of_many_stations(store: Store) -> None:
    base: dict[str, Any] = {"stackLevel": 1, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
            "transactionId": "TX-1", "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                                                           "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}]}
    for i in range(5):  # interleaved: the newest of each station, not of all
        for sid in ("CS-1", "CS-2")[:1 + i % 2]:
            await store.record_charging_profile(sid, 1, {**base, "id": 20 + i}, "Accepted", {"n": i} if i else None,
                                                T0 + timedelta(seconds=i))
    stations = ["CS-1", "CS-2", "CS-9"]
    many = await store.list_charging_profiles_many(stations, 2)
    assert many == {sid: await store.list_charging_profiles(sid, newest=2) for sid in stations}
    assert {sid: [r["profile_id"] for r in rows] for sid, rows in many.items()} == {
        "CS-1": [23, 24], "CS-2": [21, 23], "CS-9": []}
    assert many["CS-1"][1]["status_info"] == {"n": 4} and many["CS-1"][1]["profile"] == {**base, "id": 24}
    assert await store.list_charging_profiles_many(stations, 0) == {sid: [] for sid in stations}
    assert await store.list_charging_profiles_many([], 5) == {}


# Device model, events, commands -----------------------------------------------------------------
async def test_variables_upsert_by_component_variable_and_attribute(store: Store) -> None:
    def var(comp: str, name: str, value: Any, attr: str | None = None, evse: dict[str, int] | None = None,
            instance: str | None = None) -> dict[str, Any]:
        c: dict[str, Any] = {"name": comp}
        if evse:
            c["evse"] = evse
        v: dict[str, Any] = {"name": name}
        if instance:
            v["instance"] = instance
        item: dict[str, Any] = {"component": c, "variable": v, "value": value}
        if attr:
            item["attributeType"] = attr
        return item

    await store.record_variables("CS-1", [var("SmartChargingCtrlr", "Enabled", True),
                                          var("SmartChargingCtrlr", "Enabled", "false", attr="Target"),
                                          var("EVSE", "Power", 11000, attr="MaxSet", evse={"id": 1}),
                                          var("Connector", "Type", "cType2", evse={"id": 1, "connectorId": 1})], T0)
    later = T0 + timedelta(minutes=5)
    await store.record_variables("CS-1", [var("SmartChargingCtrlr", "Enabled", False)], later)
    await store.record_variables("CS-1", [], later)
    rows = await store.list_variables("CS-1")
    got = sorted((r["component"], r["variable"], r["attribute_type"], r["evse_id"], r["connector_id"], r["value"],
                  datetime.fromisoformat(r["updated_at"])) for r in rows)
    assert got == [("Connector", "Type", "Actual", 1, 1, "cType2", T0),
                   ("EVSE", "Power", "MaxSet", 1, -1, "11000", T0),
                   ("SmartChargingCtrlr", "Enabled", "Actual", -1, -1, "False", later),
                   ("SmartChargingCtrlr", "Enabled", "Target", -1, -1, "false", T0)]
    assert [r["component"] for r in rows] == ["Connector", "EVSE", "SmartChargingCtrlr", "SmartChargingCtrlr"]
    assert await store.list_variables("CS-2") == []


async def test_security_events_newest_first_with_filter_and_limit(store: Store) -> None:
    for i, sid in enumerate(["CS-1", "CS-2", "CS-1"]):
        await store.record_security_event(sid, f"Type{i}", z(T0 + timedelta(seconds=i)), None if i else "tech",
                                          T0 + timedelta(seconds=i))
    assert [(e["station_id"], e["type"]) for e in await store.list_security_events()] == [
        ("CS-1", "Type2"), ("CS-2", "Type1"), ("CS-1", "Type0")]
    one = await store.list_security_events("CS-1")
    assert [(e["type"], e["tech_info"], e["timestamp"]) for e in one] == [
        ("Type2", None, z(T0 + timedelta(seconds=2))), ("Type0", "tech", z(T0))]
    assert [e["type"] for e in await store.list_security_events(limit=1)] == ["Type2"]
    assert await store.list_security_events("CS-9") == []


async def test_station_messages_by_action_newest_first(store: Store) -> None:
    await store.record_station_message("CS-1", "FirmwareStatusNotification", {"status": "Downloading"}, T0)
    await store.record_station_message("CS-1", "LogStatusNotification", {"status": "Uploading"}, T0)
    await store.record_station_message("CS-1", "FirmwareStatusNotification", {"status": "Installed"}, T0)
    await store.record_station_message("CS-2", "FirmwareStatusNotification", {"status": "Idle"}, T0)
    rows = await store.list_station_messages("CS-1")
    assert [(r["action"], r["payload"]["status"]) for r in rows] == [
        ("FirmwareStatusNotification", "Installed"), ("LogStatusNotification", "Uploading"),
        ("FirmwareStatusNotification", "Downloading")]
    fw = await store.list_station_messages("CS-1", "FirmwareStatusNotification", limit=5)
    assert [r["payload"]["status"] for r in fw] == ["Installed", "Downloading"]
    assert [r["payload"]["status"] for r in await store.list_station_messages("CS-1", limit=1)] == ["Installed"]
    assert rows[0]["station_id"] == "CS-1" and datetime.fromisoformat(rows[0]["received_at"]) == T0


async def test_commands_recorded_with_outcome(store: Store) -> None:
    sent, done = T0, T0 + timedelta(milliseconds=250)
    await store.record_command("CS-1", "Reset", {"type": "Immediate"}, "result", {"status": "Accepted"}, sent, done)
    await store.record_command("CS-2", "ClearCache", {}, "timeout", None, sent, done)
    await store.record_command("CS-1", "TriggerMessage", {"requestedMessage": "Heartbeat"}, "result", {}, sent, done)
    rows = await store.list_commands()
    assert [(r["station_id"], r["action"], r["outcome"], r["response"]) for r in rows] == [
        ("CS-1", "TriggerMessage", "result", {}), ("CS-2", "ClearCache", "timeout", None),
        ("CS-1", "Reset", "result", {"status": "Accepted"})]
    mine = await store.list_commands("CS-1", limit=5)
    assert [r["request"] for r in mine] == [{"requestedMessage": "Heartbeat"}, {"type": "Immediate"}]
    assert datetime.fromisoformat(mine[0]["finished_at"]) == done and datetime.fromisoformat(mine[0]["sent_at"]) == sent
    assert [r["action"] for r in await store.list_commands(limit=1)] == ["TriggerMessage"]



# Redis specifics --------------------------------------------------------------------------------
@pytest.mark.redis
async def test_two_redis_nodes_store_a_retransmission_once(redis_prefix: str) -> None:
    """Two daemons sharing one Redis receive the same event (e.g. a station reconnected elsewhere)."""
    nodes = [RedisStore(REDIS_URL, redis_prefix) for _ in range(2)]
    for node in nodes:
        await node.open()
    try:
        ev = tx_event("Updated", 3, T0, charging_state="Charging", energy_wh=10)
        outcomes = await asyncio.gather(*(nodes[i % 2].record_transaction_event("CS-1", ev, T0) for i in range(10)))
        assert sorted(outcomes) == [False] * 9 + [True]
        tx = await nodes[1].get_transaction("CS-1", "TX-1")
        assert tx is not None and tx.first_seen_as == "Updated" and tx.energy_wh == 10.0
    finally:
        for node in nodes:
            await node.close()
        await delete_prefix(redis_prefix)


@pytest.mark.redis
async def test_two_redis_nodes_merge_one_transactions_events_without_losing_any(redis_prefix: str) -> None:
    """Different events of one transaction on two nodes at once: each merge sees the other's result."""
    nodes = [RedisStore(REDIS_URL, redis_prefix) for _ in range(2)]
    for node in nodes:
        await node.open()
    try:
        events = [tx_event("Started" if i == 0 else "Updated", i, T0 + timedelta(minutes=i),
                           charging_state="Charging", energy_wh=100.0 * i, evse={"id": 1, "connectorId": 1})
                  for i in range(24)]
        outcomes = await asyncio.gather(*(nodes[i % 2].record_transaction_event("CS-1", ev, T0)
                                          for i, ev in enumerate(reversed(events))))
        assert outcomes == [True] * 24
        tx = await nodes[0].get_transaction("CS-1", "TX-1")
        assert tx is not None and (tx.last_seq_no, tx.energy_wh, tx.started_at, tx.active) == (23, 2300.0, T0, True)
        assert len(await nodes[1].transaction_events("CS-1", "TX-1")) == 24
    finally:
        for node in nodes:
            await node.close()
        await delete_prefix(redis_prefix)


@pytest.mark.redis
async def test_redis_wait_replicas_refuses_unreplicated_writes(redis_prefix: str) -> None:
    """This Redis has no replicas: with wait_replicas=1 a write must not be reported durable."""
    store = RedisStore(REDIS_URL, redis_prefix, wait_replicas=1, wait_timeout_ms=20)
    await store.open()
    try:
        with pytest.raises(ReplicationError, match="only 0 of 1 Redis replicas"):
            await store.put_id_token(IdTokenRecord("TOK-1"))
    finally:
        await store.close()
        await delete_prefix(redis_prefix)


@pytest.mark.redis
async def test_redis_keys_stay_under_prefix(redis_prefix: str) -> None:
    store = RedisStore(REDIS_URL, redis_prefix)
    await store.open()
    try:
        await store.record_boot("CS-1", BootInfo(vendor="V", model="M", reason="PowerUp"), "Accepted", T0)
        assert await store.record_transaction_event("CS-1", tx_event("Started", 0, T0, energy_wh=1), T0)
        await store.record_command("CS-1", "Reset", {"type": "Immediate"}, "offline", None, T0, T0)
    finally:
        await store.close()
    assert await delete_prefix(redis_prefix) >= 8
    assert await delete_prefix(redis_prefix) == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"url": "http://127.0.0.1:6379"}, "redis_url must start with"),
    ({"prefix": ""}, "redis_prefix must be a non-empty string"),
    ({"wait_replicas": -1}, "wait_replicas must be an integer >= 0"),
    ({"wait_timeout_ms": 0}, "wait_timeout_ms must be an integer > 0"),
])
def test_redis_store_rejects_bad_options(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"url": REDIS_URL, "prefix": "nbtest:x:", **kwargs}
    with pytest.raises(ValueError, match=message):
        RedisStore(**args)


async def test_redis_unreachable_gives_clear_error() -> None:
    store = RedisStore("redis://:secret@127.0.0.1:1/0", "nbtest:unreachable:")
    with pytest.raises(ConnectionError, match=r"cannot reach Redis at redis://:\*\*\*@127.0.0.1:1/0") as err:
        await store.open()
    assert "secret" not in str(err.value)


async def test_bad_event_values_are_refused_before_any_backend_sees_them(store: Store) -> None:
    """Validated once (csms.domain.transactions.TxEvent.checked), with the same words for every backend."""
    with pytest.raises(ValueError, match="seqNo must be an integer >= 0"):
        tx_event("Started", -1, T0)
    with pytest.raises(ValueError, match="'yesterday' is not an ISO 8601 date-time"):
        v201_tx_event({**tx_payload("Started", 0, T0), "timestamp": "yesterday"})
    with pytest.raises(ValueError, match="without transactionInfo.transactionId"):
        tx_event("Started", 0, T0, tx_id="")
    with pytest.raises(ValueError, match="limit must be an integer >= 0"):
        await store.list_commands(limit=-5)
    assert await store.get_transaction("CS-1", "TX-1") is None


# The daemon on Redis ----------------------------------------------------------------------------
@pytest.mark.redis
async def test_daemon_runs_on_redis_end_to_end(tmp_path: Path, redis_prefix: str) -> None:
    store_cfg = {"backend": "redis", "redis_url": REDIS_URL, "redis_prefix": redis_prefix}
    try:
        async with running_daemon(tmp_path, store=store_cfg) as d:
            assert isinstance(d.daemon.store, RedisStore) and d.daemon.store.prefix == redis_prefix
            st = await RawStation.connect(d.ws_url, "CS-R1")
            try:
                assert (await st.boot())["status"] == "Accepted"
                assert await st.result("StatusNotification", {"timestamp": z(T0), "connectorStatus": "Occupied",
                                                              "evseId": 1, "connectorId": 1}) == {}
                started = tx_payload("Started", 0, T0, "TX-R", charging_state="Charging", energy_wh=100,
                                   evse={"id": 1, "connectorId": 1}, id_token="TOK-R")
                started["triggerReason"] = "Authorized"
                answer = await st.result("TransactionEvent", started)
                assert answer["idTokenInfo"]["status"] == "Accepted"
                assert await st.result("TransactionEvent", started) == answer  # retransmission: same answer
                ended = tx_payload("Ended", 1, T0 + timedelta(minutes=40), "TX-R", energy_wh=5100,
                                 stopped_reason="EVDisconnected")
                ended["triggerReason"] = "EVCommunicationLost"
                assert await st.result("TransactionEvent", ended) == {}
            finally:
                await st.close()
        # A second node reading the same Redis sees what the daemon acknowledged.
        reader = RedisStore(REDIS_URL, redis_prefix)
        await reader.open()
        try:
            station = await reader.get_station("CS-R1")
            assert station is not None and station.vendor == "TestVendor" and station.registration == "Accepted"
            assert not station.connected  # the daemon recorded the disconnect on shutdown
            assert [(c["evse_id"], c["status"]) for c in await reader.list_connectors("CS-R1")] == [(1, "Occupied")]
            tx = await reader.get_transaction("CS-R1", "TX-R")
            assert tx is not None
            assert (tx.active, tx.energy_wh, tx.id_token, tx.stopped_reason, tx.first_seen_as, tx.last_seq_no) == (
                False, 5100.0, "TOK-R", "EVDisconnected", "Started", 1)
            assert [e["seqNo"] for e in await reader.transaction_events("CS-R1", "TX-R")] == [0, 1]
            assert [s["value"] for s in await reader.meter_samples("CS-R1", transaction_id="TX-R")] == [100.0, 5100.0]
        finally:
            await reader.close()
    finally:
        await delete_prefix(redis_prefix)


@pytest.mark.redis
async def test_redis_reloads_scripts_it_lost(redis_prefix: str) -> None:
    """After a Redis restart or failover the scripts are gone (NOSCRIPT): the write still happens once."""
    store = RedisStore(REDIS_URL, redis_prefix)
    await store.open()
    try:
        for script in store._scripts.values():
            script.sha = "0" * 40  # as if the server had forgotten them
        assert await store.record_transaction_event("CS-1", tx_event("Started", 0, T0, energy_wh=5), T0) is True
        assert await store.record_transaction_event("CS-1", tx_event("Started", 0, T0, energy_wh=5), T0) is False
        assert len(await store.meter_samples("CS-1")) == 1
    finally:
        await store.close()
        await delete_prefix(redis_prefix)


@pytest.mark.redis
async def test_redis_burst_beyond_pool_waits_instead_of_failing(redis_prefix: str) -> None:
    store = RedisStore(REDIS_URL, redis_prefix, max_connections=2)
    await store.open()
    try:
        outcomes = await asyncio.gather(*(store.record_transaction_event(
            "CS-1", tx_event("Updated", i, T0 + timedelta(seconds=i), charging_state="Charging", energy_wh=i), T0)
            for i in range(60)))
        assert outcomes == [True] * 60
        tx = await store.get_transaction("CS-1", "TX-1")
        assert tx is not None and (tx.last_seq_no, tx.energy_wh) == (59, 59.0)
    finally:
        await store.close()
        await delete_prefix(redis_prefix)


async def test_documents_and_counters(store: Store) -> None:
    """The documents the 2.0.1 operations keep: replace, list in key order, delete; counters count."""
    assert await store.get_document("CS:1", "firmware") is None
    await store.put_document("CS:1", "firmware", {"updates": [{"request_id": 1}]})
    await store.put_document("CS:1", "firmware", {"updates": [{"request_id": 2}], "ünï": "cödé"})
    assert await store.get_document("CS:1", "firmware") == {"updates": [{"request_id": 2}], "ünï": "cödé"}
    for key in ("0000000010", "0000000002", "0000000003"):
        await store.put_document("reservations", key, {"id": int(key)})
    assert [k for k, _ in await store.list_documents("reservations")] == ["0000000002", "0000000003", "0000000010"]
    assert [d["id"] for _, d in await store.list_documents("reservations", limit=2)] == [2, 3]
    assert await store.delete_document("reservations", "0000000003") is True
    assert await store.delete_document("reservations", "0000000003") is False
    assert [k for k, _ in await store.list_documents("reservations")] == ["0000000002", "0000000010"]
    assert await store.list_documents("nothing-here") == []
    assert [await store.next_number("reservation") for _ in range(3)] == [1, 2, 3]
    assert await store.next_number("other") == 1


async def test_a_store_file_from_before_the_start_rule_gets_its_new_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the transactions table as it was released first
        conn.execute("CREATE TABLE transactions (station_id TEXT, transaction_id TEXT, evse_id INTEGER,"
                     " connector_id INTEGER, id_token TEXT, started_at TEXT, ended_at TEXT, active INTEGER,"
                     " charging_state TEXT, stopped_reason TEXT, last_seq_no INTEGER, energy_wh REAL,"
                     " first_seen_as TEXT, PRIMARY KEY (station_id, transaction_id))")
        conn.execute("INSERT INTO transactions VALUES ('CS-1','OLD',1,1,NULL,'2024-03-01T08:00:00Z',NULL,1,"
                     "'Charging',NULL,3,100.0,'Started')")
    store = SqliteStore(str(path))
    await store.open()
    try:
        # A late offline Updated stamped earlier than the old record's start: no origin known, so
        # the earlier instant wins (as before); a new transaction follows the new rule.
        assert await store.record_transaction_event("CS-1", tx_event("Updated", 4, T0 + timedelta(hours=1),
                                                                     tx_id="OLD", energy_wh=200), T0)
        old = await store.get_transaction("CS-1", "OLD")
        assert old is not None and old.started_at == T0 and old.energy_wh == 200
        assert await store.record_transaction_event("CS-1", tx_event("Started", 0, T0, tx_id="NEW", evse={"id": 2}),
                                                    T0)
        assert (await store.get_transaction("CS-1", "NEW")) is not None
    finally:
        await store.close()
