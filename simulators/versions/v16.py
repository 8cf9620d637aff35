"""OCPP 1.6J on the wire: Core, Smart Charging and Remote Trigger, plus the simple security parts.

The shared core runs the same physics as for 2.0.1; this layer maps its events onto 1.6:

- A transaction exists for the central system once it is authorized: plug-in -> StatusNotification
  `Preparing` -> Authorize -> StartTransaction, whose answer gives the integer `transactionId`.
  MeterValues carry that id; StopTransaction carries the begin and end samples (`transactionData`).
  A StartTransaction answered with an idTagInfo other than Accepted stops the transaction
  (reason DeAuthorized). While offline these messages queue in order; the id is filled in just
  before a queued MeterValues / StopTransaction goes out, so it is the one the central system gave.
- Charging states become StatusNotifications (Charging, SuspendedEV, SuspendedEVSE, Finishing ...).
- Smart charging: ChargePointMaxProfile (connector 0), TxDefaultProfile and TxProfile, mapped onto the
  shared composite schedule by `profiles.composite.profile_from_v16`; a profile with the stack level
  and purpose of an installed one replaces it (1.6), at most `MaxChargingProfilesInstalled`.
- Configuration keys (GetConfiguration / ChangeConfiguration) are a view of the same device model the
  2.0.1 layer exposes through Get/SetVariables, so both versions change the same settings.
- Security whitepaper: profiles 1-3 connect like every version; `AuthorizationKey` rotates the Basic
  password (write-only); SecurityEventNotification on start-up and after a reset. SignCertificate,
  certificates and signed firmware are not simulated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from profiles.composite import V16_PURPOSES, profile_from_v16
from profiles.units import round_down_one_decimal
from simulators.charging_profiles import ProfileRules
from simulators.meter import iso
from simulators.station_core import Outgoing
from simulators.versions.base import Dialect, Handler

if TYPE_CHECKING:
    from simulators.station_core import Evse, StationCore

_STATUS = {"Charging": "Charging", "SuspendedEV": "SuspendedEV", "SuspendedEVSE": "SuspendedEVSE"}
_STOP_REASONS = {"EVDisconnected": "EVDisconnected", "Remote": "Remote", "DeAuthorized": "DeAuthorized",
                 "ImmediateReset": "HardReset", "Reboot": "Reboot", "HardReset": "HardReset",
                 "SoftReset": "SoftReset", "Local": "Local", "PowerLoss": "PowerLoss"}
_RATE_UNITS = {"A": "Current", "W": "Power"}
_TRIGGERS = {"BootNotification", "Heartbeat", "MeterValues", "StatusNotification"}


@dataclass
class _Tx:
    """What 1.6 needs to know about one of the core's transactions."""

    connector: int
    begin: dict = field(default_factory=dict)  # the Transaction.Begin sample, taken at StartTransaction
    meter_start_wh: float = 0.0
    id_tag: str = ""
    started: bool = False  # StartTransaction queued
    csms_id: int | None = None  # from the StartTransaction answer


@dataclass(frozen=True)
class _Key:
    """A 1.6 configuration key: a device-model variable, or a constant."""

    variable: tuple[str, str, str | None] | None = None
    constant: Callable[[StationCore], str] | None = None
    write_only: bool = False
    shown: Callable[[str], str] = field(default=lambda value: value)


def _units(value: str) -> str:
    return ",".join(_RATE_UNITS.get(unit, unit) for unit in value.split(","))


CONFIGURATION: dict[str, _Key] = {
    "HeartbeatInterval": _Key(("OCPPCommCtrlr", "HeartbeatInterval", None)),
    "MeterValueSampleInterval": _Key(("SampledDataCtrlr", "TxUpdatedInterval", None)),
    "MeterValuesSampledData": _Key(("SampledDataCtrlr", "TxUpdatedMeasurands", None)),
    "TransactionMessageAttempts": _Key(("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent")),
    "TransactionMessageRetryInterval": _Key(("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent")),
    "ChargeProfileMaxStackLevel": _Key(("SmartChargingCtrlr", "ProfileStackLevel", None)),
    "ChargingScheduleAllowedChargingRateUnit": _Key(("SmartChargingCtrlr", "RateUnit", None), shown=_units),
    "ChargingScheduleMaxPeriods": _Key(("SmartChargingCtrlr", "PeriodsPerSchedule", None)),
    "MaxChargingProfilesInstalled": _Key(constant=lambda core: str(core.model.max_profiles_installed)),
    "NumberOfConnectors": _Key(constant=lambda core: str(len(core.evses))),
    "SupportedFeatureProfiles": _Key(constant=lambda core: "Core,SmartCharging,RemoteTrigger"),
    "AuthorizeRemoteTxRequests": _Key(constant=lambda core: "false"),
    "LocalAuthorizeOffline": _Key(constant=lambda core: "true"),
    "StopTransactionOnInvalidId": _Key(constant=lambda core: "true"),
    "StopTxnSampledData": _Key(constant=lambda core: "Energy.Active.Import.Register"),
    "SecurityProfile": _Key(("SecurityCtrlr", "SecurityProfile", None)),
    "AuthorizationKey": _Key(("SecurityCtrlr", "BasicAuthPassword", None), write_only=True),
}


class Dialect16(Dialect):
    version = "1.6"

    def __init__(self, core: StationCore) -> None:
        self._txs: dict[str, _Tx] = {}
        self._last_status: dict[int, str] = {}
        self._finishing: set[int] = set()  # connectors whose car is still plugged in after its transaction
        super().__init__(core)

    def _handlers(self) -> dict[str, Handler]:
        return {
            "SetChargingProfile": self.set_charging_profile,
            "ClearChargingProfile": self.clear_charging_profile,
            "GetCompositeSchedule": self.get_composite_schedule,
            "RemoteStartTransaction": self.remote_start_transaction,
            "RemoteStopTransaction": self.remote_stop_transaction,
            "Reset": self.reset,
            "ChangeAvailability": self.change_availability,
            "TriggerMessage": self.trigger_message,
            "ExtendedTriggerMessage": self.trigger_message,
            "GetConfiguration": self.get_configuration,
            "ChangeConfiguration": self.change_configuration,
        }

    def profile_rules(self) -> ProfileRules:
        return ProfileRules(replace_same_stack=True, max_installed=self.model.max_profiles_installed)

    def may_discharge(self, evse: Evse) -> bool:
        return False  # 1.6 has no way to ask for it

    def transaction_id(self, evse_id: int) -> int | None:
        tx = self.core.evses[evse_id].tx
        state = self._txs.get(tx.id) if tx is not None else None
        return state.csms_id if state is not None else None

    # ------------------------------------------------------------------ station -> CSMS

    def boot_payload(self, reason: str) -> dict:
        return {"chargePointVendor": self.model.vendor[:20], "chargePointModel": self.model.name[:20],
                "chargePointSerialNumber": self.core.station_id[:25], "firmwareVersion": "netbewust-sim-1"}

    def after_boot(self, now: datetime, reason: str | None) -> None:
        self._last_status.clear()
        station = "Available" if any(e.operative for e in self.core.evses.values()) else "Unavailable"
        self._push_status(0, station, now)
        super().after_boot(now, reason)
        if self.model.security is not None and reason in ("PowerUp", "RemoteReset"):
            kind = "StartupOfTheDevice" if reason == "PowerUp" else "ResetOrReboot"
            self.core.push(Outgoing("SecurityEventNotification", {"type": kind, "timestamp": iso(now)}))

    def connector_status(self, evse: Evse, now: datetime) -> None:
        self._update_status(evse, now)

    def _update_status(self, evse: Evse, now: datetime, *, ended: bool = False, force: bool = False) -> None:
        if not self.core.online:
            return  # reported afresh after the next boot
        status = self._status(evse, ended)
        if force or self._last_status.get(evse.id) != status:
            self._push_status(evse.id, status, now)

    def _push_status(self, connector: int, status: str, now: datetime) -> None:
        self._last_status[connector] = status
        self.core.push(Outgoing("StatusNotification", {"connectorId": connector, "errorCode": "NoError",
                                                       "status": status, "timestamp": iso(now)}))

    def _status(self, evse: Evse, ended: bool) -> str:
        tx = None if ended else evse.tx
        if evse.ev is None or tx is not None:
            self._finishing.discard(evse.id)
        if tx is None:
            if evse.ev is not None:
                return "Finishing" if ended or evse.id in self._finishing else "Preparing"
            return "Available" if evse.operative else "Unavailable"
        state = self._txs.get(tx.id)
        if state is None or not state.started:
            return "Preparing"
        return _STATUS.get(tx.charging_state, "Preparing")

    def authorize(self, token: dict, done: Callable[[str | None], None]) -> None:
        def result(answer: dict | None) -> None:
            done(answer.get("idTagInfo", {}).get("status", "Accepted") if answer else None)

        self.core.push(Outgoing("Authorize", {"idTag": token["idToken"][:20]}, on_result=result))

    def transaction_event(self, evse: Evse, event_type: str, trigger: str, now: datetime, *,
                          context: str | None = None, id_token: dict | None = None,
                          stopped_reason: str | None = None) -> None:
        tx = evse.tx
        assert tx is not None
        if event_type == "Started":
            state = _Tx(evse.id)
            self._txs[tx.id] = state
            if tx.authorized:
                self._start(evse, state, now, id_token)
            self._update_status(evse, now)
            return
        known = self._txs.get(tx.id)
        if known is None:
            return
        state = known
        if event_type == "Ended":
            if state.started:
                self._stop(evse, state, now, stopped_reason)
            del self._txs[tx.id]
            if evse.ev is not None:
                self._finishing.add(evse.id)
            self._update_status(evse, now, ended=True)
            return
        if trigger == "Authorized" and not state.started:
            self._start(evse, state, now, id_token)
        elif trigger in ("MeterValuePeriodic", "Trigger") and state.started:
            self._meter_values(evse, state, now, "Sample.Periodic" if trigger == "MeterValuePeriodic" else "Trigger")
        self._update_status(evse, now)

    def _start(self, evse: Evse, state: _Tx, now: datetime, id_token: dict | None) -> None:
        tx = evse.tx
        assert tx is not None
        token = id_token or tx.id_token
        state.id_tag = (token["idToken"] if token else evse.ev.id_token if evse.ev else "REMOTE")[:20]
        state.started = True
        state.meter_start_wh = evse.import_wh
        state.begin = self.sample16(evse, now, "Transaction.Begin")
        tx_id = tx.id

        def answered(result: dict | None) -> None:
            if result is None:
                return  # gave up: later messages of this transaction go without an id
            state.csms_id = int(result["transactionId"])
            if result.get("idTagInfo", {}).get("status", "Accepted") != "Accepted":
                self.core.counters["authorize_rejected"] += 1
                self.core.stop_transaction(tx_id, "Deauthorized", "DeAuthorized")

        self.core.push(Outgoing("StartTransaction", {
            "connectorId": evse.id, "idTag": state.id_tag, "meterStart": round(state.meter_start_wh),
            "timestamp": iso(now)}, transactional=True, on_result=answered))

    def _stop(self, evse: Evse, state: _Tx, now: datetime, stopped_reason: str | None) -> None:
        payload = {"idTag": state.id_tag, "meterStop": round(evse.import_wh), "timestamp": iso(now),
                   "reason": _STOP_REASONS.get(stopped_reason or "", "Other"),
                   "transactionData": [state.begin, self.sample16(evse, now, "Transaction.End")]}

        def with_id(body: dict) -> dict | None:
            if state.csms_id is None:
                self.core.counters["stop_without_transaction_id"] += 1
                return None  # the central system never gave this transaction an id
            return {"transactionId": state.csms_id, **body}

        self.core.push(Outgoing("StopTransaction", payload, transactional=True, prepare=with_id))

    def _meter_values(self, evse: Evse, state: _Tx | None, now: datetime, context: str) -> None:
        payload = {"connectorId": evse.id, "meterValue": [self.sample16(evse, now, context)]}

        def with_id(body: dict) -> dict:
            if state is None or state.csms_id is None:
                return body
            return {**body, "transactionId": state.csms_id}

        self.core.push(Outgoing("MeterValues", payload, transactional=state is not None, prepare=with_id,
                                periodic=context == "Sample.Periodic"))

    def sample16(self, evse: Evse, now: datetime, context: str) -> dict:
        """A 1.6 MeterValue: values as strings, `unit` beside the measurand."""
        sampled = self.sample(evse, now, context)
        values = []
        for item in sampled["sampledValue"]:
            value = {"value": _number(item["value"]), "context": item["context"], "measurand": item["measurand"],
                     "unit": item["unitOfMeasure"]["unit"]}
            for key in ("phase", "location"):
                if key in item:
                    value[key] = item[key]
            values.append(value)
        return {"timestamp": sampled["timestamp"], "sampledValue": values}

    # ------------------------------------------------------------------ CSMS -> station

    def _connector_ok(self, connector: Any) -> bool:
        return connector == 0 or connector in self.core.evses

    def set_charging_profile(self, payload: dict) -> dict:
        connector = payload["connectorId"]
        if not self._connector_ok(connector):
            return {"status": "Rejected"}
        evse = self.core.evses.get(connector)
        running = None
        if evse is not None and evse.tx is not None:
            state = self._txs.get(evse.tx.id)
            running = (evse.tx.id, state.csms_id if state is not None else None)
        profile = profile_from_v16(payload["csChargingProfiles"], running=running)
        if isinstance(profile, str):
            self.core.counters["set_profile_rejected"] += 1
            return {"status": "Rejected"}
        status, _ = self.core.install_profile(connector, profile)
        return {"status": status}

    def clear_charging_profile(self, payload: dict) -> dict:
        criteria: dict[str, Any] = {}
        if "connectorId" in payload:
            criteria["evseId"] = payload["connectorId"]
        if "chargingProfilePurpose" in payload:
            criteria["chargingProfilePurpose"] = V16_PURPOSES[payload["chargingProfilePurpose"]]
        if "stackLevel" in payload:
            criteria["stackLevel"] = payload["stackLevel"]
        removed = self.core.clear_profiles(payload.get("id"), criteria)
        return {"status": "Accepted" if removed else "Unknown"}

    def get_composite_schedule(self, payload: dict) -> dict:
        connector, duration = payload["connectorId"], int(payload["duration"])
        unit = payload.get("chargingRateUnit", self.model.rate_units[0])
        if not self._connector_ok(connector) or unit not in self.model.rate_units or duration <= 0:
            return {"status": "Rejected"}
        start, periods = self.core.composite(connector, duration, unit)
        return {"status": "Accepted", "connectorId": connector, "scheduleStart": iso(start), "chargingSchedule": {
            "duration": duration, "startSchedule": iso(start), "chargingRateUnit": unit,
            "chargingSchedulePeriod": [
                {"startPeriod": int((p.start - start).total_seconds()), "limit": round_down_one_decimal(p.limit),
                 "numberPhases": p.number_phases} for p in periods]}}

    def remote_start_transaction(self, payload: dict) -> dict:
        connector = payload.get("connectorId")
        if connector is not None and connector not in self.core.evses:
            return {"status": "Rejected"}
        profile = payload.get("chargingProfile")
        if profile is not None:
            profile = profile_from_v16(profile, running=("pending", None))
            if isinstance(profile, str):
                return {"status": "Rejected"}
        tx, _ = self.core.remote_start(connector, {"idToken": payload["idTag"], "type": "Central"}, profile)
        return {"status": "Accepted" if tx is not None else "Rejected"}

    def remote_stop_transaction(self, payload: dict) -> dict:
        wanted = payload["transactionId"]
        for tx_id, state in list(self._txs.items()):
            if state.csms_id == wanted and self.core.stop_transaction(tx_id):
                return {"status": "Accepted"}
        return {"status": "Rejected"}

    def reset(self, payload: dict) -> dict:
        return {"status": self.core.reset("Immediate", "HardReset" if payload["type"] == "Hard" else "SoftReset")}

    def change_availability(self, payload: dict) -> dict:
        connector = payload["connectorId"]
        if not self._connector_ok(connector):
            return {"status": "Rejected"}
        return {"status": self.core.change_availability(connector or None, payload["type"] == "Operative")}

    def trigger_message(self, payload: dict) -> dict:
        """TriggerMessage and the security extension's ExtendedTriggerMessage (same answers)."""
        what, connector = payload["requestedMessage"], payload.get("connectorId")
        if what not in _TRIGGERS:
            return {"status": "NotImplemented"}
        if connector is not None and not self._connector_ok(connector):
            return {"status": "Rejected"}
        now = self.core.now()
        evses = [self.core.evses[connector]] if connector else list(self.core.evses.values())
        if what == "BootNotification":
            self.core.push(Outgoing("BootNotification", self.boot_payload("Triggered")))
        elif what == "Heartbeat":
            self.core.push(Outgoing("Heartbeat", {}))
        elif what == "StatusNotification":
            for evse in evses:
                self._update_status(evse, now, force=True)
        else:
            for evse in evses:
                self._meter_values(evse, self._txs.get(evse.tx.id) if evse.tx is not None else None, now, "Trigger")
        return {"status": "Accepted"}

    def get_configuration(self, payload: dict) -> dict:
        wanted = payload.get("key") or [
            name for name, key in CONFIGURATION.items()
            if not key.write_only and (key.variable is None or key.variable in self.core.device.vars)]
        known, unknown = [], []
        for name in wanted:
            key = CONFIGURATION.get(name)
            variable = self.core.device.vars.get(key.variable) if key is not None and key.variable else None
            if key is None or (key.variable is not None and variable is None):
                unknown.append(name)
            elif key.write_only:
                continue  # never read back (the password)
            elif variable is not None:
                known.append({"key": name, "readonly": not variable.mutable, "value": key.shown(variable.value)})
            else:
                assert key.constant is not None
                known.append({"key": name, "readonly": True, "value": key.constant(self.core)})
        answer: dict[str, Any] = {"configurationKey": known}
        if unknown:
            answer["unknownKey"] = unknown
        return answer

    def change_configuration(self, payload: dict) -> dict:
        key = CONFIGURATION.get(payload["key"])
        if key is None or (key.variable is not None and key.variable not in self.core.device.vars):
            return {"status": "NotSupported"}
        if key.variable is None:
            return {"status": "Rejected"}  # a constant
        component, variable, instance = key.variable
        item: dict[str, Any] = {"component": {"name": component}, "variable": {"name": variable},
                                "attributeValue": payload["value"]}
        if instance is not None:
            item["variable"]["instance"] = instance
        result = self.core.device.set(item)
        return {"status": "Accepted" if result["attributeStatus"] == "Accepted" else "Rejected"}


def _number(value: float) -> str:
    """A sampled value as 1.6 wants it: a string, at most two decimals, no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
