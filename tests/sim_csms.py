"""Small central systems built from the `ocpp` package's own v16 / v201 / v21 ChargePoint classes.

They are the counterpart the simulated 1.6J and 2.1 stations are tested against (our daemon does
not speak those versions yet): a websockets server negotiating `ocpp1.6`, `ocpp2.0.1` and
`ocpp2.1` on one endpoint, `@on` handlers written the way the package's examples do, every
station request recorded exactly as it came over the wire, and `call()` for requests to a
station. No `csms` import.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.messages import MessageType, unpack
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as result16
from ocpp.v21 import ChargePoint as ChargePoint21
from ocpp.v21 import call_result as result21
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call_result as result201
from websockets.typing import Subprotocol


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class _Recording:
    """Records each station CALL (action, camelCase payload) before the package routes it."""

    csms: Csms

    async def route_message(self, raw_msg: str) -> None:  # type: ignore[override]
        msg = unpack(raw_msg)
        if msg.message_type_id == MessageType.Call:
            self.csms.messages.append((self.id, msg.action, msg.payload))  # type: ignore[attr-defined]
        await super().route_message(raw_msg)  # type: ignore[misc]


class Side16(_Recording, ChargePoint16):
    def __init__(self, csms: Csms, station_id: str, ws: Any) -> None:
        super().__init__(station_id, ws, response_timeout=5)
        self.csms = csms

    @on("BootNotification")
    def on_boot(self, **_: Any) -> Any:
        return result16.BootNotification(current_time=now_iso(), interval=self.csms.interval, status="Accepted")

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return result16.Heartbeat(current_time=now_iso())

    @on("StatusNotification")
    def on_status(self, **_: Any) -> Any:
        return result16.StatusNotification()

    @on("Authorize")
    def on_authorize(self, **_: Any) -> Any:
        return result16.Authorize(id_tag_info={"status": self.csms.authorize_status})

    @on("StartTransaction")
    def on_start(self, **_: Any) -> Any:
        return result16.StartTransaction(transaction_id=next(self.csms.tx_ids),
                                         id_tag_info={"status": self.csms.start_status})

    @on("StopTransaction")
    def on_stop(self, **_: Any) -> Any:
        return result16.StopTransaction(id_tag_info={"status": "Accepted"})

    @on("MeterValues")
    def on_meter_values(self, **_: Any) -> Any:
        return result16.MeterValues()

    @on("SecurityEventNotification")
    def on_security_event(self, **_: Any) -> Any:
        return result16.SecurityEventNotification()


def _side2x(base: type, results: Any) -> type:
    """The 2.0.1 and 2.1 central-system sides differ only in the package's classes."""

    class Side(_Recording, base):  # type: ignore[misc, valid-type]
        def __init__(self, csms: Csms, station_id: str, ws: Any) -> None:
            super().__init__(station_id, ws, response_timeout=5)
            self.csms = csms

        @on("BootNotification")
        def on_boot(self, **_: Any) -> Any:
            return results.BootNotification(current_time=now_iso(), interval=self.csms.interval, status="Accepted")

        @on("Heartbeat")
        def on_heartbeat(self, **_: Any) -> Any:
            return results.Heartbeat(current_time=now_iso())

        @on("StatusNotification")
        def on_status(self, **_: Any) -> Any:
            return results.StatusNotification()

        @on("Authorize")
        def on_authorize(self, **_: Any) -> Any:
            return results.Authorize(id_token_info={"status": self.csms.authorize_status})

        @on("TransactionEvent")
        def on_transaction_event(self, **_: Any) -> Any:
            return results.TransactionEvent()

        @on("MeterValues")
        def on_meter_values(self, **_: Any) -> Any:
            return results.MeterValues()

        @on("NotifyEVChargingNeeds")
        def on_needs(self, **_: Any) -> Any:
            return results.NotifyEVChargingNeeds(status="Accepted")

        @on("ReportChargingProfiles")
        def on_report(self, **_: Any) -> Any:
            return results.ReportChargingProfiles()

    return Side


Side21 = _side2x(ChargePoint21, result21)
Side201 = _side2x(ChargePoint201, result201)
SIDES = {"ocpp1.6": Side16, "ocpp2.0.1": Side201, "ocpp2.1": Side21}


class Csms:
    """One server for 1.6 and 2.1 stations (the subprotocol decides); records, calls, can refuse."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, dict]] = []
        self.stations: dict[str, Any] = {}
        self.interval = 300
        self.authorize_status = "Accepted"
        self.start_status = "Accepted"
        self.tx_ids = itertools.count(101)
        self.accepting = True
        self.url = ""

    def of(self, action: str, station_id: str | None = None) -> list[dict]:
        return [p for s, a, p in self.messages if a == action and (station_id is None or s == station_id)]

    async def _handle(self, ws: Any) -> None:
        station_id = ws.request.path.rstrip("/").split("/")[-1]
        if not self.accepting or ws.subprotocol not in SIDES:
            await ws.close(code=1013 if not self.accepting else 1002)
            return
        side = SIDES[ws.subprotocol](self, station_id, ws)
        self.stations[station_id] = side
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await side.start()

    async def call(self, station_id: str, payload: Any) -> Any:
        return await self.stations[station_id].call(payload, suppress=False)

    async def disconnect(self, station_id: str) -> None:
        await self.stations[station_id]._connection.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Csms]:
        async with websockets.serve(self._handle, "127.0.0.1", 0, subprotocols=[Subprotocol(name) for name in SIDES]) as server:
            self.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ocpp"
            yield self


@contextlib.asynccontextmanager
async def station_running(station: Any) -> AsyncIterator[Any]:
    task = asyncio.create_task(station.run())
    try:
        await asyncio.wait_for(station.accepted.wait(), 10)
        yield station
    finally:
        station.stop()
        await asyncio.wait_for(task, 10)
