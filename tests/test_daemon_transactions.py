"""TransactionEvent and MeterValues: lifecycle, idempotence, offline queues, what is stored and published."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

from csms.domain.events import Event
from tests.daemon_fixture import running_daemon
from tests.ocpp_client import RawStation
from tests.test_daemon_kit import assert_schema_valid, transaction_event


def _ts(minutes_ago: float) -> str:
    t = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    return t.isoformat().replace("+00:00", "Z")


async def _take(q: asyncio.Queue[Event], n: int) -> list[Event]:
    """The next ``n`` events (they are published just after the answer is sent)."""
    return [await asyncio.wait_for(q.get(), 2) for _ in range(n)]


async def _send(st: RawStation, payload: dict) -> dict:
    answer = await st.result("TransactionEvent", payload)
    assert_schema_valid("TransactionEvent", "Response", answer)
    return answer


async def test_started_updated_ended_are_stored_with_state_history_and_meter_values(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as d:
        store = d.daemon.store
        events, unsubscribe = d.daemon.bus.queue("transaction.")
        st = await RawStation.connect(d.ws_url, "TX-1")
        await st.boot()
        await _send(st, transaction_event("Started", "A", 0, trigger="CablePluggedIn", charging_state="EVConnected",
                                          energy_wh=1000.0, id_token="T1"))
        await _send(st, transaction_event("Updated", "A", 1, trigger="ChargingStateChanged",
                                          charging_state="Charging", energy_wh=1500.0, power_w=11000.0))
        await _send(st, transaction_event("Updated", "A", 2, charging_state="SuspendedEVSE", energy_wh=2000.0))
        tx = await store.get_transaction("TX-1", "A")
        assert tx.active and tx.first_seen_as == "Started" and tx.charging_state == "SuspendedEVSE"
        assert tx.energy_wh == 2000.0 and tx.id_token == "T1" and tx.evse_id == 1 and tx.last_seq_no == 2
        await _send(st, transaction_event("Ended", "A", 3, trigger="EVCommunicationLost", charging_state="Idle",
                                          energy_wh=2100.0, stopped_reason="EVDisconnected"))
        tx = await store.get_transaction("TX-1", "A")
        assert not tx.active and tx.ended_at is not None and tx.stopped_reason == "EVDisconnected"
        assert tx.energy_wh == 2100.0
        history = [e["transactionInfo"].get("chargingState") for e in await store.transaction_events("TX-1", "A")]
        assert history == ["EVConnected", "Charging", "SuspendedEVSE", "Idle"]
        energy = [s["value"] for s in await store.meter_samples("TX-1", transaction_id="A")
                  if s["measurand"] == "Energy.Active.Import.Register"]
        assert sorted(energy) == [1000.0, 1500.0, 2000.0, 2100.0]
        published = await _take(events, 4)
        assert [e.kind for e in published] == ["transaction.started", "transaction.updated", "transaction.updated",
                                               "transaction.ended"]
        assert published[1].reading.power_w == 11000.0
        assert published[3].stopped_reason == "EVDisconnected"
        unsubscribe()
        await st.close()


async def test_retransmitted_seq_no_is_answered_but_stored_and_published_once(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as d:
        store = d.daemon.store
        events, _ = d.daemon.bus.queue("transaction.")
        st = await RawStation.connect(d.ws_url, "TX-2")
        await st.boot()
        started = transaction_event("Started", "B", 0, charging_state="Charging", energy_wh=500.0, id_token="T2")
        first = await _send(st, started)
        second = await _send(st, started)  # the station did not see our answer and sends it again
        assert first == second and first["idTokenInfo"]["status"] == "Accepted"
        assert len(await store.transaction_events("TX-2", "B")) == 1
        assert len(await store.meter_samples("TX-2", transaction_id="B")) == 2  # energy + power, once
        await _send(st, transaction_event("Updated", "B", 1, charging_state="Charging"))
        published = await _take(events, 2)
        assert [(e.kind, e.seq_no) for e in published] == [("transaction.started", 0),
                                                                    ("transaction.updated", 1)]
        await st.close()


async def test_offline_queued_events_are_accepted_in_order(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as d:
        store = d.daemon.store
        st = await RawStation.connect(d.ws_url, "TX-3")
        await st.boot()
        queued = [
            transaction_event("Started", "C", 0, trigger="Authorized", charging_state="Charging", energy_wh=0.0,
                              offline=True, ts=_ts(30)),
            transaction_event("Updated", "C", 1, charging_state="Charging", energy_wh=3000.0, offline=True, ts=_ts(20)),
            transaction_event("Updated", "C", 2, charging_state="Charging", energy_wh=6000.0, offline=True, ts=_ts(10)),
            transaction_event("Ended", "C", 3, trigger="StopAuthorized", charging_state="Idle", energy_wh=7000.0,
                              offline=True, stopped_reason="Local", ts=_ts(5)),
        ]
        for payload in queued:
            await _send(st, payload)
        stored = await store.transaction_events("TX-3", "C")
        assert [e["seqNo"] for e in stored] == [0, 1, 2, 3] and all(e["offline"] for e in stored)
        tx = await store.get_transaction("TX-3", "C")
        assert not tx.active and tx.energy_wh == 7000.0
        assert tx.started_at == datetime.fromisoformat(queued[0]["timestamp"].replace("Z", "+00:00"))
        await st.close()


async def test_transaction_first_seen_as_updated_is_still_recorded(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as d:
        store = d.daemon.store
        st = await RawStation.connect(d.ws_url, "TX-4")
        await st.boot()
        await _send(st, transaction_event("Updated", "D", 7, charging_state="Charging", energy_wh=4200.0))
        tx = await store.get_transaction("TX-4", "D")
        assert tx is not None and tx.active and tx.first_seen_as == "Updated" and tx.energy_wh == 4200.0
        assert [t.transaction_id for t in await store.list_transactions(station_id="TX-4", active=True)] == ["D"]
        # Its lost Started arrives late: the record keeps the newest state and the earliest start.
        await _send(st, transaction_event("Started", "D", 0, charging_state="EVConnected", energy_wh=100.0,
                                          ts=_ts(60)))
        tx = await store.get_transaction("TX-4", "D")
        assert tx.charging_state == "Charging" and tx.energy_wh == 4200.0 and tx.last_seq_no == 7
        assert tx.started_at <= datetime.now(timezone.utc) - timedelta(minutes=59)
        await st.close()


async def test_meter_values_outside_a_transaction_are_stored_and_published(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as d:
        meter, _ = d.daemon.bus.queue("meter.")
        st = await RawStation.connect(d.ws_url, "MV-1")
        await st.boot()
        payload = {"evseId": 2, "meterValue": [{"timestamp": _ts(1), "sampledValue": [
            {"value": 3.5, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "kW"}},
            {"value": 16.0, "measurand": "Current.Import", "phase": "L1"}]}]}
        assert await st.result("MeterValues", payload) == {}
        samples = await d.daemon.store.meter_samples("MV-1", evse_id=2)
        assert {(s["measurand"], s["phase"], s["value"]) for s in samples} == {
            ("Power.Active.Import", None, 3.5), ("Current.Import", "L1", 16.0)}
        event = await asyncio.wait_for(meter.get(), 2)
        assert event.evse_id == 2 and event.reading.power_w == 3500.0
        assert event.reading.current_a == {"L1": 16.0}
        await st.close()
