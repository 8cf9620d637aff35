"""OCPP 2.0.1 on the wire: TransactionEvent, device model, RequestStart/Stop, ...

Transactions start when the cable is plugged in (TxStartPoint EVConnected) and every change is a
TransactionEvent with a running `seqNo`. V2G is the opt-in convention of flagged (`v2g`) station
models: a negative `limit` means discharge (2.0.1 has no standard way to say it). ISO 15118 cars'
V2X limits travel in `customData` under their OCPP 2.1 names.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from profiles.units import round_down_one_decimal
from simulators.charging_profiles import status_info
from simulators.meter import iso
from simulators.station_core import Outgoing
from simulators.versions.base import Dialect, Handler

if TYPE_CHECKING:
    from simulators.station_core import Evse


class Dialect201(Dialect):
    version = "2.0.1"

    def _handlers(self) -> dict[str, Handler]:
        return {
            "SetChargingProfile": self.set_charging_profile,
            "ClearChargingProfile": self.clear_charging_profile,
            "GetChargingProfiles": self.get_charging_profiles,
            "GetCompositeSchedule": self.get_composite_schedule,
            "RequestStartTransaction": self.request_start_transaction,
            "RequestStopTransaction": self.request_stop_transaction,
            "Reset": self.reset,
            "ChangeAvailability": self.change_availability,
            "TriggerMessage": self.trigger_message,
            "GetVariables": self.get_variables,
            "SetVariables": self.set_variables,
        }

    # ------------------------------------------------------------------ station -> CSMS

    def boot_payload(self, reason: str) -> dict:
        return {"reason": reason, "chargingStation": {
            "model": self.model.name[:20], "vendorName": self.model.vendor[:50],
            "serialNumber": self.core.station_id[:25], "firmwareVersion": "netbewust-sim-1"}}

    def _status_payload(self, evse: Evse, now: datetime) -> dict:
        return {"timestamp": iso(now), "connectorStatus": evse.status, "evseId": evse.id, "connectorId": 1}

    def connector_status(self, evse: Evse, now: datetime) -> None:
        self.core.push(self._outgoing("StatusNotification", self._status_payload(evse, now)))

    def authorize(self, token: dict, done: Callable[[str | None], None]) -> None:
        def result(answer: dict | None) -> None:
            done(answer.get("idTokenInfo", {}).get("status", "Accepted") if answer else None)

        self.core.push(self._outgoing("Authorize", {"idToken": token}, on_result=result))

    def ev_connected(self, evse: Evse, now: datetime) -> None:
        if evse.ev is not None and evse.ev.model.iso15118:
            self.core.push(self._outgoing("NotifyEVChargingNeeds", {"evseId": evse.id,
                                                                    "chargingNeeds": self.charging_needs(evse)}))

    def charging_needs(self, evse: Evse) -> dict:
        ev = evse.ev
        assert ev is not None
        m = ev.model
        needs: dict[str, Any] = {
            "requestedEnergyTransfer": "AC_three_phase" if m.phases == 3 else "AC_single_phase",
            "acChargingParameters": {
                "energyAmount": int(ev.energy_need_kwh * 1000), "evMinCurrent": int(m.min_current_a),
                "evMaxCurrent": int(m.max_current_a), "evMaxVoltage": int(m.max_voltage_v)},
        }
        if ev.departure is not None:
            needs["departureTime"] = iso(ev.departure)
        if m.bidirectional:  # 2.0.1 has no V2X fields: carried in customData with 2.1 names
            needs["customData"] = {
                "vendorId": "org.netbewust.v2x", "evMaxDischargePower": m.max_discharge_w,
                "evMinV2XEnergyRequest": round((ev.min_soc - ev.soc) * ev.battery_wh),
                "evMaxV2XEnergyRequest": round((ev.target_soc - ev.soc) * ev.battery_wh)}
        return needs

    def transaction_event(self, evse: Evse, event_type: str, trigger: str, now: datetime, *,
                          context: str | None = None, id_token: dict | None = None,
                          stopped_reason: str | None = None) -> None:
        tx = evse.tx
        assert tx is not None
        info: dict[str, Any] = {"transactionId": tx.id, "chargingState": tx.charging_state}
        if tx.remote_start_id is not None and tx.seq_no == 0:
            info["remoteStartId"] = tx.remote_start_id
        if stopped_reason is not None:
            info["stoppedReason"] = stopped_reason
        self._transaction_info(evse, info)
        payload: dict[str, Any] = {
            "eventType": event_type, "timestamp": iso(now), "triggerReason": trigger, "seqNo": tx.next_seq(),
            "transactionInfo": info, "evse": {"id": evse.id, "connectorId": 1}}
        if id_token is not None:
            payload["idToken"] = id_token
        if context is not None:
            payload["meterValue"] = [self.sample(evse, now, context)]
        if not self.core.online:
            payload["offline"] = True
        self.core.push(self._outgoing("TransactionEvent", payload, transactional=True,
                                      periodic=trigger == "MeterValuePeriodic"))

    def _transaction_info(self, evse: Evse, info: dict[str, Any]) -> None:
        """Version additions to transactionInfo (none in 2.0.1)."""

    def _outgoing(self, action: str, payload: dict, **kwargs: Any) -> Outgoing:
        return Outgoing(action, payload, **kwargs)

    # ------------------------------------------------------------------ CSMS -> station

    def set_charging_profile(self, payload: dict) -> dict:
        status, reason = self.core.install_profile(payload["evseId"], payload["chargingProfile"])
        if status == "Accepted":
            return {"status": "Accepted"}
        return {"status": status, "statusInfo": status_info(reason or "")}

    def clear_charging_profile(self, payload: dict) -> dict:
        removed = self.core.clear_profiles(payload.get("chargingProfileId"), payload.get("chargingProfileCriteria"))
        return {"status": "Accepted" if removed else "Unknown"}

    def get_charging_profiles(self, payload: dict) -> dict:
        found = self.core.profiles.query(payload.get("evseId"), payload.get("chargingProfile", {}))
        if not found:
            return {"status": "NoProfiles"}
        groups = sorted(found.items())
        for index, (evse_id, profiles) in enumerate(groups):
            report = {"requestId": payload["requestId"], "chargingLimitSource": "CSO", "evseId": evse_id,
                      "chargingProfile": profiles}
            if index < len(groups) - 1:
                report["tbc"] = True
            self.core.push(self._outgoing("ReportChargingProfiles", report))
        return {"status": "Accepted"}

    def get_composite_schedule(self, payload: dict) -> dict:
        self.core.now()
        evse_id, duration = payload["evseId"], int(payload["duration"])
        unit = payload.get("chargingRateUnit", self.model.rate_units[0])
        if evse_id != 0 and evse_id not in self.core.evses:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnknownEvse"}}
        if unit not in self.model.rate_units:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnsupportedRateUnit"}}
        if duration <= 0:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "InvalidDuration"}}
        start, periods = self.core.composite(evse_id, duration, unit)
        return {"status": "Accepted", "schedule": {
            "evseId": evse_id, "duration": duration, "scheduleStart": iso(start), "chargingRateUnit": unit,
            "chargingSchedulePeriod": [self._period(p, start) for p in periods]}}

    def _period(self, period: Any, start: datetime) -> dict:
        return {"startPeriod": int((period.start - start).total_seconds()),
                "limit": round_down_one_decimal(period.limit), "numberPhases": period.number_phases}

    def request_start_transaction(self, payload: dict) -> dict:
        tx, refusal = self.core.remote_start(payload.get("evseId"), payload["idToken"],
                                             payload.get("chargingProfile"), payload.get("remoteStartId"))
        if tx is None:
            return {"status": "Rejected", "statusInfo": refusal}
        return {"status": "Accepted", "transactionId": tx.id}

    def request_stop_transaction(self, payload: dict) -> dict:
        return {"status": "Accepted" if self.core.stop_transaction(payload["transactionId"]) else "Rejected"}

    def reset(self, payload: dict) -> dict:
        if payload.get("evseId") is not None:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "EvseResetNotSupported"}}
        return {"status": self.core.reset(payload["type"])}

    def change_availability(self, payload: dict) -> dict:
        target = payload.get("evse")
        if target is not None and target.get("id", 0) != 0 and target["id"] not in self.core.evses:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnknownEvse"}}
        operative = payload["operationalStatus"] == "Operative"
        return {"status": self.core.change_availability(target.get("id") if target else None, operative)}

    def trigger_message(self, payload: dict) -> dict:
        now = self.core.now()
        core = self.core
        what = payload["requestedMessage"]
        evse_id = (payload.get("evse") or {}).get("id")
        if evse_id is not None and evse_id not in core.evses:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnknownEvse"}}
        evses = [core.evses[evse_id]] if evse_id else list(core.evses.values())
        if what == "BootNotification":
            core.push(self._outgoing("BootNotification", self.boot_payload("Triggered")))
        elif what == "Heartbeat":
            core.push(self._outgoing("Heartbeat", {}))
        elif what == "StatusNotification":
            for evse in evses:
                core.push(self._outgoing("StatusNotification", self._status_payload(evse, now)))
        elif what == "MeterValues":
            for evse in evses:
                core.push(self._outgoing("MeterValues", {"evseId": evse.id,
                                                         "meterValue": [self.sample(evse, now, "Trigger")]}))
        elif what == "TransactionEvent":
            with_tx = [evse for evse in evses if evse.tx is not None]
            if not with_tx:
                return {"status": "Rejected", "statusInfo": {"reasonCode": "NoTransaction"}}
            for evse in with_tx:
                self.transaction_event(evse, "Updated", "Trigger", now, context="Trigger")
        else:
            return {"status": "NotImplemented"}
        return {"status": "Accepted"}

    def get_variables(self, payload: dict) -> dict:
        return {"getVariableResult": [self.core.device.get(item) for item in payload["getVariableData"]]}

    def set_variables(self, payload: dict) -> dict:
        return {"setVariableResult": [self.core.device.set(item) for item in payload["setVariableData"]]}
