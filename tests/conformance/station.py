"""The conformance rig: a charging station played with the `ocpp` package, and the operator API.

Each test of this folder plays an OCPP 2.0.1 charging station with the package's own v201
``ChargePoint`` (an independent implementation of the protocol) against a real daemon on
127.0.0.1, and drives the central system's side through the operator HTTP API, the way an
operator or a test tool (OCTT) would. Payloads are written and checked as they travel on the
wire (camelCase JSON): the package converts them to its dataclasses and back, validating both
ways against the official schemas.

Only ``tests.api_fixture`` (the daemon with its API) is imported from the project, so the tests
keep working while the daemon's internals move.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import websockets
from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import OCPPError
from ocpp.v201 import ChargePoint, call, call_result

from tests.api_fixture import Api, api_daemon

__all__ = ["Api", "OCPPError", "Rig", "Station", "iso", "rig", "ts"]

Answer = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]

# Every action the central system may send in OCPP 2.0.1, and what a well-behaved station answers.
ANSWERS: dict[str, Answer] = {
    "CancelReservation": {"status": "Accepted"},
    "CertificateSigned": {"status": "Accepted"},
    "ChangeAvailability": {"status": "Accepted"},
    "ClearCache": {"status": "Accepted"},
    "ClearChargingProfile": {"status": "Accepted"},
    "ClearDisplayMessage": {"status": "Accepted"},
    "ClearVariableMonitoring": lambda p: {"clearMonitoringResult": [{"status": "Accepted", "id": i} for i in p["id"]]},
    "CostUpdated": {},
    "CustomerInformation": {"status": "Accepted"},
    "DataTransfer": {"status": "Accepted"},
    "DeleteCertificate": {"status": "Accepted"},
    "GetBaseReport": {"status": "Accepted"},
    "GetChargingProfiles": {"status": "NoProfiles"},
    "GetCompositeSchedule": {"status": "Rejected"},
    "GetDisplayMessages": {"status": "Unknown"},
    "GetInstalledCertificateIds": {"status": "NotFound"},
    "GetLocalListVersion": {"versionNumber": 0},
    "GetLog": {"status": "Accepted", "filename": "log.txt"},
    "GetMonitoringReport": {"status": "Accepted"},
    "GetReport": {"status": "Accepted"},
    "GetTransactionStatus": {"messagesInQueue": False},
    "GetVariables": lambda p: {"getVariableResult": [
        {"attributeStatus": "Accepted", "component": i["component"], "variable": i["variable"],
         "attributeValue": "1"} for i in p["getVariableData"]]},
    "InstallCertificate": {"status": "Accepted"},
    "PublishFirmware": {"status": "Accepted"},
    "RequestStartTransaction": {"status": "Accepted"},
    "RequestStopTransaction": {"status": "Accepted"},
    "ReserveNow": {"status": "Accepted"},
    "Reset": {"status": "Accepted"},
    "SendLocalList": {"status": "Accepted"},
    "SetChargingProfile": {"status": "Accepted"},
    "SetDisplayMessage": {"status": "Accepted"},
    "SetMonitoringBase": {"status": "Accepted"},
    "SetMonitoringLevel": {"status": "Accepted"},
    "SetNetworkProfile": {"status": "Accepted"},
    "SetVariableMonitoring": lambda p: {"setMonitoringResult": [
        {"id": 100 + n, "status": "Accepted", "type": d["type"], "severity": d["severity"],
         "component": d["component"], "variable": d["variable"]} for n, d in enumerate(p["setMonitoringData"])]},
    "SetVariables": lambda p: {"setVariableResult": [
        {"attributeStatus": "Accepted", "component": i["component"], "variable": i["variable"]}
        for i in p["setVariableData"]]},
    "TriggerMessage": {"status": "Accepted"},
    "UnlockConnector": {"status": "Unlocked"},
    "UnpublishFirmware": {"status": "Unpublished"},
    "UpdateFirmware": {"status": "Accepted"},
}


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ts(minutes: float = 0.0, base: datetime | None = None) -> str:
    """An OCPP time ``minutes`` after ``base`` (default: now)."""
    return iso((base or datetime.now(timezone.utc)) + timedelta(minutes=minutes))


def to_wire(dataclass_instance: Any) -> dict[str, Any]:
    """A payload dataclass of the `ocpp` package as it travels on the wire (camelCase, no nulls)."""
    return snake_to_camel_case(remove_nones(serialize_as_dict(dataclass_instance)))


class Station(ChargePoint):
    """An OCPP 2.0.1 station: answers every CSMS call from ``answers`` and keeps what it received."""

    def __init__(self, station_id: str, connection: Any, answers: dict[str, Answer] | None = None) -> None:
        super().__init__(station_id, connection, response_timeout=10)
        self.answers: dict[str, Answer] = {**ANSWERS, **(answers or {})}
        self.received: list[tuple[str, dict[str, Any]]] = []  # every CSMS call, as on the wire
        self._unclaimed: list[tuple[str, dict[str, Any]]] = []
        self._arrived = asyncio.Condition()
        self._payload: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self.seq_no = itertools.count(0)
        for action in ANSWERS:
            self.route_map[action] = {"_on_action": self._answerer(action), "_skip_schema_validation": False}

    def _answerer(self, action: str) -> Callable[..., Any]:
        def answer(**_: Any) -> Any:
            spec = self.answers[action]
            payload = spec(self._payload) if callable(spec) else spec
            return getattr(call_result, action)(**camel_to_snake_case(payload))
        return answer

    async def _handle_call(self, msg: Any) -> Any:
        self._payload = msg.payload
        self.received.append((msg.action, msg.payload))
        try:
            return await super()._handle_call(msg)
        finally:
            async with self._arrived:
                self._unclaimed.append((msg.action, msg.payload))
                self._arrived.notify_all()

    async def expect(self, action: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next CSMS call of ``action`` not claimed yet (answered already), as on the wire."""
        async def first() -> dict[str, Any]:
            async with self._arrived:
                while True:
                    for n, (a, payload) in enumerate(self._unclaimed):
                        if a == action:
                            del self._unclaimed[n]
                            return payload
                    await self._arrived.wait()
        try:
            return await asyncio.wait_for(first(), timeout)
        except asyncio.TimeoutError:
            seen = [a for a, _ in self.received]
            raise AssertionError(f"{self.id} received no {action} within {timeout} s (received: {seen})") from None

    def calls(self, action: str) -> list[dict[str, Any]]:
        """Every CSMS call of ``action`` received so far (claimed or not)."""
        return [p for a, p in self.received if a == action]

    async def send(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a station CALL (wire-format payload); the answer as on the wire. CALLERROR raises OCPPError."""
        request = getattr(call, action)(**camel_to_snake_case(payload))
        return to_wire(await self.call(request, suppress=False))

    # Common station messages -------------------------------------------------------------------------
    async def boot(self, reason: str = "PowerUp") -> dict[str, Any]:
        return await self.send("BootNotification", {"reason": reason, "chargingStation": {
            "vendorName": "Conformance", "model": "OCTT-like", "serialNumber": self.id, "firmwareVersion": "1.0"}})

    async def status(self, evse_id: int, status: str = "Available", connector_id: int = 1) -> None:
        await self.send("StatusNotification", {"timestamp": ts(), "connectorStatus": status, "evseId": evse_id,
                                               "connectorId": connector_id})

    async def transaction(self, event_type: str, tx_id: str, *, trigger: str = "Authorized",
                          id_token: dict[str, Any] | None = None, evse_id: int = 1, energy_wh: float | None = None,
                          at: str | None = None, charging_state: str | None = None, **extra: Any) -> dict[str, Any]:
        """A TransactionEvent with the next seqNo (and an energy register reading when given)."""
        timestamp = at or ts()
        info: dict[str, Any] = {"transactionId": tx_id, **extra.pop("info", {})}
        if charging_state is not None:
            info["chargingState"] = charging_state
        payload: dict[str, Any] = {"eventType": event_type, "timestamp": timestamp, "triggerReason": trigger,
                                   "seqNo": next(self.seq_no), "transactionInfo": info,
                                   "evse": {"id": evse_id, "connectorId": 1}, **extra}
        if id_token is not None:
            payload["idToken"] = id_token
        if energy_wh is not None:
            payload["meterValue"] = [{"timestamp": timestamp, "sampledValue": [
                {"value": energy_wh, "measurand": "Energy.Active.Import.Register",
                 "context": {"Started": "Transaction.Begin", "Ended": "Transaction.End"}.get(event_type,
                                                                                           "Sample.Periodic")}]}]
        return await self.send("TransactionEvent", payload)


@contextlib.asynccontextmanager
async def connected(url: str, station_id: str, *, boot: bool = True, answers: dict[str, Answer] | None = None,
                    **connect: Any) -> AsyncIterator[Station]:
    """A station connected to ``url`` (and booted, unless ``boot`` is false); closed on exit."""
    ws = await websockets.connect(f"{url}/{station_id}", subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                                  open_timeout=5, **connect)
    station = Station(station_id, ws, answers)
    reader = asyncio.create_task(station.start())
    try:
        if boot:
            answer = await station.boot()
            assert answer["status"] == "Accepted", f"{station_id} boot answered {answer}"
        yield station
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
        await ws.close()


class Rig:
    """A running daemon with its operator API, and stations to connect to it."""

    def __init__(self, api: Api) -> None:
        self.api = api

    @property
    def ws_url(self) -> str:
        return self.api.running.ws_url

    def station(self, station_id: str, **kwargs: Any) -> contextlib.AbstractAsyncContextManager[Station]:
        return connected(self.ws_url, station_id, **kwargs)

    async def get(self, path: str, status: int = 200) -> Any:
        code, body = await self.api.get(path)
        assert code == status, f"GET {path}: {code} {body}"
        return body

    async def post(self, path: str, body: Any = None, status: int | tuple[int, ...] = 200) -> Any:
        code, answer = await self.api.post(path, body)
        assert code in ((status,) if isinstance(status, int) else status), f"POST {path} {body}: {code} {answer}"
        return answer

    async def delete(self, path: str, status: int = 204) -> Any:
        code, answer = await self.api.delete(path)
        assert code == status, f"DELETE {path}: {code} {answer}"
        return answer

    async def command(self, station_id: str, name: str, body: dict[str, Any] | None = None,
                      status: int = 200) -> Any:
        """POST a typed command; the station's answer (``response``) on 200, else the error body."""
        answer = await self.post(f"/api/stations/{station_id}/commands/{name}", body or {}, status)
        return answer["response"] if status == 200 else answer

    async def refused(self, station_id: str, name: str, body: dict[str, Any], field: str | None = None) -> Any:
        """A typed command the API must refuse with 422 (naming ``field``) without sending anything."""
        answer = await self.command(station_id, name, body, status=422)
        if field is not None:
            assert answer.get("field") == field, answer
        return answer

    async def id_token(self, token: str, type_: str = "ISO14443", status: str = "Accepted",
                       group_id: str | None = None, expiry: str | None = None) -> None:
        body: dict[str, Any] = {"id_token": token, "type": type_, "status": status}
        if group_id is not None:
            body["group_id"] = group_id
        if expiry is not None:
            body["expiry"] = expiry
        await self.post("/api/id-tokens", body, status=(200, 201))


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, **config: Any) -> AsyncIterator[Rig]:
    """A daemon (tests' defaults plus ``config`` per section) with its API; unknown id tokens are refused."""
    config.setdefault("registration", {"accept_unknown_id_tokens": False})
    async with api_daemon(tmp_path, **config) as api:
        yield Rig(api)
