"""Every station-initiated OCPP 2.0.1 message gets a schema-valid, meaningful answer and is kept.

Each message is sent twice over real websockets: as exact frames with the raw client, and as a
station built with the `ocpp` package (whose own validation checks both directions again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import websockets
from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case
from ocpp.v201 import ChargePoint, call

from csms.app import Daemon
from csms.domain.registration import Authorizer, RegistrationConfig
from csms.ocpp import v201
from csms.ocpp.package import HandlerDeps
from csms.store.sqlite import SqliteStore
from tests.daemon_fixture import running_daemon
from tests.ocpp_client import RawStation
from tests.test_daemon_kit import BOOT, STATION_MESSAGES, assert_schema_valid

Check = Callable[[Daemon, str, dict[str, Any]], Awaitable[None]]


async def _boot(d: Daemon, sid: str, r: dict[str, Any]) -> None:
    assert r["status"] == "Accepted" and r["interval"] == 300
    rec = await d.store.get_station(sid)
    assert rec is not None and rec.vendor == "TestVendor" and rec.model == "TestModel"
    assert rec.registration == "Accepted" and rec.boot_reason == "PowerUp"


async def _heartbeat(d: Daemon, sid: str, r: dict[str, Any]) -> None:
    assert r["currentTime"].endswith("Z")


async def _status(d: Daemon, sid: str, r: dict[str, Any]) -> None:
    connectors = await d.store.list_connectors(sid)
    assert [(c["evse_id"], c["connector_id"], c["status"]) for c in connectors] == [(2, 1, "Occupied")]


async def _authorize(d: Daemon, sid: str, r: dict[str, Any]) -> None:
    assert r["idTokenInfo"]["status"] == "Accepted"  # the test config accepts unknown tokens


async def _transaction(d: Daemon, sid: str, r: dict[str, Any]) -> None:
    assert r["idTokenInfo"]["status"] == "Accepted"
    tx = await d.store.get_transaction(sid, "TX-ALL")
    assert tx is not None and tx.active and tx.energy_wh == 100.0 and tx.id_token == "TOKEN-OK"


async def _meter(d: Daemon, sid: str, r: dict[str, Any]) -> None:
    samples = await d.store.meter_samples(sid, evse_id=1)
    assert {(s["measurand"], s["value"]) for s in samples} == {
        ("Energy.Active.Import.Register", 1234.0), ("Power.Active.Import", 7000.0)}


async def _needs(d: Daemon, sid: str, r: dict[str, Any]) -> None:
    assert r["status"] == "Accepted"
    kept = await d.store.latest_ev_charging_needs(sid, 1)
    assert kept is not None and kept["chargingNeeds"]["acChargingParameters"]["energyAmount"] == 20000


def _variables(expected: tuple[str, str, str]) -> Check:
    async def check(d: Daemon, sid: str, r: dict[str, Any]) -> None:
        found = {(v["component"], v["variable"], v["value"]) for v in await d.store.list_variables(sid)}
        assert expected in found
    return check


def _kept(action: str, extra: Callable[[dict[str, Any]], None] | None = None) -> Check:
    async def check(d: Daemon, sid: str, r: dict[str, Any]) -> None:
        rows = await d.store.list_station_messages(sid, action)
        assert [row["payload"] for row in rows] == [STATION_MESSAGES[action]]
        if extra is not None:
            extra(r)
    return check


async def _security(d: Daemon, sid: str, r: dict[str, Any]) -> None:
    events = await d.store.list_security_events(sid)
    assert [(e["type"], e["tech_info"]) for e in events] == [("TamperDetectionActivated", "lid")]


async def _cert_status(d: Daemon, sid: str, r: dict[str, Any]) -> None:
    assert r["status"] == "Failed" and r["statusInfo"]["reasonCode"]


def _status_is(status: str) -> Callable[[dict[str, Any]], None]:
    def check(r: dict[str, Any]) -> None:
        assert r["status"] == status, r
    return check


CHECKS: dict[str, Check] = {
    "BootNotification": _boot,
    "Heartbeat": _heartbeat,
    "StatusNotification": _status,
    "Authorize": _authorize,
    "TransactionEvent": _transaction,
    "MeterValues": _meter,
    "NotifyEVChargingNeeds": _needs,
    "NotifyEVChargingSchedule": _kept("NotifyEVChargingSchedule", _status_is("Accepted")),
    "NotifyChargingLimit": _kept("NotifyChargingLimit"),
    "ClearedChargingLimit": _kept("ClearedChargingLimit"),
    "ReportChargingProfiles": _kept("ReportChargingProfiles"),
    "NotifyReport": _variables(("OCPPCommCtrlr", "HeartbeatInterval", "300")),
    "NotifyEvent": _variables(("Connector", "AvailabilityState", "Faulted")),
    "NotifyMonitoringReport": _kept("NotifyMonitoringReport"),
    "SecurityEventNotification": _security,
    "FirmwareStatusNotification": _kept("FirmwareStatusNotification"),
    "LogStatusNotification": _kept("LogStatusNotification"),
    "PublishFirmwareStatusNotification": _kept("PublishFirmwareStatusNotification"),
    "NotifyCustomerInformation": _kept("NotifyCustomerInformation"),
    "NotifyDisplayMessages": _kept("NotifyDisplayMessages"),
    "ReservationStatusUpdate": _kept("ReservationStatusUpdate"),
    "DataTransfer": _kept("DataTransfer", _status_is("UnknownVendorId")),
    "SignCertificate": _kept("SignCertificate", _status_is("Rejected")),
    "Get15118EVCertificate": _kept("Get15118EVCertificate", _status_is("Failed")),
    "GetCertificateStatus": _cert_status,
}


def test_every_station_initiated_action_has_a_handler_and_a_test() -> None:
    store = SqliteStore(":memory:")  # never opened: the router only needs something to hand to its handlers
    registration = RegistrationConfig()
    router = v201.build_router(HandlerDeps(stations=store, transactions=store, smart_charging=store,
                                           device_model=store, messages=store, registration=registration,
                                           authorizer=Authorizer(store, registration)))
    assert set(CHECKS) == set(STATION_MESSAGES) == set(router.actions)
    assert router.actions == v201.OCPP201.station_only | {"DataTransfer"}


@pytest.mark.parametrize("action", sorted(STATION_MESSAGES))
def test_sample_requests_are_schema_valid(action: str) -> None:
    assert_schema_valid(action, "Request", STATION_MESSAGES[action])


async def test_raw_frames_get_schema_valid_meaningful_answers(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as d:
        for i, action in enumerate(sorted(STATION_MESSAGES)):
            sid = f"RAW-{i}"
            st = await RawStation.connect(d.ws_url, sid)
            try:
                if action != "BootNotification":
                    await st.boot()
                reply = await st.call(action, STATION_MESSAGES[action])
                assert reply[0] == 3, f"{action} answered {reply}"
                assert_schema_valid(action, "Response", reply[2])
                await CHECKS[action](d.daemon, sid, reply[2])
            finally:
                await st.close()


async def test_ocpp_package_station_gets_answers_to_every_message(tmp_path: Path) -> None:
    """A station built the way the `ocpp` package documents it talks to the daemon unmodified."""
    async with running_daemon(tmp_path) as d:
        async with websockets.connect(d.station_url("LIB-1"), subprotocols=["ocpp2.0.1"]) as ws:  # type: ignore[list-item]
            cp = ChargePoint("LIB-1", ws)
            reader = asyncio.create_task(cp.start())
            try:
                boot = await cp.call(call.BootNotification(**camel_to_snake_case(BOOT)), suppress=False)
                assert boot.status == "Accepted" and boot.interval == 300
                for action, payload in sorted(STATION_MESSAGES.items()):
                    request = getattr(call, action)(**camel_to_snake_case(payload))
                    result = await cp.call(request, suppress=False)  # raises on a CALLERROR
                    answer = snake_to_camel_case(
                        {k: v for k, v in vars(result).items() if v is not None})
                    assert_schema_valid(action, "Response", answer)
            finally:
                reader.cancel()
        stored = await d.daemon.store.list_station_messages("LIB-1")
        assert {r["action"] for r in stored} >= {"DataTransfer", "NotifyDisplayMessages", "SignCertificate"}
