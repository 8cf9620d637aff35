"""A charging station built from the `ocpp` package's own OCPP 2.1 ChargePoint: a third party's
station, not our simulator.

One EVSE, one car. The station answers what the central system asks (device model with the
smart-charging and V2X variables, charging profiles, NotifyAllowedEnergyTransfer) and its car
follows the TxProfile in force as OCPP 2.1 describes it: ``ChargingOnly`` draws up to ``limit``;
``CentralSetpoint`` draws (or, negative, gives) the ``setpoint`` bounded by ``dischargeLimit`` and
``limit``. A station without V2X refuses a negative setpoint; a car without V2X takes 0 instead.
Meter values carry both registers and both power directions, as a bidirectional meter does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v21 import ChargePoint, call, call_result

from csms.tasks import cancel_and_wait

VOLTAGE_V = 230.0
OFFERED = ["ocpp2.1", "ocpp2.0.1", "ocpp1.6"]


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Car:
    max_current_a: float = 16.0
    phases: int = 3
    v2x: bool = False
    max_discharge_w: float = 7000.0
    battery_wh: float = 60000.0
    soc: float = 0.6


@dataclass
class Station21:
    """Connect, boot, then drive a transaction by hand (``start``, ``meter``, ``stop``)."""

    station_id: str
    v2x: bool = False  # the station takes CentralSetpoint and AC_BPT
    bpt_only: bool = False  # the station offers AC_BPT but no CentralSetpoint (discharge it controls itself)
    offered: list[str] = field(default_factory=lambda: list(OFFERED))
    car: Car = field(default_factory=Car)
    transaction_id: str | None = None
    seq: int = 0
    import_wh: float = 0.0
    export_wh: float = 0.0
    profiles: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> profile (snake_case)
    pushes: list[dict[str, Any]] = field(default_factory=list)
    allowed_transfers: list[list[str]] = field(default_factory=list)
    cp: Any = None
    ws: Any = None
    subprotocol: str | None = None
    _reader: asyncio.Task[None] | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    # Connection -------------------------------------------------------------------------------------
    async def connect(self, url: str) -> None:
        self.ws = await asyncio.wait_for(websockets.connect(f"{url}/{self.station_id}",
                                                            subprotocols=self.offered), 10)  # type: ignore[arg-type]
        self.subprotocol = self.ws.subprotocol
        self.cp = _Cp(self.station_id, self.ws, response_timeout=10)
        self.cp.station = self
        self._reader = asyncio.create_task(self._read(), name=f"{self.station_id} reader")

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.cp.start()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await cancel_and_wait([self._reader])

    async def boot(self) -> Any:
        result = await self.cp.call(call.BootNotification(
            charging_station={"model": "Lib21" + ("-V2X" if self.v2x else ""), "vendor_name": "ThirdParty"},
            reason="PowerUp"))
        await self.cp.call(call.StatusNotification(timestamp=iso(datetime.now(UTC)), connector_status="Available",
                                                   evse_id=1, connector_id=1))
        return result

    # Transaction ------------------------------------------------------------------------------------
    async def authorize(self, token: str) -> Any:
        return await self.cp.call(call.Authorize(id_token={"id_token": token, "type": "ISO14443"}))

    @property
    def bidirectional(self) -> bool:
        return self.v2x or self.bpt_only

    def charging_needs(self) -> dict[str, Any]:
        car, w_per_a = self.car, self.car.phases * VOLTAGE_V
        needs: dict[str, Any] = {
            "requestedEnergyTransfer": "AC_BPT" if car.v2x and self.bidirectional else "AC_three_phase",
            "availableEnergyTransfer": ["AC_three_phase"] + (["AC_BPT"] if car.v2x and self.bidirectional else []),
            "acChargingParameters": {"energyAmount": 20000, "evMinCurrent": 6, "evMaxCurrent": car.max_current_a,
                                     "evMaxVoltage": 400},
            "departureTime": iso(datetime.now(UTC) + timedelta(hours=8)),
            "controlMode": "ScheduledControl", "mobilityNeedsMode": "EVCC",
        }
        if car.v2x:
            needs["v2xChargingParameters"] = {
                "minChargePower": 6 * w_per_a, "maxChargePower": car.max_current_a * w_per_a,
                "minDischargePower": 1000.0, "maxDischargePower": car.max_discharge_w,
                "evTargetEnergyRequest": 0.3 * car.battery_wh, "evMinEnergyRequest": -0.4 * car.battery_wh,
                "evMaxEnergyRequest": 0.4 * car.battery_wh, "evMinV2XEnergyRequest": -0.3 * car.battery_wh,
                "evMaxV2XEnergyRequest": 0.3 * car.battery_wh, "targetSoC": 90}
        return needs

    async def start(self, token: str = "TOKEN-21") -> Any:
        """Plug in (the car states its needs over ISO 15118), then start the transaction."""
        self.transaction_id = f"{self.station_id}-tx-{next(self._ids)}"
        self.seq = 0
        needs = await self.cp.call(call.NotifyEVChargingNeeds(evse_id=1, charging_needs=self.charging_needs(),
                                                               timestamp=iso(datetime.now(UTC))))
        started = await self._event("Started", "CablePluggedIn", {"id": 1, "connector_id": 1},
                                    {"id_token": token, "type": "ISO14443"}, "Transaction.Begin")
        return needs, started

    async def meter(self, seconds: float = 1.0) -> Any:
        """Advance the registers by ``seconds`` of the power in force and report them."""
        power = self.power_w()
        if power >= 0:
            self.import_wh += power * seconds / 3600.0
        else:
            self.export_wh += -power * seconds / 3600.0
        return await self._event("Updated", "MeterValuePeriodic", None, None, "Sample.Periodic")

    async def stop(self) -> Any:
        result = await self._event("Ended", "EVCommunicationLost", None, None, "Transaction.End",
                                   stopped_reason="EVDisconnected")
        self.transaction_id = None
        return result

    async def _event(self, event_type: str, trigger: str, evse: dict[str, Any] | None,
                     id_token: dict[str, Any] | None, context: str, stopped_reason: str | None = None) -> Any:
        power = self.power_w()
        info: dict[str, Any] = {"transaction_id": self.transaction_id,
                                "charging_state": "Charging" if power else "SuspendedEVSE",
                                "operation_mode": self.mode()}
        if stopped_reason:
            info["stopped_reason"] = stopped_reason
        meter = {"timestamp": iso(datetime.now(UTC)), "sampled_value": [
            {"measurand": "Energy.Active.Import.Register", "context": context, "value": round(self.import_wh, 2)},
            {"measurand": "Energy.Active.Export.Register", "context": context, "value": round(self.export_wh, 2)},
            {"measurand": "Power.Active.Import", "context": context, "value": round(max(0.0, power), 1)},
            {"measurand": "Power.Active.Export", "context": context, "value": round(max(0.0, -power), 1)}]}
        kwargs: dict[str, Any] = {"event_type": event_type, "timestamp": iso(datetime.now(UTC)),
                                  "trigger_reason": trigger, "seq_no": self.seq, "transaction_info": info,
                                  "meter_value": [meter]}
        if evse is not None:
            kwargs["evse"] = evse
        if id_token is not None:
            kwargs["id_token"] = id_token
        self.seq += 1
        return await self.cp.call(call.TransactionEvent(**kwargs))

    # Following the profile in force -----------------------------------------------------------------
    def period_in_force(self) -> tuple[dict[str, Any], str] | None:
        """The TxProfile period in force now for the running transaction, and its schedule's unit."""
        now = datetime.now(UTC)
        best: tuple[int, dict[str, Any], str] | None = None
        for profile in self.profiles.values():
            if profile["charging_profile_purpose"] != "TxProfile" or profile.get("transaction_id") != self.transaction_id:
                continue
            schedule = profile["charging_schedule"][0]
            start = datetime.fromisoformat(schedule["start_schedule"]) if "start_schedule" in schedule else now
            elapsed = (now - start).total_seconds()
            current = None
            for period in schedule["charging_schedule_period"]:
                if period["start_period"] <= elapsed:
                    current = period
            if current is not None and (best is None or profile["stack_level"] > best[0]):
                best = (profile["stack_level"], current, schedule["charging_rate_unit"])
        return None if best is None else (best[1], best[2])

    def mode(self) -> str:
        found = self.period_in_force()
        return "ChargingOnly" if found is None else found[0].get("operation_mode", "ChargingOnly")

    def power_w(self) -> float:
        """What the car draws now (negative: gives back)."""
        if self.transaction_id is None:
            return 0.0
        car = self.car
        top = car.max_current_a * car.phases * VOLTAGE_V
        found = self.period_in_force()
        if found is None:
            return top
        period, unit = found
        scale = 1.0 if unit == "W" else period.get("number_phases", car.phases) * VOLTAGE_V

        def watts(key: str) -> float | None:
            return None if key not in period else float(period[key]) * scale

        mode = period.get("operation_mode", "ChargingOnly")
        limit = watts("limit")
        if mode == "CentralSetpoint":
            value = watts("setpoint") or 0.0
            floor = max(watts("discharge_limit") or -car.max_discharge_w, -car.max_discharge_w)
            value = min(value, limit if limit is not None else top, top)
            value = max(value, floor)
            return value if (value >= 0 or car.v2x) else 0.0
        if mode == "Idle":
            return 0.0
        return max(0.0, min(top, limit if limit is not None else top))


class _Cp(ChargePoint):  # type: ignore[misc]
    station: Station21

    @on("GetVariables")
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        v2x = self.station.v2x
        known = {("SmartChargingCtrlr", "RateUnit"): "A,W", ("SmartChargingCtrlr", "ProfileStackLevel"): "8",
                 ("SmartChargingCtrlr", "PeriodsPerSchedule"): "24",
                 ("V2XChargingCtrlr", "SupportedOperationModes"):
                     "ChargingOnly,CentralSetpoint,Idle" if v2x else "ChargingOnly,Idle",
                 ("V2XChargingCtrlr", "SupportedEnergyTransferModes"):
                     "AC_single_phase,AC_three_phase" + (",AC_BPT" if self.station.bidirectional else "")}
        results = []
        for item in get_variable_data:
            key = (item["component"]["name"], item["variable"]["name"])
            value = known.get(key)
            results.append({"attribute_status": "Accepted" if value is not None else "UnknownVariable",
                            "component": item["component"], "variable": item["variable"],
                            **({"attribute_value": value} if value is not None else {})})
        return call_result.GetVariables(get_variable_result=results)

    @on("SetChargingProfile")
    def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        self.station.pushes.append(charging_profile)
        periods = charging_profile["charging_schedule"][0]["charging_schedule_period"]
        if not self.station.v2x and any(p.get("setpoint", 0) < 0 or p.get("limit", 0) < 0 for p in periods):
            return call_result.SetChargingProfile(status="Rejected",
                                                  status_info={"reason_code": "NoBidirectional"})
        self.station.profiles[charging_profile["id"]] = charging_profile
        return call_result.SetChargingProfile(status="Accepted")

    @on("GetChargingProfiles")
    def on_get_charging_profiles(self, request_id: int, **_: Any) -> Any:
        return call_result.GetChargingProfiles(status="NoProfiles")

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, **_: Any) -> Any:
        return call_result.ClearChargingProfile(status="Accepted")

    @on("GetCompositeSchedule")
    def on_get_composite_schedule(self, **_: Any) -> Any:
        return call_result.GetCompositeSchedule(status="Rejected")

    @on("NotifyAllowedEnergyTransfer")
    def on_notify_allowed_energy_transfer(self, transaction_id: str, allowed_energy_transfer: list[str],
                                          **_: Any) -> Any:
        self.station.allowed_transfers.append(allowed_energy_transfer)
        return call_result.NotifyAllowedEnergyTransfer(status="Accepted")
