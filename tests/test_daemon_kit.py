"""Shared pieces of the daemon tests: an independent schema check, sample payloads, small waits.

Answers are checked with ``jsonschema`` against the `ocpp` package's official schemas, not with
the daemon's own compiled validators, so a bug in the daemon's validation cannot hide itself.
This module holds no tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any, TypeVar

import jsonschema
import ocpp

from tests.ocpp_client import now_iso

T = TypeVar("T")
SCHEMA_DIR = os.path.join(os.path.dirname(ocpp.__file__), "v201", "schemas")


@lru_cache(maxsize=None)
def _validator(action: str, direction: str) -> jsonschema.protocols.Validator:
    with open(os.path.join(SCHEMA_DIR, f"{action}{direction}.json"), encoding="utf-8-sig") as f:
        schema = json.load(f)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def assert_schema_valid(action: str, direction: str, payload: dict[str, Any]) -> None:
    """Fail with every schema violation of ``payload`` (``direction``: Request or Response)."""
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<payload>'}: {e.message}"
              for e in _validator(action, direction).iter_errors(payload)]
    assert not errors, f"{action}{direction} is schema-invalid: {errors}"


async def wait_until(predicate: Callable[[], Awaitable[T]], timeout: float = 5.0, step: float = 0.02) -> T:
    """Poll an async predicate until it returns something truthy (bounded in time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(step)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BOOT = {"reason": "PowerUp", "chargingStation": {"vendorName": "TestVendor", "model": "TestModel",
                                                 "serialNumber": "SN-1", "firmwareVersion": "1.0"}}


def meter_value(energy_wh: float, power_w: float, ts: str | None = None, context: str = "Sample.Periodic") -> dict:
    return {"timestamp": ts or now_iso(), "sampledValue": [
        {"value": energy_wh, "measurand": "Energy.Active.Import.Register", "context": context,
         "unitOfMeasure": {"unit": "Wh"}},
        {"value": power_w, "measurand": "Power.Active.Import", "context": context,
         "unitOfMeasure": {"unit": "W"}}]}


def transaction_event(event_type: str, tx_id: str, seq_no: int, *, trigger: str = "MeterValuePeriodic",
                      charging_state: str | None = None, energy_wh: float | None = None, power_w: float = 0.0,
                      evse_id: int = 1, id_token: str | None = None, offline: bool = False,
                      stopped_reason: str | None = None, ts: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"transactionId": tx_id}
    if charging_state is not None:
        info["chargingState"] = charging_state
    if stopped_reason is not None:
        info["stoppedReason"] = stopped_reason
    payload: dict[str, Any] = {"eventType": event_type, "timestamp": ts or now_iso(), "triggerReason": trigger,
                               "seqNo": seq_no, "transactionInfo": info, "evse": {"id": evse_id, "connectorId": 1}}
    if energy_wh is not None:
        payload["meterValue"] = [meter_value(energy_wh, power_w, ts)]
    if id_token is not None:
        payload["idToken"] = {"idToken": id_token, "type": "ISO14443"}
    if offline:
        payload["offline"] = True
    return payload


def _schedule(limit: float) -> dict[str, Any]:
    return {"id": 1, "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}], "startSchedule": now_iso()}


def profile(profile_id: int = 7, limit_w: float = 11000.0, purpose: str = "TxDefaultProfile") -> dict[str, Any]:
    return {"id": profile_id, "stackLevel": 0, "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Absolute", "chargingSchedule": [_schedule(limit_w)]}


# One schema-valid request for every message a charging station sends to the CSMS.
STATION_MESSAGES: dict[str, dict[str, Any]] = {
    "BootNotification": BOOT,
    "Heartbeat": {},
    "StatusNotification": {"timestamp": now_iso(), "connectorStatus": "Occupied", "evseId": 2, "connectorId": 1},
    "Authorize": {"idToken": {"idToken": "TOKEN-OK", "type": "ISO14443"}},
    "TransactionEvent": transaction_event("Started", "TX-ALL", 0, trigger="CablePluggedIn",
                                          charging_state="EVConnected", energy_wh=100.0, id_token="TOKEN-OK"),
    "MeterValues": {"evseId": 1, "meterValue": [meter_value(1234.0, 7000.0)]},
    "NotifyEVChargingNeeds": {"evseId": 1, "chargingNeeds": {
        "requestedEnergyTransfer": "AC_three_phase", "departureTime": now_iso(),
        "acChargingParameters": {"energyAmount": 20000, "evMinCurrent": 6, "evMaxCurrent": 32, "evMaxVoltage": 400}}},
    "NotifyEVChargingSchedule": {"timeBase": now_iso(), "evseId": 1, "chargingSchedule": _schedule(7400.0)},
    "NotifyChargingLimit": {"evseId": 1, "chargingLimit": {"chargingLimitSource": "EMS", "isGridCritical": True},
                            "chargingSchedule": [_schedule(5000.0)]},
    "ClearedChargingLimit": {"chargingLimitSource": "EMS", "evseId": 1},
    "ReportChargingProfiles": {"requestId": 3, "chargingLimitSource": "CSO", "evseId": 1,
                               "chargingProfile": [profile()]},
    "NotifyReport": {"requestId": 4, "generatedAt": now_iso(), "seqNo": 0, "reportData": [
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"},
         "variableAttribute": [{"type": "Actual", "value": "300"}]}]},
    "NotifyEvent": {"generatedAt": now_iso(), "seqNo": 0, "eventData": [
        {"eventId": 1, "timestamp": now_iso(), "trigger": "Delta", "actualValue": "Faulted",
         "eventNotificationType": "HardWiredNotification",
         "component": {"name": "Connector", "evse": {"id": 1, "connectorId": 1}},
         "variable": {"name": "AvailabilityState"}}]},
    "NotifyMonitoringReport": {"requestId": 5, "seqNo": 0, "generatedAt": now_iso()},
    "SecurityEventNotification": {"type": "TamperDetectionActivated", "timestamp": now_iso(), "techInfo": "lid"},
    "FirmwareStatusNotification": {"status": "Downloading", "requestId": 6},
    "LogStatusNotification": {"status": "Uploading", "requestId": 7},
    "PublishFirmwareStatusNotification": {"status": "Published", "location": ["http://127.0.0.1/fw.bin"],
                                          "requestId": 8},
    "NotifyCustomerInformation": {"data": "no data held", "seqNo": 0, "generatedAt": now_iso(), "requestId": 9},
    "NotifyDisplayMessages": {"requestId": 10},
    "ReservationStatusUpdate": {"reservationId": 11, "reservationUpdateStatus": "Expired"},
    "DataTransfer": {"vendorId": "com.example", "messageId": "hello", "data": {"x": 1}},
    "SignCertificate": {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----"},
    "Get15118EVCertificate": {"iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef", "action": "Install",
                              "exiRequest": "AAEC"},
    "GetCertificateStatus": {"ocspRequestData": {"hashAlgorithm": "SHA256", "issuerNameHash": "a" * 64,
                                                 "issuerKeyHash": "b" * 64, "serialNumber": "01",
                                                 "responderURL": "http://127.0.0.1/ocsp"}},
}
