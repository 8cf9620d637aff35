"""Odd input and failures leave a consistent daemon: stations that leave, absurd meter values, odd
vendor ids, malformed responses and a failing store while connecting."""

from __future__ import annotations

import asyncio
import json

import pytest

from csms.protocol.errors import OcppError
from tests.ocpp_client import RawStation, now_iso
from tests.waiting import until


async def test_pending_station_is_disconnected_in_the_store_after_it_leaves(tmp_path):
    from tests.daemon_fixture import running_daemon

    async with running_daemon(tmp_path, registration={"policy": "approve_unknown"}) as d:
        st = await RawStation.connect(d.ws_url, "CP-P")
        assert (await st.boot())["status"] == "Pending"
        assert (await d.daemon.store.get_station("CP-P")).connected
        await st.close()
        await until(lambda: "CP-P" not in d.daemon.connections, 5, "station gone")

        async def stored_disconnected():
            return not (await d.daemon.store.get_station("CP-P")).connected
        await until(stored_disconnected, 5, "store says disconnected")


def _meter(multiplier: int) -> list[dict]:
    return [{"timestamp": now_iso(), "sampledValue": [
        {"value": 12.0, "measurand": "Energy.Active.Import.Register",
         "unitOfMeasure": {"unit": "Wh", "multiplier": multiplier}}]}]


async def test_absurd_meter_multiplier_is_refused_before_anything_is_stored(csms):
    st = await RawStation.connect(csms.ws_url, "CP-M")
    await st.boot()
    reply = await st.call("MeterValues", {"evseId": 1, "meterValue": _meter(400)})
    assert reply[0] == 4 and reply[2] == "PropertyConstraintViolation" and "multiplier" in reply[3]
    started = {"eventType": "Started", "timestamp": now_iso(), "triggerReason": "CablePluggedIn", "seqNo": 0,
               "transactionInfo": {"transactionId": "TX-M"}, "evse": {"id": 1, "connectorId": 1},
               "meterValue": _meter(400)}
    reply = await st.call("TransactionEvent", started)
    assert reply[0] == 4 and reply[2] == "PropertyConstraintViolation"
    assert await csms.daemon.store.get_transaction("CP-M", "TX-M") is None
    assert await csms.daemon.store.meter_samples("CP-M") == []
    # A sane multiplier (kWh) is stored scaled, and the connection still works.
    assert (await st.call("MeterValues", {"evseId": 1, "meterValue": _meter(3)}))[0] == 3
    assert [s["value"] for s in await csms.daemon.store.meter_samples("CP-M")] == [12000.0]
    await st.close()


async def test_data_transfer_with_a_long_odd_vendor_id_gets_a_valid_answer(csms):
    st = await RawStation.connect(csms.ws_url, "CP-D")
    await st.boot()
    answer = await st.result("DataTransfer", {"vendorId": "\x01" * 255})
    assert answer["status"] == "UnknownVendorId" and len(answer["statusInfo"]["additionalInfo"]) <= 512
    await st.close()


async def test_malformed_response_fails_the_call_at_once_and_gets_no_reply(csms):
    st = await RawStation.connect(csms.ws_url, "CP-R")
    await st.boot()
    call = asyncio.create_task(csms.daemon.commands.call("CP-R", "ClearCache", {},
                                                         timeout=10))
    request = await asyncio.wait_for(st.incoming_calls.get(), 5)
    await st.ws.send(json.dumps([3, request[1], {"status": "Accepted"}, "extra element"]))
    with pytest.raises(OcppError) as err:
        await asyncio.wait_for(call, 3)  # well before the 10 s timeout
    assert err.value.code == "FormatViolation"
    # No CALLERROR went back for the broken response: the next thing we read answers our own CALL.
    assert (await st.result("Heartbeat", {}))["currentTime"]
    await st.close()


async def test_store_failure_while_connecting_leaves_no_stale_connection(csms, monkeypatch):
    store = csms.daemon.store
    real = store.get_station

    async def broken(station_id):
        if station_id == "CP-S":
            raise RuntimeError("store briefly unavailable")
        return await real(station_id)
    monkeypatch.setattr(store, "get_station", broken)
    st = await RawStation.connect(csms.ws_url, "CP-S")
    await until(lambda: "CP-S" not in csms.daemon.connections, 5, "stale connection removed")
    await st.close()
