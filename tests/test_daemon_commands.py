"""CSMS-initiated calls: typed API, generic path, recording, one call in flight, timeouts, offline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from csms.app import Daemon
from csms.commands import Commands
from csms.protocol.errors import CallTimeout, InvalidRequest, OcppError, StationOffline
from tests.daemon_fixture import RunningDaemon, running_daemon
from tests.ocpp_client import RawStation
from tests.test_daemon_kit import assert_schema_valid, profile, wait_until

PROFILE = profile(7, 7400.0)
VAR = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}

# typed call, the request the station must receive, the station's answer
TypedCase = tuple[Callable[[Commands, str], Awaitable[dict[str, Any]]], str, dict[str, Any], dict[str, Any]]
TYPED: dict[str, TypedCase] = {
    "set_charging_profile": (lambda c, s: c.set_charging_profile(s, 1, PROFILE), "SetChargingProfile",
                             {"evseId": 1, "chargingProfile": PROFILE}, {"status": "Accepted"}),
    "clear_charging_profile": (lambda c, s: c.clear_charging_profile(s, profile_id=7, evse_id=1),
                               "ClearChargingProfile",
                               {"chargingProfileId": 7, "chargingProfileCriteria": {"evseId": 1}},
                               {"status": "Accepted"}),
    "get_charging_profiles": (lambda c, s: c.get_charging_profiles(s, 5, evse_id=1, purpose="TxProfile"),
                              "GetChargingProfiles",
                              {"requestId": 5, "evseId": 1, "chargingProfile": {"chargingProfilePurpose": "TxProfile"}},
                              {"status": "NoProfiles"}),
    "get_composite_schedule": (lambda c, s: c.get_composite_schedule(s, 1, 3600, "W"), "GetCompositeSchedule",
                               {"evseId": 1, "duration": 3600, "chargingRateUnit": "W"}, {"status": "Rejected"}),
    "request_start_transaction": (
        lambda c, s: c.request_start_transaction(s, 9, {"idToken": "T", "type": "Central"}, evse_id=1),
        "RequestStartTransaction", {"remoteStartId": 9, "idToken": {"idToken": "T", "type": "Central"}, "evseId": 1},
        {"status": "Accepted"}),
    "request_stop_transaction": (lambda c, s: c.request_stop_transaction(s, "TX-9"), "RequestStopTransaction",
                                 {"transactionId": "TX-9"}, {"status": "Rejected"}),
    "get_transaction_status": (lambda c, s: c.get_transaction_status(s, "TX-9"), "GetTransactionStatus",
                               {"transactionId": "TX-9"}, {"ongoingIndicator": True, "messagesInQueue": False}),
    "reset": (lambda c, s: c.reset(s, "Immediate"), "Reset", {"type": "Immediate"}, {"status": "Scheduled"}),
    "change_availability": (lambda c, s: c.change_availability(s, "Inoperative", 1, 1), "ChangeAvailability",
                            {"operationalStatus": "Inoperative", "evse": {"id": 1, "connectorId": 1}},
                            {"status": "Accepted"}),
    "unlock_connector": (lambda c, s: c.unlock_connector(s, 1, 1), "UnlockConnector",
                         {"evseId": 1, "connectorId": 1}, {"status": "Unlocked"}),
    "trigger_message": (lambda c, s: c.trigger_message(s, "StatusNotification", 1, 1), "TriggerMessage",
                        {"requestedMessage": "StatusNotification", "evse": {"id": 1, "connectorId": 1}},
                        {"status": "Accepted"}),
    "get_variables": (lambda c, s: c.get_variables(s, [VAR]), "GetVariables", {"getVariableData": [VAR]},
                      {"getVariableResult": [{**VAR, "attributeStatus": "Accepted", "attributeValue": "60"}]}),
    "set_variables": (lambda c, s: c.set_variables(s, [{**VAR, "attributeValue": "90"}]), "SetVariables",
                      {"setVariableData": [{**VAR, "attributeValue": "90"}]},
                      {"setVariableResult": [{**VAR, "attributeStatus": "Accepted"}]}),
    "get_base_report": (lambda c, s: c.get_base_report(s, 11), "GetBaseReport",
                        {"requestId": 11, "reportBase": "FullInventory"}, {"status": "Accepted"}),
}


@pytest.fixture
async def csms(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(tmp_path, websocket={"call_timeout_s": 2}) as d:
        yield d


async def _station(d: RunningDaemon, sid: str) -> RawStation:
    st = await RawStation.connect(d.ws_url, sid)
    await st.boot()
    return st


async def _next_call(st: RawStation, timeout: float = 2.0) -> list[Any]:
    return await asyncio.wait_for(st.incoming_calls.get(), timeout)


async def _answer(st: RawStation, msg: list[Any], payload: dict[str, Any]) -> None:
    await st.ws.send(json.dumps([3, msg[1], payload]))


async def _commands(daemon: Daemon, sid: str) -> list[dict[str, Any]]:
    return list(reversed(await daemon.store.list_commands(sid)))  # oldest first


@pytest.mark.parametrize("name", sorted(TYPED))
async def test_typed_command_sends_the_exact_request_and_returns_the_answer(csms: RunningDaemon, name: str) -> None:
    send, action, request, answer = TYPED[name]
    assert_schema_valid(action, "Request", request)
    assert_schema_valid(action, "Response", answer)
    st = await _station(csms, "CMD")
    st.auto_answer[action] = answer
    result = await send(csms.daemon.commands, "CMD")
    received = await _next_call(st)
    assert received[2:] == [action, request]
    assert result == answer
    [record] = await _commands(csms.daemon, "CMD")
    assert (record["action"], record["outcome"], record["request"], record["response"]) == (
        action, "result", request, answer)
    await st.close()


async def test_typed_commands_keep_what_the_station_confirmed(csms: RunningDaemon) -> None:
    st = await _station(csms, "KEEP")
    for name in ("set_charging_profile", "get_variables", "set_variables"):
        send, action, _, answer = TYPED[name]
        st.auto_answer[action] = answer
        await send(csms.daemon.commands, "KEEP")
    [kept] = await csms.daemon.store.list_charging_profiles("KEEP")
    assert kept["profile_id"] == 7 and kept["status"] == "Accepted" and kept["evse_id"] == 1
    [var] = await csms.daemon.store.list_variables("KEEP")
    assert (var["component"], var["variable"], var["value"]) == ("OCPPCommCtrlr", "HeartbeatInterval", "90")
    await st.close()


async def test_generic_call_sends_any_csms_action_by_name(csms: RunningDaemon) -> None:
    st = await _station(csms, "GEN")
    st.auto_answer["ClearCache"] = {"status": "Accepted"}
    assert await csms.daemon.commands.call("GEN", "ClearCache", {}) == {"status": "Accepted"}
    assert (await _next_call(st))[2] == "ClearCache"
    await st.close()


@pytest.mark.parametrize("action, payload, code, field", [
    ("SetChargingProfile", {"evseId": 1}, "OccurrenceConstraintViolation", "chargingProfile"),
    ("Reset", {"type": "Sometime"}, "PropertyConstraintViolation", "type"),
    ("UnlockConnector", {"evseId": "1", "connectorId": 1}, "TypeConstraintViolation", "evseId"),
    ("ClearCache", {"force": True}, "FormatViolation", "force"),
    ("SetChargingProfile", {"evseId": 1, "chargingProfile": {**profile(), "chargingSchedule": [
        {**profile()["chargingSchedule"][0], "chargingRateUnit": "kW"}]}},
     "PropertyConstraintViolation", "chargingProfile.chargingSchedule[0].chargingRateUnit"),
    ("LaunchRocket", {}, "NotImplemented", "action"),
    ("Heartbeat", {}, "NotSupported", "action"),  # only stations send it
])
async def test_invalid_generic_request_raises_naming_the_field_and_is_not_sent(
        csms: RunningDaemon, action: str, payload: dict[str, Any], code: str, field: str) -> None:
    st = await _station(csms, "BADREQ")
    with pytest.raises(InvalidRequest) as err:
        await csms.daemon.commands.call("BADREQ", action, payload)
    assert isinstance(err.value, OcppError)
    assert err.value.code == code and err.value.details["field"] == field, err.value
    # Nothing went out: the next call the station sees is the next valid one.
    st.auto_answer["ClearCache"] = {"status": "Accepted"}
    await csms.daemon.commands.call("BADREQ", "ClearCache", {})
    assert (await _next_call(st))[2] == "ClearCache"
    assert [c["action"] for c in await _commands(csms.daemon, "BADREQ")] == ["ClearCache"]
    await st.close()


async def test_station_callerror_is_raised_and_recorded(csms: RunningDaemon) -> None:
    st = await _station(csms, "ERR")
    task = asyncio.create_task(csms.daemon.commands.reset("ERR"))
    msg = await _next_call(st)
    await st.ws.send(json.dumps([4, msg[1], "NotSupported", "no resets here", {"why": "lab unit"}]))
    with pytest.raises(OcppError) as err:
        await task
    assert err.value.code == "NotSupported" and err.value.description == "no resets here"
    [record] = await _commands(csms.daemon, "ERR")
    assert record["outcome"] == "callerror" and record["response"]["errorCode"] == "NotSupported"
    await st.close()


async def test_schema_invalid_answer_from_station_is_an_error_not_a_result(csms: RunningDaemon) -> None:
    st = await _station(csms, "BADANS")
    st.auto_answer["Reset"] = {"status": "Maybe"}
    with pytest.raises(OcppError) as err:
        await csms.daemon.commands.reset("BADANS")
    assert err.value.code == "PropertyConstraintViolation" and err.value.details["field"] == "status"
    await st.close()


async def test_one_call_in_flight_and_queued_calls_go_out_in_order(csms: RunningDaemon) -> None:
    st = await _station(csms, "SEQ")
    cmds = csms.daemon.commands
    tasks = [asyncio.create_task(cmds.call("SEQ", "GetBaseReport", {"requestId": i, "reportBase": "SummaryInventory"}))
             for i in range(4)]
    seen = []
    for i in range(4):
        msg = await _next_call(st)
        seen.append(msg[3]["requestId"])
        # While this call is unanswered nothing else is sent (a negative check needs a short wait).
        await asyncio.sleep(0.05)
        assert st.incoming_calls.empty()
        await _answer(st, msg, {"status": "Accepted" if i % 2 == 0 else "EmptyResultSet"})
    assert seen == [0, 1, 2, 3]
    results = await asyncio.gather(*tasks)
    assert [r["status"] for r in results] == ["Accepted", "EmptyResultSet", "Accepted", "EmptyResultSet"]
    recorded = await _commands(csms.daemon, "SEQ")
    assert [c["request"]["requestId"] for c in recorded] == [0, 1, 2, 3]
    await st.close()


async def test_late_answer_after_timeout_is_never_matched_to_the_next_call(csms: RunningDaemon) -> None:
    st = await _station(csms, "LATE")
    cmds = csms.daemon.commands
    with pytest.raises(CallTimeout):
        await cmds.call("LATE", "Reset", {"type": "OnIdle"}, timeout=0.3)
    first = await _next_call(st)
    second_task = asyncio.create_task(cmds.call("LATE", "Reset", {"type": "Immediate"}, timeout=2))
    second = await _next_call(st)
    assert second[1] != first[1] and second[3] == {"type": "Immediate"}
    await _answer(st, first, {"status": "Rejected"})  # too late: read first (TCP keeps order), must be dropped
    await _answer(st, second, {"status": "Accepted"})
    assert await second_task == {"status": "Accepted"}
    recorded = await _commands(csms.daemon, "LATE")
    assert [(c["request"]["type"], c["outcome"], c["response"]) for c in recorded] == [
        ("OnIdle", "timeout", None), ("Immediate", "result", {"status": "Accepted"})]
    await st.close()


async def test_offline_station_raises_station_offline_and_is_recorded(csms: RunningDaemon) -> None:
    with pytest.raises(StationOffline):
        await csms.daemon.commands.reset("NOBODY")
    [record] = await _commands(csms.daemon, "NOBODY")
    assert record["outcome"] == "offline" and record["action"] == "Reset"


async def test_station_disconnecting_mid_call_fails_the_call_with_station_offline(csms: RunningDaemon) -> None:
    st = await _station(csms, "GONE")
    task = asyncio.create_task(csms.daemon.commands.reset("GONE"))
    await _next_call(st)
    await st.close()
    with pytest.raises(StationOffline):
        await asyncio.wait_for(task, 2)
    [record] = await _commands(csms.daemon, "GONE")
    assert record["outcome"] == "offline"
    with pytest.raises(StationOffline):
        await csms.daemon.commands.reset("GONE")


async def _ready(items: list[Any]) -> list[Any]:
    return items


async def test_handler_may_schedule_a_call_to_its_own_station_after_answering(csms: RunningDaemon) -> None:
    """The bus event for a boot arrives after the answer; a call made from it must not deadlock."""
    answers: list[dict[str, Any]] = []

    def on_boot(event: Any) -> None:
        async def ask() -> None:
            answers.append(await csms.daemon.commands.get_base_report(event.station_id, 1))
        csms.daemon.spawn(ask(), "test: report after boot")

    csms.daemon.bus.subscribe(on_boot, "station.booted")
    st = await RawStation.connect(csms.ws_url, "SELF")
    st.auto_answer["GetBaseReport"] = {"status": "Accepted"}
    await st.boot()
    assert (await _next_call(st))[2] == "GetBaseReport"
    assert await wait_until(lambda: _ready(answers)) == [{"status": "Accepted"}]
    await st.close()


async def test_station_may_send_its_own_call_while_ours_is_in_flight(csms: RunningDaemon) -> None:
    """OCPP-J: each side has at most one CALL in flight, independently of the other side."""
    st = await _station(csms, "BOTH")
    ours = asyncio.create_task(csms.daemon.commands.get_variables("BOTH", [VAR]))
    msg = await _next_call(st)
    assert (await st.result("Heartbeat", {}))["currentTime"]  # answered although we wait on the station
    await _answer(st, msg, {"getVariableResult": [{**VAR, "attributeStatus": "Accepted", "attributeValue": "45"}]})
    assert (await asyncio.wait_for(ours, 2))["getVariableResult"][0]["attributeValue"] == "45"
    await st.close()
