"""Baseline central system (see package docstring). Deliberately plain: no persistence, no planning.

Its grid reaction is the naive one: on a limit message it splits the limit equally over the
stations with an active transaction and sends every one of them a SetChargingProfile at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v201 import ChargePoint as OcppChargePoint
from ocpp.v201 import call, call_result

log = logging.getLogger("baseline")

VOLTAGE_V = 230.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class State:
    """Everything the baseline knows, in memory."""

    stations: dict[str, ChargePoint] = field(default_factory=dict)
    boots: dict[str, dict[str, Any]] = field(default_factory=dict)
    connectors: dict[tuple[str, int, int], str] = field(default_factory=dict)
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)  # transaction id -> last info
    active: dict[str, tuple[int, str]] = field(default_factory=dict)  # station -> (evse, transaction id)
    events: int = 0
    meter_values: int = 0


class ChargePoint(OcppChargePoint):
    def __init__(self, station_id: str, connection: Any, state: State) -> None:
        super().__init__(station_id, connection)
        self.state = state

    @on("BootNotification")
    async def on_boot_notification(self, charging_station: dict[str, Any], reason: str, **kwargs: Any):
        self.state.boots[self.id] = {"station": charging_station, "reason": reason}
        return call_result.BootNotification(current_time=_now(), interval=300, status="Accepted")

    @on("Heartbeat")
    async def on_heartbeat(self, **kwargs: Any):
        return call_result.Heartbeat(current_time=_now())

    @on("StatusNotification")
    async def on_status_notification(self, timestamp: str, connector_status: str, evse_id: int, connector_id: int,
                                     **kwargs: Any):
        self.state.connectors[(self.id, evse_id, connector_id)] = connector_status
        return call_result.StatusNotification()

    @on("Authorize")
    async def on_authorize(self, id_token: dict[str, Any], **kwargs: Any):
        return call_result.Authorize(id_token_info={"status": "Accepted"})

    @on("TransactionEvent")
    async def on_transaction_event(self, event_type: str, timestamp: str, trigger_reason: str, seq_no: int,
                                   transaction_info: dict[str, Any], **kwargs: Any):
        self.state.events += 1
        tx_id = transaction_info["transaction_id"]
        self.state.transactions[tx_id] = {"station": self.id, "seq_no": seq_no, "event": event_type,
                                          **transaction_info}
        if event_type == "Ended":
            self.state.active.pop(self.id, None)
        else:
            evse = kwargs.get("evse") or {}
            previous = self.state.active.get(self.id)
            self.state.active[self.id] = (evse.get("id") or (previous[0] if previous else 1), tx_id)
        if "id_token" in kwargs:
            return call_result.TransactionEvent(id_token_info={"status": "Accepted"})
        return call_result.TransactionEvent()

    @on("MeterValues")
    async def on_meter_values(self, evse_id: int, meter_value: list[dict[str, Any]], **kwargs: Any):
        self.state.meter_values += 1
        return call_result.MeterValues()


async def push_equal_share(state: State, limit_kw: float) -> int:
    """Split `limit_kw` equally over the charging stations and send each its TxProfile; returns Accepted count."""
    targets = [(sid, evse, tx) for sid, (evse, tx) in state.active.items() if sid in state.stations]
    if not targets:
        return 0
    amps = int(limit_kw * 1000.0 / len(targets) / (3 * VOLTAGE_V) * 10) / 10.0
    start = _now()

    async def one(sid: str, evse: int, tx: str) -> bool:
        profile = {"id": 100, "stack_level": 1, "charging_profile_purpose": "TxProfile",
                   "charging_profile_kind": "Absolute", "transaction_id": tx,
                   "charging_schedule": [{"id": 1, "start_schedule": start, "charging_rate_unit": "A",
                                          "charging_schedule_period": [{"start_period": 0, "limit": amps}]}]}
        try:
            result = await state.stations[sid].call(call.SetChargingProfile(evse_id=evse, charging_profile=profile))
        except Exception as exc:  # noqa: BLE001 - one station failing must not stop the fan-out
            log.warning("%s: SetChargingProfile failed: %s", sid, exc)
            return False
        return getattr(result, "status", None) == "Accepted"

    results = await asyncio.gather(*(one(*t) for t in targets))
    return sum(results)


async def listen_for_limits(state: State, prefix: str, host: str = "127.0.0.1", port: int = 1883) -> None:
    """Subscribe to `<prefix>/grid/+/limit` and fan each limit out (the newest signal wins)."""
    import aiomqtt

    async with aiomqtt.Client(host, port) as client:
        await client.subscribe(f"{prefix}/grid/+/limit", qos=1)
        log.warning("baseline: listening for limits on %s/grid/+/limit", prefix)
        async for message in client.messages:
            try:
                data = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                limit_kw = float(data["limit_kw"])
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("baseline: ignored limit message: %s", exc)
                continue
            asyncio.create_task(push_equal_share(state, limit_kw))


async def serve(port: int, mqtt_prefix: str | None = None) -> None:
    state = State()

    async def on_connect(websocket: Any) -> None:
        station_id = websocket.request.path.rstrip("/").split("/")[-1]
        cp = ChargePoint(station_id, websocket, state)
        state.stations[station_id] = cp
        try:
            await cp.start()
        except websockets.ConnectionClosed:
            pass
        finally:
            if state.stations.get(station_id) is cp:
                del state.stations[station_id]

    async with websockets.serve(on_connect, "127.0.0.1", port, subprotocols=["ocpp2.0.1"]):  # type: ignore[list-item]
        if mqtt_prefix:
            await listen_for_limits(state, mqtt_prefix)
        else:
            await asyncio.get_running_loop().create_future()
