"""OCPP 2.1 stations built from the `ocpp` package's own v21 ChargePoint, over a real websocket to the
real daemon: the subprotocol is negotiated in the configured order of preference and kept per
station; boot, authorisation, a full transaction with meter values; the messages 2.1 adds get
schema-valid answers and are kept; the generic call is checked against the station's version."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import websockets
from ocpp.v21 import call

from csms.domain.registration import VERSION_KEY
from csms.protocol.errors import InvalidRequest, StationOffline
from tests.api_fixture import api_daemon
from tests.daemon_fixture import running_daemon
from tests.ocpp_station21 import Station21
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)


async def test_preference_order_and_version_kept(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, api={"enabled": False}) as d:
        both = Station21("PREF-21")  # offers 2.1, 2.0.1 and 1.6: the daemon prefers 2.1
        await both.connect(d.ws_url)
        assert both.subprotocol == "ocpp2.1"
        assert (await both.boot()).status == "Accepted"
        old = Station21("PREF-201", offered=["ocpp2.0.1"])
        async with websockets.connect(f"{d.ws_url}/{old.station_id}", subprotocols=old.offered) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol == "ocpp2.0.1"
        await both.close()

        async def kept() -> bool:  # a station first seen in this connection: kept once it leaves
            record = await d.daemon.store.get_station("PREF-21")
            return record is not None and record.extra.get(VERSION_KEY) == "ocpp2.1"
        await until(kept, 5, "the version kept")
    # The operator prefers 2.0.1: a station offering both gets it.
    async with running_daemon(tmp_path / "b", api={"enabled": False},
                              websocket={"host": "127.0.0.1", "port": 0, "subprotocols": ["ocpp2.0.1", "ocpp2.1"]}) as d:
        st = Station21("PREF-B")
        await st.connect(d.ws_url)
        assert st.subprotocol == "ocpp2.0.1"
        await st.close()


async def test_boot_authorize_transaction_meter_values(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, api={"enabled": False}) as d:
        st = Station21("TX-21", v2x=True)
        st.car.v2x = True
        await st.connect(d.ws_url)
        boot = await st.boot()
        assert boot.status == "Accepted" and boot.interval > 0
        auth = await st.authorize("TOKEN-21")
        assert auth.id_token_info["status"] == "Accepted"
        needs, started = await st.start("TOKEN-21")
        assert needs.status == "Accepted"
        assert started.id_token_info["status"] == "Accepted"
        for _ in range(3):
            await st.meter(60.0)
        await st.stop()
        store = d.daemon.store
        tx = await store.get_transaction("TX-21", "TX-21-tx-1")
        assert tx is not None and not tx.active and tx.stopped_reason == "EVDisconnected"
        assert tx.evse_id == 1 and tx.id_token == "TOKEN-21" and tx.first_seen_as == "Started"
        assert tx.energy_wh == pytest.approx(st.import_wh, abs=0.01) and st.import_wh > 0
        samples = await store.meter_samples("TX-21", transaction_id="TX-21-tx-1")
        assert {s["measurand"] for s in samples} >= {"Energy.Active.Import.Register", "Energy.Active.Export.Register",
                                                  "Power.Active.Import", "Power.Active.Export"}
        stored = await store.latest_ev_charging_needs("TX-21", 1)
        assert stored is not None
        v2x = stored["chargingNeeds"]["v2xChargingParameters"]
        assert v2x["maxDischargePower"] == 7000.0 and stored["chargingNeeds"]["controlMode"] == "ScheduledControl"
        await st.close()


async def test_messages_new_in_21_are_answered_and_kept(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, api={"enabled": False}) as d:
        st = Station21("NEW-21")
        await st.connect(d.ws_url)
        await st.boot()
        cp, now = st.cp, "2026-01-01T00:00:00.000Z"
        await cp.call(call.NotifyDERAlarm(control_type="FreqDroop", timestamp=now, grid_event_fault="OverVoltage"))
        await cp.call(call.NotifyDERStartStop(control_id="c1", started=True, timestamp=now))
        await cp.call(call.NotifyPriorityCharging(transaction_id="t1", activated=True))
        await cp.call(call.NotifySettlement(psp_ref="psp-1", status="Settled", settlement_amount=12.5,
                                            settlement_time=now))
        await cp.call(call.ReportDERControl(request_id=1))
        await cp.call(call.ClosePeriodicEventStream(id=3))
        opened = await cp.call(call.OpenPeriodicEventStream(constant_stream_data={
            "id": 3, "params": {}, "variable_monitoring_id": 1}))
        assert opened.status == "Rejected" and opened.status_info["reason_code"] == "NotSupported"
        pulled = await cp.call(call.PullDynamicScheduleUpdate(charging_profile_id=5))
        assert pulled.status == "Rejected"
        vat = await cp.call(call.VatNumberValidation(vat_number="NL000099998B57", evse_id=1))
        assert vat.vat_number == "NL000099998B57" and vat.status == "Rejected"
        chain = await cp.call(call.GetCertificateChainStatus(certificate_status_requests=[{
            "certificate_hash_data": {"hash_algorithm": "SHA256", "issuer_name_hash": "a", "issuer_key_hash": "b",
                                      "serial_number": "01"}, "source": "OCSP", "urls": ["http://127.0.0.1/ocsp"]}]))
        assert chain.certificate_status[0]["status"] == "Failed"
        kept = {m["action"] for m in await d.daemon.store.list_station_messages("NEW-21")}
        assert kept >= {"NotifyDERAlarm", "NotifyDERStartStop", "NotifyPriorityCharging", "NotifySettlement",
                        "ReportDERControl", "ClosePeriodicEventStream", "OpenPeriodicEventStream",
                        "PullDynamicScheduleUpdate", "VatNumberValidation"}
        await st.close()


async def test_generic_call_checked_against_the_stations_version(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, api={"enabled": False}) as d:
        st = Station21("CALL-21")
        await st.connect(d.ws_url)
        await st.boot()
        old = Station21("CALL-201", offered=["ocpp2.0.1"])
        await old.connect(d.ws_url)
        commands = d.daemon.commands
        # A 2.1 action goes to the 2.1 station ...
        answer = await commands.call("CALL-21", "NotifyAllowedEnergyTransfer",
                                     {"transactionId": "t", "allowedEnergyTransfer": ["AC_three_phase"]})
        assert answer == {"status": "Accepted"} and st.allowed_transfers == [["AC_three_phase"]]
        # ... and is refused for the 2.0.1 one, unsent.
        with pytest.raises(InvalidRequest) as refused:
            await commands.call("CALL-201", "NotifyAllowedEnergyTransfer",
                                {"transactionId": "t", "allowedEnergyTransfer": ["AC_three_phase"]})
        assert refused.value.code == "NotImplemented"
        # A 2.1-only field is valid for the 2.1 station only.
        profile = {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
                   "chargingProfileKind": "Relative", "chargingSchedule": [{
                       "id": 1, "chargingRateUnit": "A", "chargingSchedulePeriod": [
                           {"startPeriod": 0, "limit": 16, "operationMode": "ChargingOnly"}]}]}
        with pytest.raises(InvalidRequest):
            await commands.call("CALL-201", "SetChargingProfile", {"evseId": 0, "chargingProfile": profile})
        assert (await commands.call("CALL-21", "SetChargingProfile",
                                    {"evseId": 0, "chargingProfile": profile}))["status"] == "Accepted"
        await asyncio.gather(st.close(), old.close())


async def test_api_generic_call_per_station_version(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        await api.station("API-201")  # a 2.0.1 station
        st = Station21("API-21")
        await st.connect(api.running.ws_url)
        await st.boot()
        body = {"transactionId": "t", "allowedEnergyTransfer": ["AC_three_phase"]}
        status, out = await api.post("/api/stations/API-21/call/NotifyAllowedEnergyTransfer", body)
        assert status == 200, out
        status, out = await api.post("/api/stations/API-201/call/NotifyAllowedEnergyTransfer", body)
        assert status in (404, 422) and "ocpp2.0.1" in out["error"]  # refused naming the station's version
        status, out = await api.post("/api/stations/API-21/call/Frobnicate", {})
        assert status == 404
        status, listed = await api.get("/api/stations")
        versions = {s["station_id"]: s["ocpp_version"] for s in listed["stations"]}
        assert versions == {"API-201": "ocpp2.0.1", "API-21": "ocpp2.1"}
        needs, _ = await st.start()
        status, detail = await api.get("/api/stations/API-21")
        assert detail["ocpp_version"] == "ocpp2.1" and detail["connection"]["subprotocol"] == "ocpp2.1"
        [evse] = detail["evses"]
        assert evse["ev_charging_needs"]["chargingNeeds"]["mobilityNeedsMode"] == "EVCC"
        status, commands = await api.get("/api/commands?station_id=API-21")
        assert commands["version"] == "ocpp2.1" and "NotifyAllowedEnergyTransfer" in commands["generic_actions"]
        status, commands = await api.get("/api/commands?station_id=API-201")
        assert commands["version"] == "ocpp2.0.1" and "NotifyAllowedEnergyTransfer" not in commands["generic_actions"]
        await st.close()


async def test_api_generic_call_to_an_offline_21_station_is_409(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        st = Station21("OFF-21")
        await st.connect(api.running.ws_url)
        await st.boot()
        await st.close()
        for _ in range(200):
            if "OFF-21" not in api.daemon.connections:
                break
            await asyncio.sleep(0.01)
        body = {"transactionId": "t", "allowedEnergyTransfer": ["AC_three_phase"]}
        status, out = await api.post("/api/stations/OFF-21/call/NotifyAllowedEnergyTransfer", body)
        assert status == 409, out
        # Inside the daemon the attempt is checked against the version that has the action, then refused offline.
        with pytest.raises(StationOffline):
            await api.daemon.commands.call("OFF-21", "NotifyAllowedEnergyTransfer", body)
        with pytest.raises(InvalidRequest):
            await api.daemon.commands.call("OFF-21", "NotifyAllowedEnergyTransfer", {"transactionId": "t"})
