"""CSMS-initiated requests as OCPP 1.6 spells them, from the domain's (2.0.1-shaped) arguments.

Charging profiles stay in the domain's form everywhere (the grid controller builds them, the store
keeps them); they become 1.6 ``csChargingProfiles`` only here: ``ChargingStationMaxProfile`` is
``ChargePointMaxProfile``, the one schedule is an object, the transaction id an integer. Device-model
variables the controller reads map to 1.6 configuration keys (``SmartChargingCtrlr.RateUnit`` is
``ChargingScheduleAllowedChargingRateUnit``, ``ProfileStackLevel`` is ``ChargeProfileMaxStackLevel``,
``PeriodsPerSchedule`` is ``ChargingScheduleMaxPeriods``; any other variable is the key of its name).
A command that 1.6 does not have raises :class:`ActionNotInVersion` before anything is sent.
"""

from __future__ import annotations

from typing import Any

from csms.ocpp.package import Payload, Request
from csms.protocol.errors import InvalidRequest
from csms.protocol.redaction import variable_value

#: (component, variable) of the device model -> 1.6 configuration key.
CONFIGURATION_KEYS = {
    ("SmartChargingCtrlr", "RateUnit"): "ChargingScheduleAllowedChargingRateUnit",
    ("SmartChargingCtrlr", "ProfileStackLevel"): "ChargeProfileMaxStackLevel",
    ("SmartChargingCtrlr", "PeriodsPerSchedule"): "ChargingScheduleMaxPeriods",
    ("SmartChargingCtrlr", "Entries"): "MaxChargingProfilesInstalled",
    ("OCPPCommCtrlr", "HeartbeatInterval"): "HeartbeatInterval",
    ("SampledDataCtrlr", "TxUpdatedInterval"): "MeterValueSampleInterval",
    ("SecurityCtrlr", "BasicAuthPassword"): "AuthorizationKey",  # the security extensions' password
    ("SecurityCtrlr", "SecurityProfile"): "SecurityProfile",
}
_RATE_UNIT_KEY = "ChargingScheduleAllowedChargingRateUnit"
_PURPOSE = {"ChargingStationMaxProfile": "ChargePointMaxProfile", "TxDefaultProfile": "TxDefaultProfile",
            "TxProfile": "TxProfile"}
_RESET = {"Immediate": "Hard", "OnIdle": "Soft", "Hard": "Hard", "Soft": "Soft"}
#: TriggerMessage of 2.0.1 -> (1.6 action, requestedMessage): the security ones go as ExtendedTriggerMessage.
_TRIGGERS = {
    "BootNotification": ("TriggerMessage", "BootNotification"), "Heartbeat": ("TriggerMessage", "Heartbeat"),
    "MeterValues": ("TriggerMessage", "MeterValues"), "StatusNotification": ("TriggerMessage", "StatusNotification"),
    "FirmwareStatusNotification": ("TriggerMessage", "FirmwareStatusNotification"),
    "DiagnosticsStatusNotification": ("TriggerMessage", "DiagnosticsStatusNotification"),
    "LogStatusNotification": ("ExtendedTriggerMessage", "LogStatusNotification"),
    "SignChargingStationCertificate": ("ExtendedTriggerMessage", "SignChargePointCertificate"),
    "SignChargePointCertificate": ("ExtendedTriggerMessage", "SignChargePointCertificate"),
    "SignedFirmwareStatusNotification": ("ExtendedTriggerMessage", "SignedFirmwareStatusNotification"),
}


def rate_units(value: str) -> str:
    """1.6's ``ChargingScheduleAllowedChargingRateUnit`` (``Current,Power``) in the device model's words (``A,W``)."""
    words = {"current": "A", "power": "W", "a": "A", "w": "W"}
    return ",".join(words.get(part.strip().lower(), part.strip()) for part in value.split(",") if part.strip())


class ActionNotInVersion(InvalidRequest):
    """The command has no counterpart in OCPP 1.6 (the operator API answers 422 naming it)."""

    def __init__(self, action: str, why: str = "") -> None:
        super().__init__("NotSupported", f"{action}Request: {action} does not exist in OCPP 1.6 (the station "
                         f"speaks ocpp1.6){': ' + why if why else ''}", {"field": "action", "rule": "versionAction"})


def refuse(action: str, field: str, why: str) -> InvalidRequest:
    return InvalidRequest("PropertyConstraintViolation", f"{action}Request: {field} {why}",
                          {"field": field, "rule": "ocpp16"})


def transaction_id(action: str, field: str, value: Any) -> int:
    """A domain transaction id as 1.6's integer (1.6 transactions are numbered by us)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    raise refuse(action, field, f"must be the integer id of a 1.6 transaction, got {value!r}")


def cs_charging_profile(profile: Payload, action: str = "SetChargingProfile",
                        field: str = "csChargingProfiles") -> Payload:
    """A domain (2.0.1-shaped) charging profile as a 1.6 ChargingProfile."""
    purpose = _PURPOSE.get(profile.get("chargingProfilePurpose", ""))
    if purpose is None:
        raise refuse(action, f"{field}.chargingProfilePurpose",
                   f"{profile.get('chargingProfilePurpose')!r} has no OCPP 1.6 counterpart")
    schedules = profile.get("chargingSchedule") or []
    if not isinstance(schedules, list) or len(schedules) != 1 or not isinstance(schedules[0], dict):
        raise refuse(action, f"{field}.chargingSchedule", "must be exactly one schedule in OCPP 1.6")
    src = schedules[0]
    schedule: Payload = {"chargingRateUnit": src.get("chargingRateUnit"),
                         "chargingSchedulePeriod": [
                             {k: p[k] for k in ("startPeriod", "limit", "numberPhases") if k in p}
                             if isinstance(p, dict) else p for p in src.get("chargingSchedulePeriod") or []]}
    for key in ("duration", "startSchedule", "minChargingRate"):
        if key in src:
            schedule[key] = src[key]
    out: Payload = {"chargingProfileId": profile.get("id"), "stackLevel": profile.get("stackLevel"),
                    "chargingProfilePurpose": purpose, "chargingProfileKind": profile.get("chargingProfileKind"),
                    "chargingSchedule": schedule}
    for key in ("recurrencyKind", "validFrom", "validTo"):
        if key in profile:
            out[key] = profile[key]
    if "transactionId" in profile:
        out["transactionId"] = transaction_id(action, f"{field}.transactionId", profile["transactionId"])
    return out


class V16Commands:
    """The :class:`csms.ocpp.package.CommandSet` of OCPP 1.6."""

    def set_charging_profile(self, evse_id: int, profile: Payload) -> Request:
        return Request("SetChargingProfile", {"connectorId": evse_id, "csChargingProfiles": cs_charging_profile(profile)})

    def profile_verdict(self, response: Payload) -> tuple[str, Payload | None]:
        return response["status"], None

    def clear_charging_profile(self, profile_id: int | None, evse_id: int | None, purpose: str | None,
                               stack_level: int | None) -> Request:
        payload: Payload = {}
        if profile_id is not None:
            payload["id"] = profile_id
        if evse_id is not None:
            payload["connectorId"] = evse_id
        if purpose is not None:
            if purpose not in _PURPOSE:
                raise refuse("ClearChargingProfile", "chargingProfilePurpose", f"{purpose!r} has no OCPP 1.6 counterpart")
            payload["chargingProfilePurpose"] = _PURPOSE[purpose]
        if stack_level is not None:
            payload["stackLevel"] = stack_level
        return Request("ClearChargingProfile", payload)

    def get_charging_profiles(self, request_id: int, evse_id: int | None, purpose: str | None,
                              profile_ids: list[int] | None = None, stack_level: int | None = None,
                              limit_source: list[str] | None = None) -> Request:
        raise ActionNotInVersion("GetChargingProfiles", "a 1.6 station cannot list its profiles")

    def get_composite_schedule(self, evse_id: int, duration_s: int, unit: str | None) -> Request:
        payload: Payload = {"connectorId": evse_id, "duration": duration_s}
        if unit is not None:
            payload["chargingRateUnit"] = unit
        return Request("GetCompositeSchedule", payload)

    def request_start_transaction(self, remote_start_id: int, id_token: Payload, evse_id: int | None,
                                  charging_profile: Payload | None) -> Request:
        payload: Payload = {"idTag": id_token.get("idToken")}
        if evse_id is not None:
            payload["connectorId"] = evse_id
        if charging_profile is not None:
            payload["chargingProfile"] = cs_charging_profile(charging_profile, "RemoteStartTransaction",
                                                             "chargingProfile")
        return Request("RemoteStartTransaction", payload)

    def request_stop_transaction(self, transaction_id_: str) -> Request:
        return Request("RemoteStopTransaction",
                       {"transactionId": transaction_id("RemoteStopTransaction", "transactionId", transaction_id_)})

    def get_transaction_status(self, transaction_id_: str | None) -> Request:
        raise ActionNotInVersion("GetTransactionStatus")

    def reset(self, type_: str, evse_id: int | None) -> Request:
        if evse_id is not None:
            raise refuse("Reset", "evseId", "is not part of OCPP 1.6: a 1.6 reset is for the whole charge point")
        if type_ not in _RESET:
            raise refuse("Reset", "type", f"{type_!r} is none of Immediate/Hard, OnIdle/Soft")
        return Request("Reset", {"type": _RESET[type_]})

    def change_availability(self, status: str, evse_id: int | None, connector_id: int | None) -> Request:
        return Request("ChangeAvailability", {"connectorId": evse_id or 0, "type": status})

    def unlock_connector(self, evse_id: int, connector_id: int) -> Request:
        return Request("UnlockConnector", {"connectorId": evse_id})

    def trigger_message(self, requested_message: str, evse_id: int | None, connector_id: int | None) -> Request:
        action, message = _TRIGGERS.get(requested_message, ("TriggerMessage", requested_message))
        payload: Payload = {"requestedMessage": message}
        if evse_id is not None:
            payload["connectorId"] = evse_id
        return Request(action, payload)

    def get_variables(self, items: list[Payload]) -> Request:
        return Request("GetConfiguration", {"key": [self._key(i) for i in items]})

    @staticmethod
    def _key(item: Payload) -> str:
        component = (item.get("component") or {}).get("name", "")
        variable = (item.get("variable") or {}).get("name", "")
        return str(CONFIGURATION_KEYS.get((component, variable), variable))

    def variable_results(self, items: list[Payload], response: Payload) -> list[Payload]:
        """GetConfiguration's answer as GetVariables results, one per item asked for."""
        known = {k["key"]: k.get("value") for k in response.get("configurationKey") or []}
        unknown = set(response.get("unknownKey") or [])
        out = []
        for item in items:
            key = self._key(item)
            row: Payload = {"component": item["component"], "variable": item["variable"]}
            if key in known and key not in unknown:
                row["attributeStatus"] = "Accepted"
                value = known[key]
                if value is not None:
                    row["attributeValue"] = rate_units(value) if key == _RATE_UNIT_KEY else value
            else:
                row["attributeStatus"] = "UnknownVariable"
            out.append(row)
        return out

    def variables_read(self, response: Payload) -> list[Payload]:
        return [{"component": r["component"], "variable": r["variable"], "attributeType": "Actual",
                 "value": variable_value(r["variable"]["name"], r.get("attributeValue"))}
                for r in response["getVariableResult"] if r["attributeStatus"] == "Accepted"]

    def set_variables(self, items: list[Payload]) -> Request:
        if len(items) != 1:
            raise refuse("ChangeConfiguration", "key", "OCPP 1.6 changes one configuration key per message")
        return Request("ChangeConfiguration", {"key": self._key(items[0]), "value": items[0].get("attributeValue")})

    def variable_statuses(self, items: list[Payload], response: Payload) -> list[Payload]:
        """ChangeConfiguration's answer as a SetVariables result."""
        status = {"Accepted": "Accepted", "RebootRequired": "RebootRequired", "Rejected": "Rejected",
                  "NotSupported": "UnknownVariable"}.get(response.get("status", ""), "Rejected")
        return [{"component": i["component"], "variable": i["variable"], "attributeStatus": status} for i in items]

    def variables_written(self, items: list[Payload], response: Payload) -> list[Payload]:
        accepted = {(r["component"]["name"], r["variable"]["name"]) for r in response["setVariableResult"]
                    if r["attributeStatus"] in ("Accepted", "RebootRequired")}
        return [{"component": i["component"], "variable": i["variable"], "attributeType": "Actual",
                 "value": variable_value(i["variable"]["name"], i["attributeValue"])}
                for i in items if (i["component"]["name"], i["variable"]["name"]) in accepted]

    def get_base_report(self, request_id: int, report_base: str) -> Request:
        raise ActionNotInVersion("GetBaseReport", "ask for configuration keys with get-variables (GetConfiguration)")
