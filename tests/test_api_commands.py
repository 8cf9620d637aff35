"""Commands through the operator API: every typed command, the generic path, and each failure."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.api_fixture import api_daemon

PROFILE = {"id": 7, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile",
           "chargingProfileKind": "Relative",
           "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}]}
VAR = {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "RateUnit"}}

# command -> (body, OCPP action the station receives, the payload it must receive (subset))
CASES: dict[str, tuple[dict[str, Any], str, dict[str, Any]]] = {
    "request-start-transaction": ({"id_token": "CARD1", "evse_id": 1, "remote_start_id": 5},
                                  "RequestStartTransaction",
                                  {"idToken": {"idToken": "CARD1", "type": "Central"}, "evseId": 1,
                                   "remoteStartId": 5}),
    "request-stop-transaction": ({"transaction_id": "tx-1"}, "RequestStopTransaction", {"transactionId": "tx-1"}),
    "reset": ({"type": "Immediate"}, "Reset", {"type": "Immediate"}),
    "change-availability": ({"status": "Inoperative", "evse_id": 1, "connector_id": 1}, "ChangeAvailability",
                            {"operationalStatus": "Inoperative", "evse": {"id": 1, "connectorId": 1}}),
    "unlock-connector": ({"evse_id": 1, "connector_id": 1}, "UnlockConnector", {"evseId": 1, "connectorId": 1}),
    "trigger-message": ({"requested_message": "Heartbeat"}, "TriggerMessage", {"requestedMessage": "Heartbeat"}),
    "get-variables": ({"items": [VAR]}, "GetVariables", {"getVariableData": [VAR]}),
    "set-variables": ({"items": [{**VAR, "attributeValue": "A"}]}, "SetVariables",
                      {"setVariableData": [{**VAR, "attributeValue": "A"}]}),
    "get-base-report": ({"report_base": "SummaryInventory", "request_id": 3}, "GetBaseReport",
                        {"reportBase": "SummaryInventory", "requestId": 3}),
    "set-charging-profile": ({"evse_id": 0, "profile": PROFILE}, "SetChargingProfile",
                             {"evseId": 0, "chargingProfile": PROFILE}),
    "clear-charging-profile": ({"profile_id": 7}, "ClearChargingProfile", {"chargingProfileId": 7}),
    "get-charging-profiles": ({"request_id": 9, "purpose": "TxProfile"}, "GetChargingProfiles",
                              {"requestId": 9, "chargingProfile": {"chargingProfilePurpose": "TxProfile"}}),
    "get-composite-schedule": ({"evse_id": 0, "duration_s": 3600, "unit": "W"}, "GetCompositeSchedule",
                               {"evseId": 0, "duration": 3600, "chargingRateUnit": "W"}),
    "get-transaction-status": ({"transaction_id": "tx-1"}, "GetTransactionStatus", {"transactionId": "tx-1"}),
}


def test_every_typed_command_is_covered() -> None:
    from csms.api.commands import TYPED

    assert set(CASES) == set(TYPED)


async def test_every_typed_command_reaches_the_station_and_returns_its_answer(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        st = await api.station("CS-1")
        for name, (body, action, expected) in CASES.items():
            status, out = await api.post(f"/api/stations/CS-1/commands/{name}", body)
            assert status == 200, (name, out)
            call = await asyncio.wait_for(st.incoming_calls.get(), 5)
            assert call[2] == action
            assert {k: call[3][k] for k in expected} == expected, name
            answer = api.stations[0].auto_answer[action]
            assert out["response"] == (answer(call[3]) if callable(answer) else answer)
            assert out["station_id"] == "CS-1" and out["action"] == action and out["latency_ms"] >= 0
        profiles = await api.daemon.store.list_charging_profiles("CS-1")
        assert profiles[-1]["status"] == "Accepted" and profiles[-1]["profile"]["id"] == 7


async def test_generic_call_sends_any_csms_action(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        st = await api.station("CS-1")
        payload = {"vendorId": "com.example", "messageId": "ping", "data": "hello"}
        status, out = await api.post("/api/stations/CS-1/call/DataTransfer", payload)
        assert status == 200 and out["response"] == {"status": "Accepted"}
        call = await asyncio.wait_for(st.incoming_calls.get(), 5)
        assert call[2:] == ["DataTransfer", payload]
        status, body = await api.get("/api/commands", token="read")
        assert "DataTransfer" in body["generic_actions"] and "BootNotification" not in body["generic_actions"]
        assert body["typed"]["reset"]["action"] == "Reset"


async def test_generic_call_refuses_unknown_and_station_side_actions(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        await api.station("CS-1")
        for action in ("Frobnicate", "BootNotification"):
            status, body = await api.post(f"/api/stations/CS-1/call/{action}", {})
            assert status == 404 and "central system can send" in body["error"]


async def test_schema_errors_name_the_offending_field(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        st = await api.station("CS-1")
        status, body = await api.post("/api/stations/CS-1/call/Reset", {"type": "Sometime"})
        assert status == 422 and body["field"] == "type" and body["code"] == "PropertyConstraintViolation"
        status, body = await api.post("/api/stations/CS-1/commands/unlock-connector", {"evse_id": "one",
                                                                                      "connector_id": 1})
        assert status == 422 and body["field"] == "evse_id"
        status, body = await api.post("/api/stations/CS-1/commands/reset", {"kind": "Immediate"})
        assert status == 422 and "kind" in body["error"]
        # Checked by the OCPP schema after the body passed ours: a profile missing its schedule.
        bad = {k: v for k, v in PROFILE.items() if k != "chargingSchedule"}
        status, body = await api.post("/api/stations/CS-1/commands/set-charging-profile",
                                      {"evse_id": 0, "profile": bad})
        assert status == 422 and "chargingSchedule" in body["error"]
        status, body = await api.post("/api/stations/CS-1/commands/reset", raw=b"[1,")
        assert status == 400
        assert st.incoming_calls.empty()  # nothing invalid was sent


async def test_offline_known_station_is_409_unknown_is_404(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        st = await api.station("CS-OFF")
        await st.close()
        for _ in range(200):
            if "CS-OFF" not in api.daemon.connections:
                break
            await asyncio.sleep(0.01)
        status, body = await api.post("/api/stations/CS-OFF/commands/reset", {})
        assert (status, body) == (409, {"error": "station 'CS-OFF' is not connected"})
        status, body = await api.post("/api/stations/CS-OFF/call/Reset", {"type": "OnIdle"})
        assert status == 409
        status, body = await api.post("/api/stations/NOPE/commands/reset", {})
        assert (status, body) == (404, {"error": "unknown station 'NOPE'"})


async def test_no_answer_is_504(tmp_path: Path) -> None:
    async with api_daemon(tmp_path, websocket={"call_timeout_s": 0.3}) as api:
        await api.station("CS-SLOW", answers={})
        status, body = await api.post("/api/stations/CS-SLOW/commands/reset", {})
        assert status == 504 and "did not answer Reset" in body["error"]


async def test_callerror_is_502_with_the_code(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        st = await api.station("CS-ERR", answers={})

        async def answer_with_error() -> None:
            call = await asyncio.wait_for(st.incoming_calls.get(), 5)
            await st.ws.send(json.dumps([4, call[1], "NotSupported", "no resets here", {"why": "test"}]))

        responder = asyncio.create_task(answer_with_error())
        status, body = await api.post("/api/stations/CS-ERR/commands/reset", {"type": "OnIdle"})
        await responder
        assert status == 502
        assert body["code"] == "NotSupported" and body["description"] == "no resets here"
        assert body["details"] == {"why": "test"} and "CALLERROR NotSupported" in body["error"]


@pytest.mark.parametrize("token", ["read", None])
async def test_commands_need_the_admin_scope(tmp_path: Path, token: str | None) -> None:
    async with api_daemon(tmp_path) as api:
        st = await api.station("CS-1")
        status, _ = await api.post("/api/stations/CS-1/commands/reset", {}, token=token)
        assert status == (403 if token else 401)
        status, _ = await api.post("/api/stations/CS-1/call/Reset", {"type": "OnIdle"}, token=token)
        assert status == (403 if token else 401)
        assert st.incoming_calls.empty()


def test_integral_floats_become_ints_where_the_body_schema_says_integer() -> None:
    """Schemathesis found a 500: reservation_id 1.0 passed the schema and broke ``:010d``."""
    from csms.api.http import as_integers
    schema = {"type": "object", "properties": {"reservation_id": {"type": "integer"}, "kw": {"type": "number"},
                                               "ids": {"type": "array", "items": {"type": "integer"}}}}
    body = as_integers(schema, {"reservation_id": 7.0, "kw": 3.0, "ids": [1.0, 2], "other": 1.0})
    assert body == {"reservation_id": 7, "kw": 3.0, "ids": [1, 2], "other": 1.0}
    assert type(body["reservation_id"]) is int and type(body["kw"]) is float and type(body["other"]) is float
