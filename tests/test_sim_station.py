"""Simulated stations over real websockets against a small third-party-style CSMS.

`MiniCsms` is written with the `ocpp` package only (no `csms` import): if the stations work
against it and against our daemon, they speak OCPP 2.0.1, not "our dialect".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import websockets
from ocpp.charge_point import snake_to_camel_case
from ocpp.exceptions import InternalError
from ocpp.messages import MessageType, unpack
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action

from simulators.clock import Clock
from simulators.ev import EV
from simulators.models import EVModel, StationModel
from simulators.station import SimStation
from tests.waiting import until

NOW = "2025-01-01T00:00:00Z"


class _CsmsSide(ChargePoint):
    def __init__(self, csms: "MiniCsms", station_id: str, ws: Any) -> None:
        super().__init__(station_id, ws, response_timeout=5)
        self.csms = csms

    def _record(self, action: str, kwargs: dict) -> None:
        self.csms.record(self.id, action, snake_to_camel_case(kwargs))

    async def route_message(self, raw_msg: str) -> None:
        msg = unpack(raw_msg)
        if msg.message_type_id == MessageType.Call and msg.action in self.csms.misbehave:
            mode = self.csms.misbehave[msg.action]
            self.csms.record(self.id, f"{msg.action}:{mode}", msg.payload)
            if mode == "garbage":
                await self._send("this is not OCPP")
                return
            if mode == "silent":
                return
        await super().route_message(raw_msg)

    @on(Action.boot_notification)
    def on_boot(self, **kwargs: Any) -> Any:
        self._record("BootNotification", kwargs)
        status = self.csms.boot_statuses.pop(0) if self.csms.boot_statuses else "Accepted"
        return call_result.BootNotification(current_time=NOW, interval=self.csms.interval, status=status)

    @on(Action.heartbeat)
    def on_heartbeat(self, **kwargs: Any) -> Any:
        self._record("Heartbeat", kwargs)
        return call_result.Heartbeat(current_time=NOW)

    @on(Action.status_notification)
    def on_status(self, **kwargs: Any) -> Any:
        self._record("StatusNotification", kwargs)
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, **kwargs: Any) -> Any:
        self._record("Authorize", kwargs)
        return call_result.Authorize(id_token_info={"status": self.csms.authorize_status})

    @on(Action.transaction_event)
    def on_transaction_event(self, **kwargs: Any) -> Any:
        self._record("TransactionEvent", kwargs)
        if self.csms.misbehave.get("TransactionEvent") == "callerror":
            raise InternalError(description="CSMS deliberately failing")
        return call_result.TransactionEvent()

    @on(Action.meter_values)
    def on_meter_values(self, **kwargs: Any) -> Any:
        self._record("MeterValues", kwargs)
        return call_result.MeterValues()

    @on(Action.notify_ev_charging_needs)
    def on_needs(self, **kwargs: Any) -> Any:
        self._record("NotifyEVChargingNeeds", kwargs)
        return call_result.NotifyEVChargingNeeds(status="Accepted")

    @on(Action.report_charging_profiles)
    def on_report(self, **kwargs: Any) -> Any:
        self._record("ReportChargingProfiles", kwargs)
        return call_result.ReportChargingProfiles()


class MiniCsms:
    """Records every station message; `call()` sends CSMS requests; can misbehave on purpose."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, dict]] = []
        self.stations: dict[str, _CsmsSide] = {}
        self.boot_statuses: list[str] = []
        self.interval = 300
        self.authorize_status = "Accepted"
        self.misbehave: dict[str, str] = {}
        self.accepting = True
        self.server: Any = None
        self.url = ""

    def record(self, station_id: str, action: str, payload: dict) -> None:
        self.messages.append((station_id, action, payload))

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Poll (10 ms) until `predicate()` is truthy; it may look at the CSMS or at a station."""
        deadline = time.monotonic() + timeout
        while not (result := predicate()):
            if time.monotonic() > deadline:
                raise asyncio.TimeoutError(f"condition not met within {timeout}s")
            await asyncio.sleep(0.01)
        return result

    def of(self, action: str, station_id: str | None = None) -> list[dict]:
        return [p for s, a, p in self.messages if a == action and (station_id is None or s == station_id)]

    async def _handle(self, ws: Any) -> None:
        station_id = ws.request.path.rstrip("/").split("/")[-1]
        if not self.accepting:
            await ws.close(code=1013)
            return
        side = _CsmsSide(self, station_id, ws)
        self.stations[station_id] = side
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await side.start()

    async def call(self, station_id: str, payload: Any) -> Any:
        return await self.stations[station_id].call(payload, suppress=False)

    async def disconnect(self, station_id: str) -> None:
        await self.stations[station_id]._connection.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["MiniCsms"]:
        async with websockets.serve(self._handle, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"]) as server:
            self.server = server
            port = server.sockets[0].getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}/ocpp"
            yield self


@contextlib.asynccontextmanager
async def station_running(station: SimStation) -> AsyncIterator[SimStation]:
    task = asyncio.create_task(station.run())
    try:
        yield station
    finally:
        station.stop()
        await asyncio.wait_for(task, 5)


def fast_station(csms: MiniCsms, station_id: str = "CS1", **model_kw: Any) -> SimStation:
    model = StationModel(**{"meter_interval_s": 0.5, "tick_s": 0.1, "message_attempt_interval_s": 0.1, **model_kw})
    return SimStation(station_id, csms.url, model, clock=Clock(), call_timeout_s=1.0, reconnect_base_s=0.05,
                      reconnect_max_s=0.2, boot_retry_s=0.1)


def car(**kw: Any) -> EV:
    return EV(model=EVModel(**{"max_current_a": 32.0, **kw}), soc=0.2)


def power_of(te: dict) -> float | None:
    for mv in te.get("meterValue", []):
        for sv in mv["sampledValue"]:
            if sv["measurand"] == "Power.Active.Import":
                return sv["value"]
    return None


def tx_profile(tx_id: str, limit: float, pid: int = 1) -> dict:
    return {"id": pid, "stackLevel": 1, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
            "transactionId": tx_id, "chargingSchedule": [
                {"id": 1, "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}]}


async def test_boot_pending_then_accepted_and_heartbeat_interval_honoured() -> None:
    csms = MiniCsms()
    csms.boot_statuses = ["Pending", "Rejected"]
    csms.interval = 1
    async with csms.running(), station_running(fast_station(csms)) as station:
        await asyncio.wait_for(station.accepted.wait(), 10)
        assert [b["reason"] for b in csms.of("BootNotification")][:1] == ["PowerUp"]
        assert len(csms.of("BootNotification")) == 3
        await csms.wait_for(lambda: csms.of("StatusNotification"))
        first_status = next(i for i, m in enumerate(csms.messages) if m[1] == "StatusNotification")
        assert all(m[1] == "BootNotification" for m in csms.messages[:first_status])
        await csms.wait_for(lambda: len(csms.of("Heartbeat")) >= 2, timeout=4)
        assert station.heartbeat_interval_s == 1


async def test_session_lower_limit_pause_and_resume_over_the_wire() -> None:
    csms = MiniCsms()
    async with csms.running(), station_running(fast_station(csms)) as station:
        await asyncio.wait_for(station.accepted.wait(), 5)
        station.plug_in(1, car())
        await csms.wait_for(lambda: csms.of("Authorize"))
        tx_id = await csms.wait_for(lambda: station.core.transaction_id(1))
        await csms.wait_for(lambda: any(t["transactionInfo"]["chargingState"] == "Charging"
                                        for t in csms.of("TransactionEvent")))
        answer = await csms.call("CS1", call.SetChargingProfile(evse_id=1, charging_profile=tx_profile(tx_id, 10)))
        assert answer.status == "Accepted"
        sent_at = len(csms.of("TransactionEvent"))
        low = await csms.wait_for(lambda: [p for p in csms.of("TransactionEvent")[sent_at:]
                                           if power_of(p) == pytest.approx(6900)], timeout=1.0)
        assert low
        await csms.call("CS1", call.SetChargingProfile(evse_id=1, charging_profile=tx_profile(tx_id, 0)))
        await csms.wait_for(lambda: csms.of("TransactionEvent")[-1]["transactionInfo"]["chargingState"]
                            == "SuspendedEVSE")
        await csms.call("CS1", call.SetChargingProfile(evse_id=1, charging_profile=tx_profile(tx_id, 16)))
        await csms.wait_for(lambda: csms.of("TransactionEvent")[-1]["transactionInfo"]["chargingState"] == "Charging")
        station.unplug(1)
        ended = await csms.wait_for(lambda: [t for t in csms.of("TransactionEvent") if t["eventType"] == "Ended"])
        seqs = [t["seqNo"] for t in csms.of("TransactionEvent")]
        assert seqs == list(range(len(seqs)))
        assert ended[0]["transactionInfo"]["stoppedReason"] == "EVDisconnected"


async def test_offline_transaction_events_are_queued_and_replayed_flagged() -> None:
    csms = MiniCsms()
    async with csms.running(), station_running(fast_station(csms)) as station:
        await asyncio.wait_for(station.accepted.wait(), 5)
        csms.accepting = False
        await csms.disconnect("CS1")
        await csms.wait_for(lambda: not station.accepted.is_set() and station.reconnects >= 1)
        station.plug_in(1, car())
        await until(lambda: sum(o.action == "TransactionEvent" for o in station.core.outbox) >= 2, 5,
                    "Started and at least one metered update queued while offline")
        queued = [o for o in station.core.outbox if o.action == "TransactionEvent"]
        assert queued and all(o.payload["offline"] for o in queued)
        assert not csms.of("TransactionEvent")
        csms.accepting = True
        replay = await csms.wait_for(lambda: len(csms.of("TransactionEvent")) >= len(queued), timeout=5)
        assert replay
        events = csms.of("TransactionEvent")
        assert [e["seqNo"] for e in events[:len(queued)]] == list(range(len(queued)))
        assert all(e.get("offline") is True for e in events[:len(queued)])
        assert events[0]["eventType"] == "Started"


async def test_callerror_garbage_and_silence_never_crash_the_station() -> None:
    csms = MiniCsms()
    async with csms.running(), station_running(fast_station(csms, authorize=False)) as station:
        await asyncio.wait_for(station.accepted.wait(), 5)
        csms.misbehave["TransactionEvent"] = "callerror"
        station.plug_in(1, car())
        await csms.wait_for(lambda: station.stats.errors.get("gave_up:TransactionEvent", 0) >= 1, timeout=5)
        attempts = [p for p in csms.of("TransactionEvent") if p["eventType"] == "Started"]
        assert len(attempts) == 3  # MessageAttemptsTransactionEvent
        csms.misbehave["TransactionEvent"] = "garbage"
        await csms.wait_for(lambda: station.stats.errors.get("timeout:TransactionEvent", 0) >= 1, timeout=5)
        csms.misbehave["TransactionEvent"] = "silent"
        await csms.wait_for(lambda: station.stats.errors.get("timeout:TransactionEvent", 0) >= 2, timeout=5)
        csms.misbehave.clear()
        await csms.wait_for(lambda: len(csms.of("TransactionEvent")) >= 2, timeout=5)
        assert station.core.charging_state(1) == "Charging"
        assert station.stats.error_count if hasattr(station.stats, "error_count") else sum(
            station.stats.errors.values()) >= 3


async def test_get_charging_profiles_reports_and_unknown_action_is_not_implemented() -> None:
    csms = MiniCsms()
    async with csms.running(), station_running(fast_station(csms)) as station:
        await asyncio.wait_for(station.accepted.wait(), 5)
        default = {"id": 7, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
                   "chargingProfileKind": "Relative", "chargingSchedule": [
                       {"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [{"startPeriod": 0,
                                                                                      "limit": 7000.0}]}]}
        assert (await csms.call("CS1", call.SetChargingProfile(evse_id=0, charging_profile=default))).status == \
            "Accepted"
        answer = await csms.call("CS1", call.GetChargingProfiles(request_id=42, charging_profile={}))
        assert answer.status == "Accepted"
        report = await csms.wait_for(lambda: csms.of("ReportChargingProfiles"))
        assert report[0]["requestId"] == 42 and report[0]["chargingProfile"][0]["id"] == 7
        composite = await csms.call("CS1", call.GetCompositeSchedule(duration=60, evse_id=1, charging_rate_unit="W"))
        assert composite.schedule["charging_schedule_period"][0]["limit"] == 7000.0
        with pytest.raises(Exception) as err:
            await csms.call("CS1", call.UnlockConnector(evse_id=1, connector_id=1))
        assert "NotImplemented" in type(err.value).__name__


async def test_remote_start_stop_and_reset_reboots() -> None:
    csms = MiniCsms()
    async with csms.running(), station_running(fast_station(csms)) as station:
        await asyncio.wait_for(station.accepted.wait(), 5)
        started = await csms.call("CS1", call.RequestStartTransaction(
            id_token={"idToken": "ABC", "type": "ISO14443"}, remote_start_id=5, evse_id=1))
        assert started.status == "Accepted"
        first = await csms.wait_for(lambda: csms.of("TransactionEvent"))
        assert first[0]["triggerReason"] == "RemoteStart" and first[0]["transactionInfo"]["remoteStartId"] == 5
        stopped = await csms.call("CS1", call.RequestStopTransaction(transaction_id=started.transaction_id))
        assert stopped.status == "Accepted"
        await csms.wait_for(lambda: csms.of("TransactionEvent")[-1]["eventType"] == "Ended")
        assert (await csms.call("CS1", call.Reset(type="Immediate"))).status == "Accepted"
        await csms.wait_for(lambda: [b for b in csms.of("BootNotification") if b["reason"] == "RemoteReset"])


async def test_iso15118_ev_sends_charging_needs_with_v2x_limits() -> None:
    csms = MiniCsms()
    async with csms.running(), station_running(fast_station(csms, v2g=True)) as station:
        await asyncio.wait_for(station.accepted.wait(), 5)
        model = EVModel(iso15118=True, bidirectional=True, max_discharge_w=7000, battery_kwh=50)
        station.plug_in(1, EV(model=model, soc=0.5, target_soc=0.9, min_soc=0.3, energy_need_kwh=20))
        needs = await csms.wait_for(lambda: csms.of("NotifyEVChargingNeeds"))
        params = needs[0]["chargingNeeds"]
        assert params["acChargingParameters"]["energyAmount"] == 20000
        assert params["customData"]["evMaxDischargePower"] == 7000
        assert params["customData"]["evMinV2XEnergyRequest"] == -10000


async def test_reconnect_uses_jittered_backoff() -> None:
    csms = MiniCsms()
    csms.accepting = False
    async with csms.running():
        station = fast_station(csms)
        started = time.monotonic()
        async with station_running(station):
            await asyncio.sleep(1.0)
        elapsed = time.monotonic() - started
        assert 3 <= station.reconnects <= elapsed / 0.025  # backs off: not a hot loop, but keeps trying
        assert station.stats.connects >= 3
