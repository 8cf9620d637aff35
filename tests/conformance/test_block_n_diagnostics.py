"""Block N, Diagnostics (issue 17 item 9): logs, monitoring and customer information as typed
commands whose results the central system keeps.

Covers TC_N_25/34/35/36 (N01 GetLog, LogStatusNotification history, Rejected / AcceptedCanceled),
TC_N_05 (N03 SetMonitoringBase), TC_N_08/09/24 (N04 SetVariableMonitoring, monitors kept with the
ids the station gave them), TC_N_16/17 (N05 SetMonitoringLevel, 0-9), TC_N_18/44 (N06
ClearVariableMonitoring; N06.FR.04: never more ids per message than the station accepts),
TC_N_01..03/47/60 (N02 GetMonitoringReport and the NotifyMonitoringReport it triggers), TC_N_21/48..50
(N07/N08 NotifyEvent answered empty), TC_N_27..32/62/63 (N09/N10 CustomerInformation: one customer
reference, report flag, the reported data kept) and TC_N_46 (N10.FR.02: clearing a customer who is
on a station's local list updates that list).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.station import Rig, Station, rig, ts

TEMP = {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Temperature"}}
POWER = {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"}}


async def test_n01_get_log_and_its_status_history(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("N-1") as st:
        answer = await r.command("N-1", "get-log", {"log_type": "DiagnosticsLog",
                                                    "remote_location": "https://logs.example/upload",
                                                    "oldest_timestamp": ts(-60), "retries": 2,
                                                    "retry_interval_s": 10})
        assert answer == {"status": "Accepted", "filename": "log.txt"}
        sent = await st.expect("GetLog")
        assert sent["logType"] == "DiagnosticsLog" and sent["log"]["remoteLocation"] == "https://logs.example/upload"
        assert "oldestTimestamp" in sent["log"] and (sent["retries"], sent["retryInterval"]) == (2, 10)
        for status in ("Uploading", "Uploaded"):
            assert await st.send("LogStatusNotification", {"status": status, "requestId": sent["requestId"]}) == {}
        [kept] = (await r.get("/api/stations/N-1/logs"))["requests"]
        assert (kept["request_id"], kept["log_type"], kept["filename"], kept["status"]) == (
            sent["requestId"], "DiagnosticsLog", "log.txt", "Uploaded")
        assert [h["status"] for h in kept["history"]] == ["Uploading", "Uploaded"]


@pytest.mark.parametrize("answer", [{"status": "Rejected"}, {"status": "AcceptedCanceled", "filename": "s.log"}])
async def test_n01_refused_and_replacing_log_requests_are_kept(tmp_path: Path, answer: dict) -> None:
    async with rig(tmp_path) as r, r.station("N-2", answers={"GetLog": answer}):
        assert await r.command("N-2", "get-log", {"log_type": "SecurityLog",
                                                  "remote_location": "ftp://logs.example/"}) == answer
        assert (await r.get("/api/stations/N-2/logs"))["requests"][-1]["answer"] == answer["status"]
        await r.refused("N-2", "get-log", {"log_type": "SecurityLog"}, field="remote_location")


async def test_n03_n04_n05_monitoring_is_set_and_kept(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("N-4") as st:
        assert await r.command("N-4", "set-monitoring-base", {"monitoring_base": "FactoryDefault"}) == {
            "status": "Accepted"}
        assert await st.expect("SetMonitoringBase") == {"monitoringBase": "FactoryDefault"}
        items = [{**TEMP, "type": "UpperThreshold", "value": 60, "severity": 4},
                 {**POWER, "type": "Periodic", "value": 300, "severity": 8}]
        results = await r.command("N-4", "set-variable-monitoring", {"items": items})
        assert len(results["setMonitoringResult"]) == 2  # N04.FR.01
        assert (await st.expect("SetVariableMonitoring"))["setMonitoringData"] == items
        assert await r.command("N-4", "set-monitoring-level", {"severity": 5}) == {"status": "Accepted"}
        assert await st.expect("SetMonitoringLevel") == {"severity": 5}
        state = await r.get("/api/stations/N-4/monitoring")
        assert (state["base"], state["level"]) == ("FactoryDefault", 5)
        assert {(m["id"], m["variable"], m["type"]) for m in state["monitors"]} == {
            (100, "Temperature", "UpperThreshold"), (101, "Power", "Periodic")}
        await r.refused("N-4", "set-monitoring-level", {"severity": 10}, field="severity")
        await r.refused("N-4", "set-variable-monitoring", {"items": [{**TEMP, "type": "Sometimes", "value": 1,
                                                                      "severity": 1}]})


async def test_n06_clear_monitoring_in_messages_the_station_accepts(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("N-6") as st:
        await st.send("NotifyReport", {"requestId": 1, "generatedAt": ts(), "seqNo": 0, "reportData": [{
            "component": {"name": "DeviceDataCtrlr"},
            "variable": {"name": "ItemsPerMessage", "instance": "ClearVariableMonitoring"},
            "variableAttribute": [{"value": "2"}]}]})
        items = [{**TEMP, "type": "Delta", "value": n, "severity": 5} for n in range(3)]
        await r.command("N-6", "set-variable-monitoring", {"items": items})
        answer = await r.command("N-6", "clear-variable-monitoring", {"ids": [100, 101, 102]})
        assert [c["id"] for c in answer["clearMonitoringResult"]] == [100, 101, 102]
        assert [p["id"] for p in st.calls("ClearVariableMonitoring")] == [[100, 101], [102]]  # N06.FR.04
        assert (await r.get("/api/stations/N-6/monitoring"))["monitors"] == []
        st.answers["ClearVariableMonitoring"] = lambda p: {"clearMonitoringResult": [
            {"status": "Rejected", "id": i} for i in p["id"]]}  # TC_N_44
        answer = await r.command("N-6", "clear-variable-monitoring", {"ids": [7]})
        assert answer["clearMonitoringResult"][0]["status"] == "Rejected"


async def test_n02_monitoring_report_is_kept(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("N-2R") as st:
        body = {"request_id": 31, "monitoring_criteria": ["ThresholdMonitoring"], "component_variables": [TEMP]}
        assert await r.command("N-2R", "get-monitoring-report", body) == {"status": "Accepted"}
        assert await st.expect("GetMonitoringReport") == {"requestId": 31, "monitoringCriteria": [
            "ThresholdMonitoring"], "componentVariable": [TEMP]}
        assert await st.send("NotifyMonitoringReport", {"requestId": 31, "seqNo": 0, "generatedAt": ts(),
                                                        "monitor": [{**TEMP, "variableMonitoring": [
                                                            {"id": 7, "transaction": False, "value": 70,
                                                             "type": "UpperThreshold", "severity": 3}]}]}) == {}
        monitors = (await r.get("/api/stations/N-2R/monitoring"))["monitors"]
        assert [(m["id"], m["variable"], m["value"]) for m in monitors] == [(7, "Temperature", 70)]
        assert await r.command("N-2R", "get-monitoring-report", {}) == {"status": "Accepted"}  # TC_N_47


async def test_n07_n08_events_get_an_empty_answer(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("N-7") as st:
        event = {"eventId": 3, "timestamp": ts(), "trigger": "Periodic", "actualValue": "55",
                 "eventNotificationType": "CustomMonitor", "variableMonitoringId": 101, **TEMP}
        assert await st.send("NotifyEvent", {"generatedAt": ts(), "seqNo": 0, "eventData": [event]}) == {}


async def _customer(r: Rig, st: Station, body: dict, parts: list[str]) -> dict:
    await r.command(st.id, "customer-information", body)
    sent = await st.expect("CustomerInformation")
    for n, data in enumerate(parts):
        await st.send("NotifyCustomerInformation", {"data": data, "seqNo": n, "generatedAt": ts(),
                                                    "requestId": sent["requestId"], "tbc": n < len(parts) - 1})
    return sent


async def test_n09_customer_information_report(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("N-9") as st:
        await r.id_token("N-CARD")
        sent = await _customer(r, st, {"report": True, "clear": False, "id_token": "N-CARD"},
                               ["sessions: 3; ", "last: yesterday"])
        assert sent["report"] is True and sent["clear"] is False  # N09.FR.01
        assert sent["idToken"] == {"idToken": "N-CARD", "type": "ISO14443"}  # N09.FR.04
        kept = (await r.get("/api/stations/N-9/customer-information"))["requests"]
        assert kept[-1]["data"] == "sessions: 3; last: yesterday" and kept[-1]["complete"] is True
        await _customer(r, st, {"report": True, "clear": False, "customer_identifier": "cust-42"}, [])  # TC_N_28
        assert st.calls("CustomerInformation")[-1]["customerIdentifier"] == "cust-42"
        await r.refused("N-9", "customer-information", {"report": True, "clear": False})  # no reference
        await r.refused("N-9", "customer-information", {"report": True, "clear": False, "id_token": "N-CARD",
                                                        "customer_identifier": "cust-42"})  # two references
        st.answers["CustomerInformation"] = {"status": "Rejected"}  # TC_N_29
        assert await r.command("N-9", "customer-information", {"report": True, "clear": False,
                                                               "customer_identifier": "x"}) == {"status": "Rejected"}


async def test_n10_clearing_a_customer_on_a_local_list_updates_the_list(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("N-10") as st:
        await r.id_token("N-CARD")
        await r.id_token("N-OTHER")
        await r.command("N-10", "send-local-list", {"update_type": "Full", "id_tokens": ["N-CARD", "N-OTHER"]})
        await st.expect("SendLocalList")
        await _customer(r, st, {"report": False, "clear": True, "id_token": "N-CARD"}, [])  # TC_N_32
        update = await st.expect("SendLocalList")  # N10.FR.02
        assert update["updateType"] == "Differential" and update["versionNumber"] == 2
        assert update["localAuthorizationList"] == [{"idToken": {"idToken": "N-CARD", "type": "ISO14443"}}]
        assert [t["id_token"] for t in (await r.get("/api/stations/N-10/local-list"))["id_tokens"]] == ["N-OTHER"]
