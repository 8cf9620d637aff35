"""JSON schemas of the API's request bodies and answers, written once as data.

The request schemas validate incoming bodies (``csms.api.http.read_body``) and appear in the
OpenAPI document; the answer schemas document what the routes return.
"""

from __future__ import annotations

from typing import Any

from csms.ocpp.v201.operations import BODIES as OPERATION_BODIES

_STR = {"type": "string"}
_INT = {"type": "integer"}
_EVSE = {"type": "integer", "minimum": 0, "maximum": 1000}
_EVSE1 = {"type": "integer", "minimum": 1, "maximum": 1000}
_CONNECTOR = {"type": "integer", "minimum": 1, "maximum": 1000}
_REQUEST_ID = {"type": "integer", "minimum": 0, "maximum": 2147483647}
_TIME = {"type": "string", "format": "date-time"}
_OBJ = {"type": "object"}

STATION_ID = {"type": "string", "minLength": 1, "maxLength": 48, "pattern": "^[^\\x00-\\x20\\x7f-\\x9f/]+$",
              "not": {"enum": [".", ".."]}}
# An id token as OCPP carries it: at most 36 characters, no control characters (docs/protocol.md).
ID_TOKEN_TEXT = {"type": "string", "minLength": 1, "maxLength": 36, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$"}
ID_TOKEN_TYPES = ["Central", "eMAID", "ISO14443", "ISO15693", "KeyCode", "Local", "MacAddress", "NoAuthorization"]
ID_TOKEN_STATUSES = ["Accepted", "Blocked", "ConcurrentTx", "Expired", "Invalid", "NoCredit", "NotAllowedTypeEVSE",
                     "NotAtThisLocation", "NotAtThisTime", "Unknown"]
TRIGGERS = ["BootNotification", "LogStatusNotification", "FirmwareStatusNotification", "Heartbeat", "MeterValues",
            "SignChargingStationCertificate", "SignV2GCertificate", "StatusNotification", "TransactionEvent",
            "SignCombinedCertificate", "PublishFirmwareStatusNotification"]
TRIGGERS += ["DiagnosticsStatusNotification", "SignChargePointCertificate",  # OCPP 1.6 (and its security
             "SignedFirmwareStatusNotification"]  # extensions); a version without the message gets 422
PURPOSES = ["ChargingStationExternalConstraints", "ChargingStationMaxProfile", "TxDefaultProfile", "TxProfile"]

_COMPONENT = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 50}, "instance": {"type": "string", "maxLength": 50},
    "evse": {"type": "object", "required": ["id"], "properties": {"id": _EVSE, "connectorId": _CONNECTOR}}}}
_VARIABLE = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 50}, "instance": {"type": "string", "maxLength": 50}}}
_ATTRIBUTE = {"type": "string", "enum": ["Actual", "Target", "MinSet", "MaxSet"]}


def _body(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    schema.update(extra)
    return schema


# Typed commands: the body of POST /api/stations/{station_id}/commands/{name}.
COMMAND_BODIES: dict[str, dict[str, Any]] = {
    "request-start-transaction": _body({
        "id_token": ID_TOKEN_TEXT,
        "id_token_type": {"type": "string", "enum": ID_TOKEN_TYPES, "default": "Central"},
        "evse_id": _EVSE1, "remote_start_id": _REQUEST_ID, "charging_profile": _OBJ}, ["id_token"]),
    "request-stop-transaction": _body({"transaction_id": {"type": "string", "minLength": 1, "maxLength": 36}},
                                      ["transaction_id"]),
    "reset": _body({"type": {"type": "string", "enum": ["Immediate", "OnIdle"], "default": "OnIdle"},
                    "evse_id": _EVSE1}),
    "change-availability": _body({"status": {"type": "string", "enum": ["Inoperative", "Operative"]},
                                  "evse_id": _EVSE, "connector_id": _CONNECTOR}, ["status"]),
    "unlock-connector": _body({"evse_id": _EVSE1, "connector_id": _CONNECTOR}, ["evse_id", "connector_id"]),
    "trigger-message": _body({"requested_message": {"type": "string", "enum": TRIGGERS},
                              "evse_id": _EVSE, "connector_id": _CONNECTOR}, ["requested_message"]),
    "get-variables": _body({"items": {"type": "array", "minItems": 1, "maxItems": 100, "items": {
        "type": "object", "required": ["component", "variable"], "additionalProperties": False,
        "properties": {"component": _COMPONENT, "variable": _VARIABLE, "attributeType": _ATTRIBUTE}}}},
        ["items"]),
    "set-variables": _body({"items": {"type": "array", "minItems": 1, "maxItems": 100, "items": {
        "type": "object", "required": ["component", "variable", "attributeValue"], "additionalProperties": False,
        "properties": {"component": _COMPONENT, "variable": _VARIABLE, "attributeType": _ATTRIBUTE,
                       "attributeValue": {"type": "string", "maxLength": 1000}}}}}, ["items"]),
    "get-base-report": _body({"report_base": {"type": "string", "enum": ["ConfigurationInventory", "FullInventory",
                                                                        "SummaryInventory"],
                                              "default": "FullInventory"},
                              "request_id": _REQUEST_ID}),
    "set-charging-profile": _body({"evse_id": _EVSE, "profile": _OBJ}, ["evse_id", "profile"]),
    "clear-charging-profile": _body({"profile_id": _INT, "evse_id": _EVSE,
                                     "purpose": {"type": "string", "enum": PURPOSES}, "stack_level": {
                                         "type": "integer", "minimum": 0, "maximum": 1000}}),
    "get-charging-profiles": _body({"request_id": _REQUEST_ID, "evse_id": _EVSE,
                                    "purpose": {"type": "string", "enum": PURPOSES},
                                    "profile_ids": {"type": "array", "minItems": 1, "items": _INT},
                                    "stack_level": {"type": "integer", "minimum": 0, "maximum": 1000},
                                    "limit_source": {"type": "array", "minItems": 1, "maxItems": 4, "items": {
                                        "type": "string", "enum": ["EMS", "Other", "SO", "CSO"]}}}),
    "get-composite-schedule": _body({"evse_id": _EVSE, "duration_s": {"type": "integer", "minimum": 1,
                                                                      "maximum": 2678400},
                                     "unit": {"type": "string", "enum": ["W", "A"]}}, ["evse_id", "duration_s"]),
    "get-transaction-status": _body({"transaction_id": {"type": "string", "minLength": 1, "maxLength": 36}}),
}

BODIES: dict[str, dict[str, Any]] = {
    "register_station": _body({"station_id": STATION_ID,
                               "security_profile": {"type": "integer", "minimum": 0, "maximum": 3},
                               "password": {"type": "string", "minLength": 16, "maxLength": 40}},
                              ["station_id"]),
    "id_token": _body({"id_token": ID_TOKEN_TEXT,
                       "type": {"type": "string", "enum": ID_TOKEN_TYPES, "default": "ISO14443"},
                       "status": {"type": "string", "enum": ID_TOKEN_STATUSES, "default": "Accepted"},
                       "expiry": _TIME, "group_id": ID_TOKEN_TEXT},
                      ["id_token"]),
    "ocpp_payload": {"type": "object", "description": "the OCPP 2.0.1 request payload of the action, as on the wire"},
    "hold_station": _body({"reason": {"type": "string", "maxLength": 400}}),
    "rotate_password": _body({"password": {"type": "string", "minLength": 16, "maxLength": 40}}),
    "tariff_plan": {"type": "object", "required": ["name"], "description": "a tariff plan: name, energy_per_kwh, "
                    "time_per_hour, idle_per_hour, idle_grace_min, session_fee, timezone, time_of_day, groups"},
    "grid_limit": {"type": "object", "description": "a limit signal, in the same format as the MQTT signal topic"},
    "session_need": _body({"energy_kwh": {"type": ["number", "null"], "minimum": 0, "maximum": 1000},
                           "departure": {"oneOf": [_TIME, {"type": "null"}]},
                           "guaranteed_kwh": {"type": ["number", "null"], "minimum": 0, "maximum": 1000}},
                          minProperties=1),
    **{f"command:{name}": schema for name, schema in COMMAND_BODIES.items()},
    **{f"command:{name}": schema for name, schema in OPERATION_BODIES.items()},
}

# Answers -------------------------------------------------------------------------------------------
ERROR = {"type": "object", "required": ["error"], "properties": {
    "error": {"type": "string", "description": "what went wrong, precisely"},
    "field": {"type": "string", "description": "the offending field of the request, when there is one"},
    "code": {"type": "string", "description": "the station's OCPP CALLERROR code (502)"},
    "description": _STR, "details": _OBJ}}

_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}

CONNECTOR = {"type": "object", "properties": {"evse_id": _INT, "connector_id": _INT, "status": _STR,
                                              "updated_at": _NULLABLE_STR}}
STATION_SUMMARY = {"type": "object", "required": ["station_id", "registration", "connected"], "properties": {
    "station_id": _STR, "registration": _STR, "registered": {"type": "boolean"}, "connected": {"type": "boolean"},
    "vendor": _NULLABLE_STR, "model": _NULLABLE_STR, "serial_number": _NULLABLE_STR,
    "firmware_version": _NULLABLE_STR, "boot_reason": _NULLABLE_STR, "last_boot": _NULLABLE_TIME,
    "last_seen": _NULLABLE_TIME, "security_profile": _INT, "hold": {"type": "boolean"},
    "ocpp_version": _NULLABLE_STR}}
STATION_DETAIL = {"allOf": [STATION_SUMMARY, {"type": "object", "properties": {
    "connection": {"type": ["object", "null"]}, "evses": {"type": "array", "items": _OBJ},
    "variables": {"type": "array", "items": _OBJ}, "charging_profiles": {"type": "array", "items": _OBJ},
    "has_password": {"type": "boolean"}}}]}
TRANSACTION = {"type": "object", "required": ["station_id", "transaction_id", "active"], "properties": {
    "station_id": _STR, "transaction_id": _STR, "evse_id": {"type": ["integer", "null"]},
    "connector_id": {"type": ["integer", "null"]}, "id_token": _NULLABLE_STR, "started_at": _NULLABLE_TIME,
    "ended_at": _NULLABLE_TIME, "active": {"type": "boolean"}, "charging_state": _NULLABLE_STR,
    "stopped_reason": _NULLABLE_STR, "energy_wh": {"type": ["number", "null"]},
    "export_wh": {"type": "number"}, "net_energy_wh": {"type": ["number", "null"]}}}
TRANSACTION_DETAIL = {"allOf": [TRANSACTION, {"type": "object", "properties": {
    "events": {"type": "array", "items": _OBJ},
    "energy_series": {"type": "array", "items": {"type": "object", "properties": {
        "timestamp": _STR, "energy_wh": {"type": "number"}}}},
    "power_series": {"type": "array", "items": {"type": "object", "properties": {
        "timestamp": _STR, "power_w": {"type": "number"}}}}}}]}
ID_TOKEN = {"type": "object", "required": ["id_token", "type", "status"], "properties": {
    "id_token": _STR, "type": _STR, "status": _STR, "expiry": _NULLABLE_TIME, "group_id": _NULLABLE_STR}}
COMMAND_RESULT = {"type": "object", "required": ["station_id", "action", "response"], "properties": {
    "station_id": _STR, "action": _STR, "response": _OBJ, "latency_ms": {"type": "number"}}}
