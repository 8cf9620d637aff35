"""Stations through the operator API: list, detail, register, block, unregister, trace."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.api_fixture import api_daemon
from tests.ocpp_client import RawStation


async def test_list_and_detail_show_boot_connection_evses_and_variables(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        st = await api.station("CS-1", evses=2)
        await st.result("NotifyReport", {"requestId": 1, "generatedAt": "2025-01-01T00:00:00Z", "seqNo": 0,
                                         "reportData": [
                                             {"component": {"name": "SmartChargingCtrlr"},
                                              "variable": {"name": "RateUnit"},
                                              "variableAttribute": [{"value": "A,W"}]},
                                             {"component": {"name": "SecurityCtrlr"},
                                              "variable": {"name": "BasicAuthPassword"},
                                              "variableAttribute": [{"value": "hunter2hunter2hunter2"}]}]})
        status, body = await api.get("/api/stations", token="read")
        assert status == 200
        [summary] = body["stations"]
        assert summary["station_id"] == "CS-1" and summary["connected"] is True
        assert summary["vendor"] == "TestVendor" and summary["registration"] == "Accepted"
        status, detail = await api.get("/api/stations/CS-1", token="read")
        assert status == 200
        assert detail["connection"]["subprotocol"] == "ocpp2.0.1" and detail["connection"]["accepted"] is True
        assert [(e["evse_id"], [c["status"] for c in e["connectors"]]) for e in detail["evses"]] == [
            (1, ["Available"]), (2, ["Available"])]
        values = {v["variable"]: v["value"] for v in detail["variables"]}
        assert values["RateUnit"] == "A,W"
        assert values.get("BasicAuthPassword") in (None, "***")
        assert "hunter2" not in str(detail) and "password_hash" not in detail
        assert detail["last_boot"] is not None and detail["has_password"] is False


async def test_a_connected_station_that_never_booted_is_listed(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        await api.station("CS-NEW", boot=False)
        for _ in range(100):  # the gateway registers the connection just after the handshake
            if "CS-NEW" in api.daemon.connections:
                break
            await asyncio.sleep(0.01)
        status, body = await api.get("/api/stations")
        assert [(s["station_id"], s["connected"], s["registration"]) for s in body["stations"]] == [
            ("CS-NEW", True, "Unknown")]
        assert (await api.get("/api/stations/CS-NEW"))[0] == 200


async def test_unknown_station_is_404_everywhere(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        for method, path in (("GET", "/api/stations/NOPE"), ("GET", "/api/stations/NOPE/trace"),
                             ("POST", "/api/stations/NOPE/block"), ("POST", "/api/stations/NOPE/unblock"),
                             ("DELETE", "/api/stations/NOPE")):
            status, body = await api.request(method, path)
            assert (status, body) == (404, {"error": "unknown station 'NOPE'"}), path


async def test_register_lets_a_station_in_under_registered_only(tmp_path: Path) -> None:
    async with api_daemon(tmp_path, registration={"policy": "registered_only"}) as api:
        st = await api.station("CS-R", boot=False)
        assert (await st.boot())["status"] == "Rejected"
        status, body = await api.post("/api/stations", {"station_id": "CS-R"})
        assert status == 201 and body["registered"] is True and body["registration"] == "Accepted"
        assert (await st.boot())["status"] == "Accepted"
        status, body = await api.post("/api/stations", {"station_id": "CS-R"})
        assert status == 200  # already registered


async def test_register_validates_the_body(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        status, body = await api.post("/api/stations", {"station_id": "bad id/with slash"})
        assert status == 422 and body["field"] == "station_id"
        status, body = await api.post("/api/stations", {"station_id": "CS-X", "password": "p" * 20})
        assert status == 422 and body["field"] == "security_profile"
        status, body = await api.post("/api/stations", {"station_id": "CS-X", "colour": "red"})
        assert status == 422 and "colour" in body["error"]
        status, body = await api.post("/api/stations", {})
        assert status == 422 and "station_id" in body["error"]


async def test_block_disconnects_and_rejects_until_unblocked(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        st = await api.station("CS-B")
        status, body = await api.post("/api/stations/CS-B/block")
        assert status == 200 and body["registration"] == "Blocked"
        await asyncio.wait_for(st.ws.wait_closed(), 5)
        assert st.ws.close_code == 1008
        again = await RawStation.connect(api.running.ws_url, "CS-B")
        api.stations.append(again)
        assert (await again.boot())["status"] == "Rejected"
        status, body = await api.post("/api/stations/CS-B/unblock")
        assert status == 200 and body["registration"] == "Unknown"
        assert (await again.boot())["status"] == "Accepted"
        status, body = await api.post("/api/stations/CS-B/unblock")
        assert status == 409 and "not blocked" in body["error"]


async def test_unregister_forgets_and_disconnects(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        st = await api.station("CS-U")
        status, _ = await api.delete("/api/stations/CS-U")
        assert status == 204
        await asyncio.wait_for(st.ws.wait_closed(), 5)
        assert await api.daemon.store.get_station("CS-U") is None
        for _ in range(100):
            if "CS-U" not in api.daemon.connections:
                break
            await asyncio.sleep(0.01)
        assert (await api.get("/api/stations/CS-U"))[0] == 404


async def test_trace_shows_frames_both_ways_with_secrets_redacted(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        await api.station("CS-T")
        status, _ = await api.post("/api/stations/CS-T/commands/set-variables", {"items": [
            {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"},
             "attributeValue": "s3cret-s3cret-s3cret"}]})
        assert status == 200
        status, body = await api.get("/api/stations/CS-T/trace", token="read")
        assert status == 200
        directions = [f["direction"] for f in body["frames"]]
        assert directions[:2] == ["in", "out"] and "BootNotification" in body["frames"][0]["frame"]
        assert any("SetVariables" in f["frame"] for f in body["frames"])
        assert "s3cret" not in str(body)
        detail = (await api.get("/api/stations/CS-T"))[1]
        assert "s3cret" not in str(detail)
