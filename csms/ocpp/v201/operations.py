"""Issue 17's typed OCPP 2.0.1 commands: their API bodies (JSON schema), the rules the central
system keeps beyond the schema, and the OCPP payload each builds.

Pure: no I/O. The callers look things up (id-token records, the station's local list, its
ItemsPerMessage) and pass them in. Every refusal is a :class:`BodyError` naming the field of the
API body, so the operator gets a 422 that says what to fix and nothing is sent.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from csms.domain.operations import items_per_message
from csms.ocpp.common import ocpp_time

__all__ = ["BODIES", "BodyError", "items_per_message", "ocpp_time"]

Payload = dict[str, Any]


class BodyError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# Body schemas ---------------------------------------------------------------------------------------
_INT = {"type": "integer"}
_EVSE1 = {"type": "integer", "minimum": 1, "maximum": 1000}
_REQUEST_ID = {"type": "integer", "minimum": 0, "maximum": 2147483647}
_TIME = {"type": "string", "format": "date-time"}
_TOKEN = {"type": "string", "minLength": 1, "maxLength": 36}
_URL = {"type": "string", "minLength": 1, "maxLength": 512}
_OBJ = {"type": "object"}
_RETRIES = {"type": "integer", "minimum": 0, "maximum": 100}
_INTERVAL = {"type": "integer", "minimum": 0, "maximum": 86400}
_COMPONENT_VARIABLE = {"type": "object", "required": ["component"], "properties": {
    "component": _OBJ, "variable": _OBJ}}
CERTIFICATE_INSTALL_TYPES = ["V2GRootCertificate", "MORootCertificate", "CSMSRootCertificate",
                             "ManufacturerRootCertificate"]
CERTIFICATE_ID_TYPES = ["V2GRootCertificate", "MORootCertificate", "CSMSRootCertificate", "V2GCertificateChain",
                        "ManufacturerRootCertificate"]
CONNECTOR_TYPES = ["cCCS1", "cCCS2", "cG105", "cTesla", "cType1", "cType2", "s309-1P-16A", "s309-1P-32A",
                   "s309-3P-16A", "s309-3P-32A", "sBS1361", "sCEE-7-7", "sType2", "sType3", "Other1PhMax16A",
                   "Other1PhOver16A", "Other3Ph", "Pan", "wInductive", "wResonant", "Undetermined", "Unknown"]
COMPONENT_CRITERIA = ["Active", "Available", "Enabled", "Problem"]
MONITORING_CRITERIA = ["ThresholdMonitoring", "DeltaMonitoring", "PeriodicMonitoring"]
MONITOR_TYPES = ["UpperThreshold", "LowerThreshold", "Delta", "Periodic", "PeriodicClockAligned"]
MESSAGE_PRIORITIES = ["AlwaysFront", "InFront", "NormalCycle"]
MESSAGE_STATES = ["Charging", "Faulted", "Idle", "Unavailable"]
MESSAGE_FORMATS = ["ASCII", "HTML", "URI", "UTF8"]
HASH_DATA = {"type": "object", "required": ["hashAlgorithm", "issuerNameHash", "issuerKeyHash", "serialNumber"],
             "additionalProperties": False, "properties": {
                 "hashAlgorithm": {"type": "string", "enum": ["SHA256", "SHA384", "SHA512"]},
                 "issuerNameHash": {"type": "string", "maxLength": 128},
                 "issuerKeyHash": {"type": "string", "maxLength": 128},
                 "serialNumber": {"type": "string", "maxLength": 40}}}


def _body(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    schema.update(extra)
    return schema


BODIES: dict[str, dict[str, Any]] = {
    "get-report": _body({"request_id": _REQUEST_ID,
                         "component_criteria": {"type": "array", "minItems": 1, "maxItems": 4, "items": {
                             "type": "string", "enum": COMPONENT_CRITERIA}},
                         "component_variables": {"type": "array", "minItems": 1, "items": _COMPONENT_VARIABLE}}),
    "set-network-profile": _body({"configuration_slot": _INT, "connection_data": _OBJ},
                                 ["configuration_slot", "connection_data"]),
    "clear-cache": _body({}),
    "send-local-list": _body({"update_type": {"type": "string", "enum": ["Full", "Differential"]},
                              "id_tokens": {"type": "array", "items": _TOKEN},
                              "add": {"type": "array", "items": _TOKEN},
                              "remove": {"type": "array", "items": _TOKEN}}, ["update_type"]),
    "get-local-list-version": _body({}),
    "reserve-now": _body({"id_token": _TOKEN, "id_token_type": {"type": "string"}, "evse_id": _EVSE1,
                          "connector_type": {"type": "string", "enum": CONNECTOR_TYPES}, "expiry": _TIME,
                          "expiry_s": {"type": "integer", "minimum": 1, "maximum": 7 * 86400},
                          "reservation_id": {"type": "integer", "minimum": 1, "maximum": 2147483647},
                          "group_id_token": _TOKEN}, ["id_token"]),
    "cancel-reservation": _body({"reservation_id": _INT}, ["reservation_id"]),
    "update-firmware": _body({"location": _URL, "retrieve_date_time": {"type": "string"},
                              "install_date_time": {"type": "string"},
                              "signing_certificate": {"type": "string", "maxLength": 5500},
                              "signature": {"type": "string", "maxLength": 800}, "retries": _RETRIES,
                              "retry_interval_s": _INTERVAL, "request_id": _REQUEST_ID}, ["location"]),
    "publish-firmware": _body({"location": _URL, "checksum": {"type": "string"}, "retries": _RETRIES,
                               "retry_interval_s": _INTERVAL, "request_id": _REQUEST_ID}, ["location", "checksum"]),
    "unpublish-firmware": _body({"checksum": {"type": "string"}}, ["checksum"]),
    "install-certificate": _body({"certificate_type": {"type": "string"}, "certificate": {
        "type": "string", "maxLength": 5500}}, ["certificate_type", "certificate"]),
    "get-installed-certificate-ids": _body({"certificate_types": {"type": "array", "items": {
        "type": "string", "enum": CERTIFICATE_ID_TYPES}}}),
    "delete-certificate": _body({"serial_number": {"type": "string", "minLength": 1, "maxLength": 40},
                                 "certificate_hash_data": HASH_DATA}),
    "get-log": _body({"log_type": {"type": "string", "enum": ["DiagnosticsLog", "SecurityLog"]},
                      "remote_location": _URL, "oldest_timestamp": _TIME, "latest_timestamp": _TIME,
                      "retries": _RETRIES, "retry_interval_s": _INTERVAL, "request_id": _REQUEST_ID},
                     ["log_type", "remote_location"]),
    "set-variable-monitoring": _body({"items": {"type": "array", "minItems": 1, "maxItems": 100, "items": {
        "type": "object", "required": ["component", "variable", "type", "value", "severity"],
        "additionalProperties": False, "properties": {
            "component": _OBJ, "variable": _OBJ, "type": {"type": "string", "enum": MONITOR_TYPES},
            "value": {"type": "number"}, "severity": {"type": "integer", "minimum": 0, "maximum": 9},
            "transaction": {"type": "boolean"}, "id": _INT}}}}, ["items"]),
    "set-monitoring-base": _body({"monitoring_base": {"type": "string", "enum": ["All", "FactoryDefault",
                                                                                 "HardWiredOnly"]}},
                                 ["monitoring_base"]),
    "set-monitoring-level": _body({"severity": {"type": "integer", "minimum": 0, "maximum": 9}}, ["severity"]),
    "clear-variable-monitoring": _body({"ids": {"type": "array", "minItems": 1, "maxItems": 1000, "items": _INT}},
                                       ["ids"]),
    "get-monitoring-report": _body({"request_id": _REQUEST_ID,
                                    "monitoring_criteria": {"type": "array", "minItems": 1, "maxItems": 3,
                                                            "items": {"type": "string", "enum": MONITORING_CRITERIA}},
                                    "component_variables": {"type": "array", "minItems": 1,
                                                            "items": _COMPONENT_VARIABLE}}),
    "customer-information": _body({"report": {"type": "boolean"}, "clear": {"type": "boolean"},
                                   "id_token": _TOKEN, "customer_identifier": {"type": "string", "maxLength": 64},
                                   "customer_certificate": HASH_DATA, "request_id": _REQUEST_ID},
                                  ["report", "clear"]),
    "set-display-message": _body({"id": _INT, "priority": {"type": "string", "enum": MESSAGE_PRIORITIES},
                                  "content": {"type": "string", "maxLength": 512},
                                  "format": {"type": "string", "enum": MESSAGE_FORMATS, "default": "UTF8"},
                                  "language": {"type": "string", "maxLength": 8},
                                  "state": {"type": "string", "enum": MESSAGE_STATES},
                                  "start_date_time": _TIME, "end_date_time": _TIME,
                                  "transaction_id": {"type": "string", "minLength": 1, "maxLength": 36},
                                  "display": _OBJ}, ["priority", "content"]),
    "get-display-messages": _body({"request_id": _REQUEST_ID, "ids": {"type": "array", "minItems": 1,
                                                                      "items": _INT},
                                   "priority": {"type": "string", "enum": MESSAGE_PRIORITIES},
                                   "state": {"type": "string", "enum": MESSAGE_STATES}}),
    "clear-display-message": _body({"id": _INT}, ["id"]),
    "data-transfer": _body({"vendor_id": {"type": "string", "minLength": 1, "maxLength": 255},
                            "message_id": {"type": "string", "maxLength": 50}, "data": {}}, ["vendor_id"]),
}


# Small checks ---------------------------------------------------------------------------------------
def parse_time(value: str, field: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise BodyError(field, f"not an ISO 8601 time: {value!r}") from None
    if dt.tzinfo is None:
        raise BodyError(field, "needs a time zone (e.g. 'Z')")
    return dt


def check_pem_certificate(pem: str, field: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise BodyError(field, "not a PEM encoded X.509 certificate") from None


def check_base64(value: str, field: str) -> None:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BodyError(field, "not base64") from None


def chunks(items: Sequence[Any], size: int | None) -> list[list[Any]]:
    """Split ``items`` into messages of at most ``size`` (the station's ItemsPerMessage; None: one)."""
    if not size or size <= 0:
        return [list(items)]
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


# Payload builders -------------------------------------------------------------------------------------
def get_report(body: Mapping[str, Any], request_id: int) -> Payload:
    payload: Payload = {"requestId": body.get("request_id", request_id)}
    if "component_criteria" in body:
        payload["componentCriteria"] = list(body["component_criteria"])
    if "component_variables" in body:
        payload["componentVariable"] = list(body["component_variables"])
    return payload


def update_firmware(body: Mapping[str, Any], request_id: int, configured_certificate: str | None,
                    now: datetime) -> Payload:
    retrieve = parse_time(body["retrieve_date_time"], "retrieve_date_time") if "retrieve_date_time" in body else now
    firmware: Payload = {"location": body["location"], "retrieveDateTime": ocpp_time(retrieve)}
    if "install_date_time" in body:
        firmware["installDateTime"] = ocpp_time(parse_time(body["install_date_time"], "install_date_time"))
    certificate = body.get("signing_certificate", configured_certificate)
    if certificate is not None:
        check_pem_certificate(certificate, "signing_certificate")
        firmware["signingCertificate"] = certificate
    if "signature" in body:
        if certificate is None:
            raise BodyError("signature", "a signature needs a signing certificate (give one or configure "
                                         "firmware.signing_certificate_file)")
        check_base64(body["signature"], "signature")
        firmware["signature"] = body["signature"]
    payload: Payload = {"requestId": body.get("request_id", request_id), "firmware": firmware}
    if "retries" in body:
        payload["retries"] = body["retries"]
    if "retry_interval_s" in body:
        payload["retryInterval"] = body["retry_interval_s"]
    return payload


_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")


def publish_firmware(body: Mapping[str, Any], request_id: int) -> Payload:
    if not _MD5.match(body["checksum"]):
        raise BodyError("checksum", "the MD5 checksum of the firmware file: 32 hexadecimal digits")
    payload: Payload = {"location": body["location"], "checksum": body["checksum"],
                        "requestId": body.get("request_id", request_id)}
    if "retries" in body:
        payload["retries"] = body["retries"]
    if "retry_interval_s" in body:
        payload["retryInterval"] = body["retry_interval_s"]
    return payload


def unpublish_firmware(body: Mapping[str, Any]) -> Payload:
    if not _MD5.match(body["checksum"]):
        raise BodyError("checksum", "the MD5 checksum of the firmware file: 32 hexadecimal digits")
    return {"checksum": body["checksum"]}


def install_certificate(body: Mapping[str, Any]) -> Payload:
    if body["certificate_type"] not in CERTIFICATE_INSTALL_TYPES:
        raise BodyError("certificate_type", f"must be one of {', '.join(CERTIFICATE_INSTALL_TYPES)}")
    check_pem_certificate(body["certificate"], "certificate")
    return {"certificateType": body["certificate_type"], "certificate": body["certificate"]}


def get_log(body: Mapping[str, Any], request_id: int) -> Payload:
    log: Payload = {"remoteLocation": body["remote_location"]}
    for key, wire in (("oldest_timestamp", "oldestTimestamp"), ("latest_timestamp", "latestTimestamp")):
        if key in body:
            log[wire] = ocpp_time(parse_time(body[key], key))
    if "oldestTimestamp" in log and "latestTimestamp" in log and log["oldestTimestamp"] > log["latestTimestamp"]:
        raise BodyError("latest_timestamp", "is before oldest_timestamp")
    payload: Payload = {"logType": body["log_type"], "requestId": body.get("request_id", request_id), "log": log}
    if "retries" in body:
        payload["retries"] = body["retries"]
    if "retry_interval_s" in body:
        payload["retryInterval"] = body["retry_interval_s"]
    return payload


def get_monitoring_report(body: Mapping[str, Any], request_id: int) -> Payload:
    payload: Payload = {"requestId": body.get("request_id", request_id)}
    if "monitoring_criteria" in body:
        payload["monitoringCriteria"] = list(body["monitoring_criteria"])
    if "component_variables" in body:
        payload["componentVariable"] = list(body["component_variables"])
    return payload


def customer_information(body: Mapping[str, Any], request_id: int, id_token: Payload | None) -> Payload:
    references = [k for k in ("id_token", "customer_identifier", "customer_certificate") if k in body]
    if len(references) != 1:
        raise BodyError(references[1] if references else "id_token",
                        "give exactly one of id_token, customer_identifier, customer_certificate (N09.FR.04)")
    if not body["report"] and not body["clear"]:
        raise BodyError("report", "ask for a report, a clear, or both")
    payload: Payload = {"requestId": body.get("request_id", request_id), "report": body["report"],
                        "clear": body["clear"]}
    if id_token is not None:
        payload["idToken"] = id_token
    if "customer_identifier" in body:
        payload["customerIdentifier"] = body["customer_identifier"]
    if "customer_certificate" in body:
        payload["customerCertificate"] = dict(body["customer_certificate"])
    return payload


def set_display_message(body: Mapping[str, Any], message_id: int) -> Payload:
    content: Payload = {"format": body.get("format", "UTF8"), "content": body["content"]}
    if "language" in body:
        content["language"] = body["language"]
    if not body["content"]:
        raise BodyError("content", "a message needs some content")
    info: Payload = {"id": body.get("id", message_id), "priority": body["priority"], "message": content}
    if "state" in body:
        info["state"] = body["state"]
    start = parse_time(body["start_date_time"], "start_date_time") if "start_date_time" in body else None
    end = parse_time(body["end_date_time"], "end_date_time") if "end_date_time" in body else None
    if start is not None and end is not None and end <= start:
        raise BodyError("end_date_time", "must be after start_date_time")
    if start is not None:
        info["startDateTime"] = body["start_date_time"]
    if end is not None:
        info["endDateTime"] = body["end_date_time"]
    if "transaction_id" in body:
        info["transactionId"] = body["transaction_id"]
    if "display" in body:
        info["display"] = dict(body["display"])
    return {"message": info}


def get_display_messages(body: Mapping[str, Any], request_id: int) -> Payload:
    payload: Payload = {"requestId": body.get("request_id", request_id)}
    if "ids" in body:
        payload["id"] = list(body["ids"])
    for key in ("priority", "state"):
        if key in body:
            payload[key] = body[key]
    return payload


def data_transfer(body: Mapping[str, Any]) -> Payload:
    payload: Payload = {"vendorId": body["vendor_id"]}
    if "message_id" in body:
        payload["messageId"] = body["message_id"]
    if "data" in body:
        payload["data"] = body["data"]
    return payload


def reserve_now(body: Mapping[str, Any], reservation_id: int, id_token: Payload, group_id_token: Payload | None,
                now: datetime) -> Payload:
    if "expiry" in body and "expiry_s" in body:
        raise BodyError("expiry_s", "give expiry or expiry_s, not both")
    expiry = parse_time(body["expiry"], "expiry") if "expiry" in body else now + timedelta(
        seconds=body.get("expiry_s", 900))
    if expiry <= now:
        raise BodyError("expiry", "is in the past")
    payload: Payload = {"id": body.get("reservation_id", reservation_id), "expiryDateTime": ocpp_time(expiry),
                        "idToken": id_token}
    if "evse_id" in body:
        payload["evseId"] = body["evse_id"]
    if "connector_type" in body:
        payload["connectorType"] = body["connector_type"]
    if group_id_token is not None:
        payload["groupIdToken"] = group_id_token
    return payload


def local_list_entries(update_type: str, body: Mapping[str, Any], current: Sequence[str],
                       info_of: Mapping[str, Payload | None]) -> tuple[list[Payload], list[str]]:
    """(the SendLocalList entries, the list as it will be once Accepted).

    ``info_of`` maps each token in the body to its (idToken, idTokenInfo) entry, or None when the
    central system has no record of it.
    """
    if update_type == "Full":
        if "id_tokens" not in body:
            raise BodyError("id_tokens", "a Full update lists every token of the new list (may be empty)")
        for key in ("add", "remove"):
            if key in body:
                raise BodyError(key, "belongs to a Differential update")
        tokens = list(body["id_tokens"])
        _unique(tokens, "id_tokens")
        entries = [_known(info_of, t, f"id_tokens[{n}]") for n, t in enumerate(tokens)]
        return entries, tokens
    if "id_tokens" in body:
        raise BodyError("id_tokens", "belongs to a Full update (use add / remove)")
    add, remove = list(body.get("add", [])), list(body.get("remove", []))
    if not add and not remove:
        raise BodyError("add", "a Differential update needs tokens to add or remove")
    _unique(add + remove, "add")
    entries = [_known(info_of, t, f"add[{n}]") for n, t in enumerate(add)]
    for token in remove:
        entry = info_of.get(token)
        entries.append({"idToken": entry["idToken"] if entry else {"idToken": token, "type": "ISO14443"}})
    after = [t for t in current if t not in remove and t not in add] + add
    return entries, after


def _unique(tokens: Sequence[str], field: str) -> None:
    seen: set[str] = set()
    for token in tokens:
        if token in seen:
            raise BodyError(field, f"token {token!r} appears twice (every token once: D01.FR.06)")
        seen.add(token)


def _known(info_of: Mapping[str, Payload | None], token: str, field: str) -> Payload:
    entry = info_of.get(token)
    if entry is None:
        raise BodyError(field, f"unknown id token {token!r} (add it with POST /api/id-tokens first)")
    return entry
