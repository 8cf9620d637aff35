"""OCPP 2.1 on the wire: the 2.0.1 behaviour plus bidirectional power transfer (V2X, chapter Q).

- `v2g` station models are bidirectional (AC_BPT). A period with `operationMode: CentralSetpoint`
  and a negative `setpoint` (W or A) discharges, bounded by `dischargeLimit` (<= 0) and `limit`
  (>= 0); `ChargingOnly` charges up to `limit`; `Idle` stops. Other modes are refused. A negative
  setpoint on a station that cannot discharge is refused; a car that cannot discharge takes 0.
- ISO 15118 and bidirectional cars send NotifyEVChargingNeeds with `v2xChargingParameters`,
  `controlMode` and `mobilityNeedsMode` from the EV model.
- NotifyAllowedEnergyTransfer from the central system can take discharging away from (or give it
  back to) a transaction.
- TransactionEvents carry the operation mode in force; a change is an `OperationModeChanged` event.
  Meter values of bidirectional stations include Power.Active.Export and
  Energy.Active.Export.Register.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from profiles.composite import CENTRAL_SETPOINT, CHARGING_ONLY, IDLE
from simulators.charging_profiles import ProfileRules
from simulators.device_model import Variable
from simulators.meter import iso
from simulators.versions.base import Handler
from simulators.versions.v201 import Dialect201

if TYPE_CHECKING:
    from simulators.station_core import Evse, StationCore

OPERATION_MODES = frozenset({CHARGING_ONLY, CENTRAL_SETPOINT, IDLE})
BIDIRECTIONAL = "AC_BPT"


class Dialect21(Dialect201):
    version = "2.1"

    def __init__(self, core: StationCore) -> None:
        super().__init__(core)
        modes = ",".join(sorted(OPERATION_MODES))
        transfer = ",".join(self._energy_transfer_modes(3 if self.model.phases == 3 else 1, self.model.v2g))
        device = core.device
        device.add("V2XChargingCtrlr", "SupportedOperationModes", Variable(modes))
        device.add("V2XChargingCtrlr", "SupportedEnergyTransferModes", Variable(transfer))
        device.add("V2XChargingCtrlr", "SupportsEvseSleep", Variable("false", kind="bool"))

    def _handlers(self) -> dict[str, Handler]:
        return {**super()._handlers(), "NotifyAllowedEnergyTransfer": self.notify_allowed_energy_transfer}

    def profile_rules(self) -> ProfileRules:
        return ProfileRules(operation_modes=OPERATION_MODES, negative_limits=self.model.v2g,
                            negative_setpoints=self.model.v2g)

    # ------------------------------------------------------------------ station -> CSMS

    def ev_connected(self, evse: Evse, now: datetime) -> None:
        ev = evse.ev
        if ev is not None and (ev.model.iso15118 or ev.model.bidirectional):
            self.core.push(self._outgoing("NotifyEVChargingNeeds", {
                "evseId": evse.id, "chargingNeeds": self.charging_needs(evse), "timestamp": iso(now)}))

    def charging_needs(self, evse: Evse) -> dict:
        ev = evse.ev
        assert ev is not None
        m = ev.model
        phases = min(m.phases, self.model.phases)
        bidirectional = m.bidirectional and self.model.v2g
        needs: dict[str, Any] = {
            "requestedEnergyTransfer": BIDIRECTIONAL if bidirectional else _ac_mode(phases),
            "availableEnergyTransfer": self._energy_transfer_modes(phases, bidirectional),
            "acChargingParameters": {
                "energyAmount": int(ev.energy_need_kwh * 1000), "evMinCurrent": int(m.min_current_a),
                "evMaxCurrent": int(m.max_current_a), "evMaxVoltage": int(m.max_voltage_v)},
            "controlMode": m.control_mode, "mobilityNeedsMode": m.mobility_needs_mode,
        }
        if ev.departure is not None:
            needs["departureTime"] = iso(ev.departure)
        if bidirectional:
            watts_per_amp = phases * 230.0
            needs["v2xChargingParameters"] = {
                "minChargePower": m.min_current_a * watts_per_amp,
                "maxChargePower": m.max_current_a * watts_per_amp,
                "minDischargePower": m.min_discharge_w, "maxDischargePower": m.max_discharge_w,
                "evTargetEnergyRequest": round((ev.target_soc - ev.soc) * ev.battery_wh),
                "evMinEnergyRequest": round((ev.min_soc - ev.soc) * ev.battery_wh),
                "evMaxEnergyRequest": round((1.0 - ev.soc) * ev.battery_wh),
                "evMinV2XEnergyRequest": round((ev.min_soc - ev.soc) * ev.battery_wh),
                "evMaxV2XEnergyRequest": round((ev.target_soc - ev.soc) * ev.battery_wh),
                "targetSoC": round(ev.target_soc * 100),
            }
        return needs

    @staticmethod
    def _energy_transfer_modes(phases: int, bidirectional: bool) -> list[str]:
        modes = ["AC_single_phase"] + (["AC_three_phase"] if phases == 3 else [])
        return modes + ([BIDIRECTIONAL] if bidirectional else [])

    def _transaction_info(self, evse: Evse, info: dict[str, Any]) -> None:
        info["operationMode"] = evse.operation_mode

    def operation_mode_changed(self, evse: Evse, now: datetime) -> None:
        if evse.tx is not None:
            self.transaction_event(evse, "Updated", "OperationModeChanged", now, context="Other")

    def _period(self, period: Any, start: datetime) -> dict:
        out = super()._period(period, start)
        if period.operation_mode is not None:
            out["operationMode"] = period.operation_mode
        if period.setpoint is not None:
            out["setpoint"] = round(period.setpoint, 1)
        if period.discharge_limit is not None:
            out["dischargeLimit"] = min(0.0, round(period.discharge_limit, 1))
        return out

    # ------------------------------------------------------------------ CSMS -> station

    def notify_allowed_energy_transfer(self, payload: dict) -> dict:
        allowed = any("BPT" in mode for mode in payload["allowedEnergyTransfer"])
        if self.core.allow_discharge(payload["transactionId"], allowed):
            return {"status": "Accepted"}
        return {"status": "Rejected", "statusInfo": {"reasonCode": "UnknownTransaction"}}


def _ac_mode(phases: int) -> str:
    return "AC_three_phase" if phases == 3 else "AC_single_phase"
