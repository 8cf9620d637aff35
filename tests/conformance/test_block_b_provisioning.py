"""Block B, Provisioning: boot (Accepted / Pending / Rejected), the operator's hold, device model,
reports, reset, network profiles and the websocket subprotocol.

Covers TC_B_01/02/30/31 (B01.FR.02, B02, B03), the operator "hold" of a registered station and its
release (issue 17 item 7), TC_B_06..10 (B05/B06, including B06.FR.05: never more GetVariableData
than the station's ItemsPerMessage), TC_B_12..14 (B07), TC_B_18 (B08 GetReport), TC_B_20..27
(B11/B12 Reset), TC_B_42/44 (B09 SetNetworkProfile) and TC_B_58 (subprotocol validation).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.conformance.station import OCPPError, rig, ts

VAR = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}


async def test_b01_boot_accepted_with_interval_and_time(tmp_path: Path) -> None:
    async with rig(tmp_path, registration={"heartbeat_interval_s": 120}) as r, r.station("B-1", boot=False) as st:
        answer = await st.boot()
        assert answer["status"] == "Accepted" and answer["interval"] == 120 and answer["currentTime"].endswith("Z")
        summary = await r.get("/api/stations/B-1")
        assert summary["registration"] == "Accepted" and summary["vendor"] == "Conformance"


async def test_b02_pending_station_is_refused_everything_but_boot_then_triggered_once_registered(
        tmp_path: Path) -> None:
    """TC_B_02, TC_B_30, TC_B_31: Pending until the operator registers it; then a TriggerMessage."""
    config = {"registration": {"policy": "approve_unknown", "pending_retry_interval_s": 7,
                               "accept_unknown_id_tokens": False}}
    async with rig(tmp_path, **config) as r, r.station("B-2", boot=False) as st:
        answer = await st.boot()
        assert answer["status"] == "Pending" and answer["interval"] == 7
        with pytest.raises(OCPPError) as refused:  # B02: only BootNotification while Pending
            await st.send("Heartbeat", {})
        assert refused.value.code == "SecurityError"
        # While Pending the CSMS may still configure the station (B02.FR.06 / A01.FR.04).
        assert (await r.command("B-2", "get-variables", {"items": [VAR]}))["getVariableResult"]
        await r.post("/api/stations", {"station_id": "B-2"}, status=(200, 201))
        assert await st.expect("TriggerMessage") == {"requestedMessage": "BootNotification"}
        assert (await st.boot())["status"] == "Accepted"
        assert (await st.send("Heartbeat", {}))["currentTime"]


async def test_b02_operator_hold_keeps_a_registered_station_pending_until_released(tmp_path: Path) -> None:
    """Issue 17 item 7: a station with valid credentials can be held in Pending and released."""
    async with rig(tmp_path) as r:
        await r.post("/api/stations", {"station_id": "B-HOLD"}, status=201)
        held = await r.post("/api/stations/B-HOLD/hold", {"reason": "commissioning check"})
        assert held["hold"] is True
        async with r.station("B-HOLD", boot=False) as st:
            answer = await st.boot()
            assert answer["status"] == "Pending"
            assert answer["statusInfo"]["reasonCode"] and "commissioning" in answer["statusInfo"]["additionalInfo"]
            with pytest.raises(OCPPError):
                await st.send("StatusNotification", {"timestamp": ts(), "connectorStatus": "Available",
                                                     "evseId": 1, "connectorId": 1})
            assert (await r.get("/api/stations/B-HOLD"))["hold"] is True
            released = await r.post("/api/stations/B-HOLD/release")
            assert released["hold"] is False
            assert await st.expect("TriggerMessage") == {"requestedMessage": "BootNotification"}
            assert (await st.boot())["status"] == "Accepted"
            await st.status(1)
        # A hold outlives a reconnect: it is stored, not a property of the socket.
        await r.post("/api/stations/B-HOLD/hold")
        async with r.station("B-HOLD", boot=False) as st:
            assert (await st.boot())["status"] == "Pending"
        assert (await r.api.post("/api/stations/NOPE/hold"))[0] == 404


async def test_b03_blocked_station_is_rejected(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        async with r.station("B-3"):
            pass
        await r.post("/api/stations/B-3/block")
        async with r.station("B-3", boot=False) as st:
            answer = await st.boot()
            assert answer["status"] == "Rejected" and answer["statusInfo"]["reasonCode"]


async def test_b05_b06_get_and_set_variables_keep_the_station_answer(tmp_path: Path) -> None:
    """TC_B_06/07/09/10: results one per item (B05.FR.01, B06.FR.01), attributeType Actual by default."""
    items = [VAR, {"component": {"name": "AuthCtrlr"}, "variable": {"name": "Enabled"}, "attributeType": "Actual"}]
    async with rig(tmp_path) as r, r.station("B-5") as st:
        got = await r.command("B-5", "get-variables", {"items": items})
        assert len(got["getVariableResult"]) == 2
        assert (await st.expect("GetVariables"))["getVariableData"] == items
        await r.command("B-5", "set-variables", {"items": [{**VAR, "attributeValue": "90"}]})
        assert (await st.expect("SetVariables"))["setVariableData"] == [{**VAR, "attributeValue": "90"}]
        values = {(v["component"], v["variable"]): v["value"] for v in (await r.get("/api/stations/B-5"))["variables"]}
        assert values[("OCPPCommCtrlr", "HeartbeatInterval")] == "90"


async def test_b06_fr05_get_variables_never_exceeds_items_per_message(tmp_path: Path) -> None:
    """B06.FR.05: the CSMS SHALL NOT send more GetVariableData than ItemsPerMessageGetVariables."""
    async with rig(tmp_path) as r, r.station("B-6") as st:
        await st.send("NotifyReport", {"requestId": 1, "generatedAt": ts(), "seqNo": 0, "reportData": [{
            "component": {"name": "DeviceDataCtrlr"},
            "variable": {"name": "ItemsPerMessage", "instance": "GetVariables"},
            "variableAttribute": [{"type": "Actual", "value": "2"}]}]})
        items = [{"component": {"name": "C"}, "variable": {"name": f"V{i}"}} for i in range(3)]
        got = await r.command("B-6", "get-variables", {"items": items})
        assert [len(p["getVariableData"]) for p in st.calls("GetVariables")] == [2, 1]
        assert [res["variable"]["name"] for res in got["getVariableResult"]] == ["V0", "V1", "V2"]


@pytest.mark.parametrize("report_base", ["ConfigurationInventory", "FullInventory", "SummaryInventory"])
async def test_b07_get_base_report_and_the_notify_report_it_triggers(tmp_path: Path, report_base: str) -> None:
    async with rig(tmp_path) as r, r.station("B-7") as st:
        assert await r.command("B-7", "get-base-report", {"report_base": report_base, "request_id": 42}) == {
            "status": "Accepted"}
        assert await st.expect("GetBaseReport") == {"requestId": 42, "reportBase": report_base}
        for seq, tbc in ((0, True), (1, False)):
            assert await st.send("NotifyReport", {"requestId": 42, "generatedAt": ts(), "seqNo": seq, "tbc": tbc,
                                                  "reportData": [{"component": {"name": "EVSE", "evse": {"id": 1}},
                                                                  "variable": {"name": f"Power{seq}"},
                                                                  "variableAttribute": [{"value": str(seq)}]}]}) == {}
        names = {v["variable"] for v in (await r.get("/api/stations/B-7"))["variables"]}
        assert {"Power0", "Power1"} <= names


async def test_b08_get_custom_report_typed(tmp_path: Path) -> None:
    """TC_B_18: GetReport with componentCriteria and component/variables, without hand-written OCPP."""
    async with rig(tmp_path) as r, r.station("B-8") as st:
        body = {"request_id": 8, "component_criteria": ["Available", "Problem"],
                "component_variables": [{"component": {"name": "EVSE", "evse": {"id": 1}},
                                         "variable": {"name": "AvailabilityState"}}]}
        assert await r.command("B-8", "get-report", body) == {"status": "Accepted"}
        assert await st.expect("GetReport") == {
            "requestId": 8, "componentCriteria": ["Available", "Problem"],
            "componentVariable": [{"component": {"name": "EVSE", "evse": {"id": 1}},
                                   "variable": {"name": "AvailabilityState"}}]}
        await r.refused("B-8", "get-report", {"component_criteria": ["Sometimes"]}, field="component_criteria[0]")


@pytest.mark.parametrize("body, expected, answer", [
    ({"type": "OnIdle"}, {"type": "OnIdle"}, "Accepted"),  # TC_B_20
    ({"type": "OnIdle"}, {"type": "OnIdle"}, "Scheduled"),  # TC_B_21 (B12.FR.01)
    ({"type": "Immediate"}, {"type": "Immediate"}, "Accepted"),  # TC_B_22
    ({"type": "OnIdle", "evse_id": 1}, {"type": "OnIdle", "evseId": 1}, "Accepted"),  # TC_B_25
    ({"type": "Immediate", "evse_id": 1}, {"type": "Immediate", "evseId": 1}, "Rejected"),  # TC_B_27
])
async def test_b11_b12_reset(tmp_path: Path, body: dict, expected: dict, answer: str) -> None:
    async with rig(tmp_path) as r, r.station("B-11", answers={"Reset": {"status": answer}}) as st:
        assert await r.command("B-11", "reset", body) == {"status": answer}
        assert await st.expect("Reset") == expected


async def test_b09_set_network_profile_typed(tmp_path: Path) -> None:
    """TC_B_42 (Accepted) / TC_B_44 (Failed): the answer is returned and nothing else is assumed."""
    profile = {"ocppVersion": "OCPP20", "ocppTransport": "JSON", "ocppCsmsUrl": "wss://csms.example:9443/ocpp",
               "messageTimeout": 30, "securityProfile": 2, "ocppInterface": "Wired0"}
    async with rig(tmp_path) as r, r.station("B-9", answers={"SetNetworkProfile": {"status": "Failed"}}) as st:
        answer = await r.command("B-9", "set-network-profile", {"configuration_slot": 2, "connection_data": profile})
        assert answer == {"status": "Failed"}
        assert await st.expect("SetNetworkProfile") == {"configurationSlot": 2, "connectionData": profile}
        await r.refused("B-9", "set-network-profile", {"connection_data": profile}, field="configuration_slot")


async def test_b58_subprotocol_the_csms_does_not_speak_is_refused(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(f"{r.ws_url}/B-58", subprotocols=["ocpp1.5"]):  # type: ignore[list-item]
                pass
        assert refused.value.response.status_code == 400
