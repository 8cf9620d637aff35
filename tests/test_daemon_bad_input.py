"""Broken frames and schema-invalid payloads get the precise OCPP-J CALLERROR (OCPP-J 2.0.1, 4.2.3);
the connection and the daemon stay up and nothing stored changes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_fixture import RunningDaemon, running_daemon
from tests.ocpp_client import RawStation, now_iso
from tests.test_daemon_kit import BOOT, transaction_event


@pytest.fixture
async def booted(tmp_path: Path) -> AsyncIterator[tuple[RunningDaemon, RawStation]]:
    async with running_daemon(tmp_path) as d:
        st = await RawStation.connect(d.ws_url, "BAD-IN")
        await st.boot()
        yield d, st
        await st.close()


async def _snapshot(d: RunningDaemon) -> dict[str, Any]:
    store = d.daemon.store
    station = await store.get_station("BAD-IN")
    return {
        "station": (station.registration, station.vendor, station.model, station.boot_reason),
        "connectors": await store.list_connectors("BAD-IN"),
        "transactions": await store.list_transactions(station_id="BAD-IN"),
        "meter": await store.meter_samples("BAD-IN"),
        "messages": await store.list_station_messages("BAD-IN"),
        "variables": await store.list_variables("BAD-IN"),
    }


async def _still_works(st: RawStation) -> None:
    assert (await st.result("Heartbeat", {}))["currentTime"]


@pytest.mark.parametrize("raw, uid, code", [
    ("this is not json", "-1", "RpcFrameworkError"),
    ('[2, "x1", "Heartbeat", {}', "-1", "RpcFrameworkError"),  # truncated JSON
    ('{"messageTypeId": 2}', "-1", "RpcFrameworkError"),  # not an array
    ("[]", "-1", "RpcFrameworkError"),
    ("[2]", "-1", "RpcFrameworkError"),  # no message id
    ('[2, 17, "Heartbeat", {}]', "-1", "RpcFrameworkError"),  # message id not a string
    ('[2, "' + "i" * 37 + '", "Heartbeat", {}]', "-1", "RpcFrameworkError"),  # id longer than 36
    ('[7, "x2", "Heartbeat", {}]', "x2", "MessageTypeNotSupported"),
    ('["2", "x3", "Heartbeat", {}]', "x3", "MessageTypeNotSupported"),
    ('[2, "x4", "Heartbeat"]', "x4", "RpcFrameworkError"),  # CALL without payload
    ('[2, "x5", 42, {}]', "x5", "RpcFrameworkError"),  # action not a string
    ('[2, "x6", "Heartbeat", []]', "x6", "FormatViolation"),  # payload not an object
    ('[2, "x7", "LaunchRocket", {}]', "x7", "NotImplemented"),  # not known at all
    ('[2, "x8", "Reset", {"type": "Immediate"}]', "x8", "NotSupported"),  # known, but the CSMS sends it
    ('[2, "x9", "GetVariables", {"getVariableData": []}]', "x9", "NotSupported"),
])
async def test_broken_frames_get_the_precise_callerror(booted: tuple[RunningDaemon, RawStation], raw: str, uid: str,
                                                       code: str) -> None:
    d, st = booted
    before = await _snapshot(d)
    reply = await st.send_raw(raw)
    assert reply[0] == 4 and reply[1] == uid and reply[2] == code, reply
    assert isinstance(reply[3], str) and reply[3] and isinstance(reply[4], dict)
    await _still_works(st)
    assert await _snapshot(d) == before


BOOT_CS = BOOT["chargingStation"]


@pytest.mark.parametrize("action, payload, code, field", [
    # required field missing
    ("BootNotification", {"reason": "PowerUp", "chargingStation": {"vendorName": "X"}},
     "OccurrenceConstraintViolation", "chargingStation.model"),
    ("StatusNotification", {"timestamp": now_iso(), "connectorStatus": "Available", "evseId": 1},
     "OccurrenceConstraintViolation", "connectorId"),
    ("MeterValues", {"evseId": 1, "meterValue": []}, "OccurrenceConstraintViolation", "meterValue"),  # minItems 1
    # wrong type
    ("StatusNotification", {"timestamp": now_iso(), "connectorStatus": "Available", "evseId": "1",
                            "connectorId": 1}, "TypeConstraintViolation", "evseId"),
    ("TransactionEvent", {**transaction_event("Started", "BAD", 0), "seqNo": "zero"},
     "TypeConstraintViolation", "seqNo"),
    # bad enum value, too long string, bad date-time
    ("BootNotification", {"reason": "Bored", "chargingStation": BOOT_CS}, "PropertyConstraintViolation", "reason"),
    ("BootNotification", {"reason": "PowerUp", "chargingStation": {**BOOT_CS, "model": "m" * 21}},
     "PropertyConstraintViolation", "chargingStation.model"),
    ("StatusNotification", {"timestamp": "yesterday", "connectorStatus": "Available", "evseId": 1,
                            "connectorId": 1}, "PropertyConstraintViolation", "timestamp"),
    # additional property, at the top and nested
    ("Heartbeat", {"beat": 1}, "FormatViolation", "beat"),
    ("BootNotification", {"reason": "PowerUp", "chargingStation": {**BOOT_CS, "colour": "red"}},
     "FormatViolation", "chargingStation.colour"),
])
async def test_schema_invalid_payload_gets_the_precise_code_and_changes_nothing(
        booted: tuple[RunningDaemon, RawStation], action: str, payload: dict[str, Any], code: str,
        field: str) -> None:
    d, st = booted
    before = await _snapshot(d)
    reply = await st.call(action, payload)
    assert reply[0] == 4 and reply[2] == code, reply
    assert reply[4]["field"] == field, reply
    assert len(reply[3]) <= 255
    await _still_works(st)
    assert await _snapshot(d) == before


async def test_a_storm_of_garbage_does_not_take_the_daemon_down(booted: tuple[RunningDaemon, RawStation]) -> None:
    d, st = booted
    other = await RawStation.connect(d.ws_url, "BYSTANDER")
    await other.boot()
    for i in range(200):
        reply = await st.send_raw(json.dumps([2, f"g{i}", "BootNotification", {"reason": i, "chargingStation": BOOT_CS}]))
        assert reply[2] == "TypeConstraintViolation"
    await _still_works(st)
    await _still_works(other)
    assert d.daemon.connections.keys() >= {"BAD-IN", "BYSTANDER"}
    await other.close()


async def test_unmatched_call_result_is_dropped_without_an_answer(booted: tuple[RunningDaemon, RawStation]) -> None:
    """A CALLRESULT for nothing we sent is logged and dropped; answering it would start a ping-pong."""
    d, st = booted
    await st.ws.send(json.dumps([3, "never-sent", {}]))
    await st.ws.send(json.dumps([4, "never-sent-either", "GenericError", "", {}]))
    reply = await st.call("Heartbeat", {})  # the next reply is the heartbeat's, not an error
    assert reply[0] == 3 and "currentTime" in reply[2]
