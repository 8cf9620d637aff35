"""OCPP 1.6J stations built from the `ocpp` package's own v16 ChargePoint, against the real daemon
over a real websocket: the subprotocol, boot, id-tag authorisation from the token store (with the
parent id tag), a whole transaction with its meter values in the domain's transaction model, the
integer transaction ids, and precise CALLERRORs for bad input."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import websockets
from ocpp.v16 import call

from csms.domain.records import IdTokenRecord
from csms.domain.registration import VERSION_KEY
from tests.daemon_fixture import running_daemon
from tests.ocpp16_station import Lib16Station, iso
from tests.waiting import until

NO_API = {"enabled": False}


async def test_boot_authorize_transaction_and_meter_values(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, api=NO_API, registration={"accept_unknown_id_tokens": False}) as d:
        store = d.daemon.store
        await store.put_id_token(IdTokenRecord("TAG-16", group_id="FLEET-7"))
        await store.put_id_token(IdTokenRecord("TAG-BLOCKED", status="Blocked"))
        st = Lib16Station("CP16-A", meter_interval_s=0.2)
        try:
            assert await asyncio.wait_for(st.connect(d.ws_url), 15) == "ocpp1.6"
            assert st.boot_status == "Accepted"
            assert d.daemon.connections["CP16-A"].version.subprotocol == "ocpp1.6"
            record = await store.get_station("CP16-A")
            assert record is not None and record.vendor == "ThirdParty" and record.model == "Lib16"

            ok = await st.authorize("TAG-16")
            assert ok.id_tag_info == {"status": "Accepted", "parent_id_tag": "FLEET-7"}
            assert (await st.authorize("TAG-BLOCKED")).id_tag_info["status"] == "Blocked"
            assert (await st.authorize("NOBODY")).id_tag_info["status"] == "Invalid"

            tx = await st.start_transaction(1)
            assert isinstance(tx, int) and tx > 0
            stored = await store.get_transaction("CP16-A", str(tx))
            assert stored is not None and stored.active and stored.evse_id == 1 and stored.id_token == "TAG-16"
            assert stored.charging_state == "Charging"  # from the 1.6 StatusNotification
            # Meter values every 0.2 s while charging at 16 A x 3: wait until both measurands are stored.
            await until(lambda: _measured(store, "CP16-A", str(tx)), 10, "power and energy metered")
            stop = await st.stop_transaction(1)
            assert stop.id_tag_info["status"] == "Accepted"
            done = await store.get_transaction("CP16-A", str(tx))
            assert done is not None and not done.active and done.stopped_reason == "EVDisconnected"
            assert done.energy_wh is not None and done.energy_wh > 0
            samples = await store.meter_samples("CP16-A", transaction_id=str(tx))
            measurands = {s["measurand"] for s in samples}
            assert {"Energy.Active.Import.Register", "Power.Active.Import"} <= measurands
            events = await store.transaction_events("CP16-A", str(tx))
            kinds = [e["eventType"] for e in events]
            assert kinds[0] == "Started" and "Ended" in kinds and "Updated" in kinds
            actions = {e["ocpp16"]["action"] for e in events}
            assert actions == {"StartTransaction", "StatusNotification", "MeterValues", "StopTransaction"}

            second = await st.start_transaction(1)
            assert second != tx
        finally:
            await st.stop()
        await until(lambda: "CP16-A" not in d.daemon.connections, 5, "disconnected")
        record = await store.get_station("CP16-A")
        assert record is not None and record.extra.get(VERSION_KEY) == "ocpp1.6"


async def test_retransmitted_start_gets_the_same_id(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, api=NO_API) as d:
        st = Lib16Station("CP16-R")
        try:
            await st.connect(d.ws_url)
            at = iso()
            first = await st.cp.call(call.StartTransaction(connector_id=1, id_tag="T", meter_start=0, timestamp=at))
            again = await st.cp.call(call.StartTransaction(connector_id=1, id_tag="T", meter_start=0, timestamp=at))
            assert first.transaction_id == again.transaction_id
            other = await st.cp.call(call.StartTransaction(connector_id=2, id_tag="T", meter_start=0, timestamp=at))
            assert other.transaction_id != first.transaction_id
        finally:
            await st.stop()


async def _raw_call(url: str, frames: list[list[object]]) -> list[list[object]]:
    async with websockets.connect(url, subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
        out = []
        for frame in frames:
            await ws.send(json.dumps(frame))
            out.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        return out


async def test_bad_input_gets_precise_callerrors(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, api=NO_API) as d:
        boot = {"chargePointVendor": "V", "chargePointModel": "M"}
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        answers = await _raw_call(d.station_url("CP16-BAD"), [
            [2, "1", "BootNotification", boot],
            [2, "2", "MeterValues", {"connectorId": 1, "transactionId": 5,
                                     "meterValue": [{"timestamp": now, "sampledValue": [{"value": "lots"}]}]}],
            [2, "3", "StartTransaction", {"connectorId": 1, "idTag": "T", "timestamp": now}],
            [2, "4", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"}],
            [2, "5", "StopTransaction", {"transactionId": 5, "meterStop": 1, "timestamp": "2026-13-40T00:00:00Z"}],
            [2, "6", "TransactionEvent", {}],
            [2, "7", "RemoteStartTransaction", {"idTag": "T"}],
            [2, "8", "StartTransaction", {"connectorId": 0, "idTag": "T", "meterStart": 0, "timestamp": now}],
            [2, "9", "Heartbeat", {"extra": 1}],
            [2, "10", "Heartbeat", []],
        ])
        assert answers[0][0] == 3 and answers[0][2]["status"] == "Accepted"
        codes = [(a[0], a[2], a[4].get("field") if a[0] == 4 else None) for a in answers[1:]]
        assert codes == [
            (4, "PropertyConstraintViolation", "meterValue"),
            (4, "OccurenceConstraintViolation", "meterStart"),  # OCPP-J 1.6 spells it so
            (4, "PropertyConstraintViolation", "status"),
            (4, "PropertyConstraintViolation", "timestamp"),
            (4, "NotImplemented", None),
            (4, "NotSupported", None),
            (4, "PropertyConstraintViolation", "connectorId"),
            (4, "FormationViolation", "extra"),
            (4, "FormationViolation", None),
        ], answers
        assert await d.daemon.store.list_transactions(station_id="CP16-BAD") == []


async def _negotiated(url: str, offered: list[str]) -> str | None:
    async with websockets.connect(url, subprotocols=offered) as ws:  # type: ignore[arg-type]
        return ws.subprotocol


async def test_subprotocol_in_the_configured_order_of_preference(tmp_path: Path) -> None:
    both = ["ocpp1.6", "ocpp2.0.1"]
    async with running_daemon(tmp_path, api=NO_API) as d:  # default: ocpp2.0.1, then ocpp1.6
        assert await _negotiated(d.station_url("PREF-1"), both) == "ocpp2.0.1"
        assert await _negotiated(d.station_url("PREF-2"), ["ocpp1.6"]) == "ocpp1.6"
    async with running_daemon(tmp_path / "a", api=NO_API, websocket={"subprotocols": ["ocpp1.6", "ocpp2.0.1"]}) as d:
        assert await _negotiated(d.station_url("PREF-3"), list(reversed(both))) == "ocpp1.6"
    async with running_daemon(tmp_path / "b", api=NO_API, websocket={"subprotocols": ["ocpp2.0.1"]}) as d:
        try:
            await _negotiated(d.station_url("PREF-4"), ["ocpp1.6"])
            raise AssertionError("a 1.6-only station got in although the daemon speaks only 2.0.1")
        except websockets.InvalidStatus as exc:
            assert exc.response.status_code == 400


async def test_remote_start_tag_is_accepted_when_we_asked_for_it(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, api=NO_API, registration={"accept_unknown_id_tokens": False}) as d:
        st = Lib16Station("CP16-REMOTE")
        try:
            await st.connect(d.ws_url)
            answer = await d.daemon.commands.request_start_transaction("CP16-REMOTE", 1, {"idToken": "APP-1",
                                                                                       "type": "Central"}, 1)
            assert answer == {"status": "Accepted"} and st.calls["RemoteStartTransaction"] == 1
            asked = await st.cp.call(call.StartTransaction(connector_id=1, id_tag="APP-1", meter_start=0,
                                                           timestamp=iso()))
            assert asked.id_tag_info["status"] == "Accepted"
            other = await st.cp.call(call.StartTransaction(connector_id=2, id_tag="APP-2", meter_start=0,
                                                           timestamp=iso()))
            assert other.id_tag_info["status"] == "Invalid"
        finally:
            await st.stop()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def test_meter_values_split_over_messages_are_all_kept_and_retransmissions_once(tmp_path: Path,
                                                                                     backend: str) -> None:
    store = {"backend": "redis", "redis_prefix": f"nb16:{uuid.uuid4().hex}:"} if backend == "redis" else {}
    async with running_daemon(tmp_path, api=NO_API, store=store) as d:
        st = Lib16Station("CP16-SPLIT", meter_interval_s=3600)
        try:
            await st.connect(d.ws_url)
            tx = await st.start_transaction(1)
            at = iso()
            energy = call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[{"timestamp": at, "sampled_value": [
                {"value": "1500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}])
            power = call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[{"timestamp": at, "sampled_value": [
                {"value": "7.2", "measurand": "Power.Active.Import", "unit": "kW"}]}])
            for message in (energy, power, energy):  # the last one: a retransmission
                await st.cp.call(message)
            samples = await d.daemon.store.meter_samples("CP16-SPLIT", transaction_id=str(tx))
            periodic = [(s["measurand"], s["value"]) for s in samples if s.get("context") != "Transaction.Begin"]
            assert sorted(periodic) == [("Energy.Active.Import.Register", 1500.0), ("Power.Active.Import", 7.2)]
            record = await d.daemon.store.get_transaction("CP16-SPLIT", str(tx))
            assert record is not None and record.energy_wh == 1500.0
        finally:
            await st.stop()
    if backend == "redis":
        client = aioredis.from_url("redis://127.0.0.1:6379/0")
        try:
            keys = [k async for k in client.scan_iter(match=f"{store['redis_prefix']}*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


async def _measured(store: Any, station_id: str, transaction_id: str) -> bool:
    samples = await store.meter_samples(station_id, transaction_id=transaction_id)
    return {"Energy.Active.Import.Register", "Power.Active.Import"} <= {s["measurand"] for s in samples}
