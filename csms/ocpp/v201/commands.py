"""CSMS-initiated requests as OCPP 2.0.1 spells them, and how their answers change what we know."""

from __future__ import annotations

from typing import Any

from csms.ocpp.package import Payload, Request
from csms.protocol.redaction import variable_value


def _evse(evse_id: int | None, connector_id: int | None) -> dict[str, Any] | None:
    if evse_id is None:
        return None
    return {"id": evse_id, **({"connectorId": connector_id} if connector_id is not None else {})}


class V201Commands:
    """The :class:`csms.ocpp.package.CommandSet` of OCPP 2.0.1."""

    def set_charging_profile(self, evse_id: int, profile: Payload) -> Request:
        return Request("SetChargingProfile", {"evseId": evse_id, "chargingProfile": profile})

    def profile_verdict(self, response: Payload) -> tuple[str, Payload | None]:
        return response["status"], response.get("statusInfo")

    def clear_charging_profile(self, profile_id: int | None, evse_id: int | None, purpose: str | None,
                               stack_level: int | None) -> Request:
        payload: Payload = {}
        if profile_id is not None:
            payload["chargingProfileId"] = profile_id
        criteria = {k: v for k, v in (("evseId", evse_id), ("chargingProfilePurpose", purpose),
                                      ("stackLevel", stack_level)) if v is not None}
        if criteria:
            payload["chargingProfileCriteria"] = criteria
        return Request("ClearChargingProfile", payload)

    def get_charging_profiles(self, request_id: int, evse_id: int | None, purpose: str | None,
                              profile_ids: list[int] | None = None, stack_level: int | None = None,
                              limit_source: list[str] | None = None) -> Request:
        criteria: Payload = {}
        if profile_ids:
            criteria["chargingProfileId"] = list(profile_ids)
        if stack_level is not None:
            criteria["stackLevel"] = stack_level
        if purpose is not None:
            criteria["chargingProfilePurpose"] = purpose
        if limit_source:
            criteria["chargingLimitSource"] = list(limit_source)
        payload: Payload = {"requestId": request_id, "chargingProfile": criteria}
        if evse_id is not None:
            payload["evseId"] = evse_id
        return Request("GetChargingProfiles", payload)

    def get_composite_schedule(self, evse_id: int, duration_s: int, unit: str | None) -> Request:
        payload: Payload = {"evseId": evse_id, "duration": duration_s}
        if unit is not None:
            payload["chargingRateUnit"] = unit
        return Request("GetCompositeSchedule", payload)

    def request_start_transaction(self, remote_start_id: int, id_token: Payload, evse_id: int | None,
                                  charging_profile: Payload | None) -> Request:
        payload: Payload = {"remoteStartId": remote_start_id, "idToken": id_token}
        if evse_id is not None:
            payload["evseId"] = evse_id
        if charging_profile is not None:
            payload["chargingProfile"] = charging_profile
        return Request("RequestStartTransaction", payload)

    def request_stop_transaction(self, transaction_id: str) -> Request:
        return Request("RequestStopTransaction", {"transactionId": transaction_id})

    def get_transaction_status(self, transaction_id: str | None) -> Request:
        return Request("GetTransactionStatus", {} if transaction_id is None else {"transactionId": transaction_id})

    def reset(self, type_: str, evse_id: int | None) -> Request:
        payload: Payload = {"type": type_}
        if evse_id is not None:
            payload["evseId"] = evse_id
        return Request("Reset", payload)

    def change_availability(self, status: str, evse_id: int | None, connector_id: int | None) -> Request:
        payload: Payload = {"operationalStatus": status}
        evse = _evse(evse_id, connector_id)
        if evse is not None:
            payload["evse"] = evse
        return Request("ChangeAvailability", payload)

    def unlock_connector(self, evse_id: int, connector_id: int) -> Request:
        return Request("UnlockConnector", {"evseId": evse_id, "connectorId": connector_id})

    def trigger_message(self, requested_message: str, evse_id: int | None, connector_id: int | None) -> Request:
        payload: Payload = {"requestedMessage": requested_message}
        evse = _evse(evse_id, connector_id)
        if evse is not None:
            payload["evse"] = evse
        return Request("TriggerMessage", payload)

    def get_variables(self, items: list[Payload]) -> Request:
        """items: [{"component": {"name": ...}, "variable": {"name": ...}, "attributeType"?: ...}]"""
        return Request("GetVariables", {"getVariableData": items})

    def variable_results(self, items: list[Payload], response: Payload) -> list[Payload]:
        return list(response["getVariableResult"])

    def variables_read(self, response: Payload) -> list[Payload]:
        return [{"component": r["component"], "variable": r["variable"],
                 "attributeType": r.get("attributeType", "Actual"),
                 "value": variable_value(r["variable"]["name"], r.get("attributeValue"))}
                for r in response["getVariableResult"] if r["attributeStatus"] == "Accepted"]

    def set_variables(self, items: list[Payload]) -> Request:
        """items: [{"component": {...}, "variable": {...}, "attributeValue": "...", "attributeType"?: ...}]"""
        return Request("SetVariables", {"setVariableData": items})

    def variable_statuses(self, items: list[Payload], response: Payload) -> list[Payload]:
        return list(response["setVariableResult"])

    def variables_written(self, items: list[Payload], response: Payload) -> list[Payload]:
        accepted = {(r["component"]["name"], r["variable"]["name"]) for r in response["setVariableResult"]
                    if r["attributeStatus"] in ("Accepted", "RebootRequired")}
        return [{"component": i["component"], "variable": i["variable"],
                 "attributeType": i.get("attributeType", "Actual"),
                 "value": variable_value(i["variable"]["name"], i["attributeValue"])}
                for i in items if (i["component"]["name"], i["variable"]["name"]) in accepted]

    def get_base_report(self, request_id: int, report_base: str) -> Request:
        return Request("GetBaseReport", {"requestId": request_id, "reportBase": report_base})
