"""What the central system remembers of issue 17's operations, as pure updates of JSON documents.

One document per station and kind (local list, firmware, logs, certificates, monitoring, customer
information, display messages) and one per reservation. Each function takes the current
document (or None) and returns the new one; nothing here does I/O, so both store backends keep the
same thing and the rules are tested once. Histories are bounded (``KEEP`` entries per list), so a
station that reports forever cannot grow a document without end.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

Doc = dict[str, Any]
KEEP = 100  # requests, publications, reports ... kept per station and kind
KEEP_HISTORY = 50  # status notifications kept per request

LOCAL_LIST, FIRMWARE, LOGS, CERTIFICATES = "local_list", "firmware", "logs", "certificates"
MONITORING, CUSTOMER_INFORMATION, DISPLAY_MESSAGES = "monitoring", "customer_information", "display_messages"


def iso(at: datetime) -> str:
    return at.isoformat()


def _fresh(doc: Doc | None, template: Doc) -> Doc:
    return copy.deepcopy(doc) if doc is not None else copy.deepcopy(template)


def _bounded(items: list[Any], keep: int = KEEP) -> list[Any]:
    return items[-keep:]


def items_per_message(variables: Sequence[Mapping[str, Any]], instance: str) -> int | None:
    """DeviceDataCtrlr.ItemsPerMessage[instance] as the station reported it (None: not reported)."""
    for v in variables:
        component = v.get("component")
        name = component.get("name") if isinstance(component, Mapping) else component
        variable = v.get("variable")
        var_name = variable.get("name") if isinstance(variable, Mapping) else variable
        var_instance = (variable.get("instance") if isinstance(variable, Mapping)
                        else v.get("variable_instance", v.get("instance")))
        if (name, var_name, var_instance) == ("DeviceDataCtrlr", "ItemsPerMessage", instance):
            try:
                return max(1, int(str(v.get("value"))))
            except ValueError:
                return None
    return None


# Local authorisation list (D) --------------------------------------------------------------------------
LOCAL_LIST_TEMPLATE: Doc = {"version": 0, "reported_version": None, "id_tokens": [], "last_update": None}


def local_list_next_version(doc: Doc | None) -> int:
    doc = doc or LOCAL_LIST_TEMPLATE
    return int(max(doc["version"], doc["reported_version"] or 0)) + 1


def local_list_sent(doc: Doc | None, update_type: str, version: int, tokens_after: Sequence[str], status: str,
                    at: datetime) -> Doc:
    out = _fresh(doc, LOCAL_LIST_TEMPLATE)
    out["last_update"] = {"update_type": update_type, "version": version, "status": status, "at": iso(at)}
    if status == "Accepted":
        out["version"] = version
        out["reported_version"] = version
        out["id_tokens"] = list(tokens_after)
    return out


def local_list_reported(doc: Doc | None, version: int) -> Doc:
    out = _fresh(doc, LOCAL_LIST_TEMPLATE)
    out["reported_version"] = version
    return out


# Requests with a status history: firmware updates, publications, logs --------------------------------
def _request(doc: Doc | None, key: str, entry: Doc, template: Doc) -> Doc:
    out = _fresh(doc, template)
    out[key] = _bounded([e for e in out[key] if e["request_id"] != entry["request_id"]] + [entry])
    return out


def _status(doc: Doc | None, key: str, request_id: int | None, status: str, at: datetime, template: Doc,
            **fields: Any) -> Doc:
    out = _fresh(doc, template)
    entries = out[key]
    target = next((e for e in reversed(entries) if request_id is None or e["request_id"] == request_id), None)
    if target is None:  # a status about a request we did not make (or forgot): keep it all the same
        target = {"request_id": request_id, "answer": None, "history": []}
        entries.append(target)
        out[key] = _bounded(entries)
    target["status"] = status
    target["history"] = _bounded(target.get("history", []) + [{"status": status, "at": iso(at)}], KEEP_HISTORY)
    target.update({k: v for k, v in fields.items() if v is not None})
    return out


FIRMWARE_TEMPLATE: Doc = {"updates": [], "publications": []}


def firmware_requested(doc: Doc | None, request: Mapping[str, Any], answer: str, at: datetime) -> Doc:
    firmware = request["firmware"]
    return _request(doc, "updates", {"request_id": request["requestId"], "location": firmware["location"],
                                     "requested_at": iso(at), "answer": answer, "status": None, "history": [],
                                     "signed": "signingCertificate" in firmware}, FIRMWARE_TEMPLATE)


def firmware_status(doc: Doc | None, request_id: int | None, status: str, at: datetime) -> Doc:
    return _status(doc, "updates", request_id, status, at, FIRMWARE_TEMPLATE)


def publish_requested(doc: Doc | None, request: Mapping[str, Any], answer: str, at: datetime) -> Doc:
    return _request(doc, "publications", {"request_id": request["requestId"], "location": request["location"],
                                          "checksum": request["checksum"], "requested_at": iso(at),
                                          "answer": answer, "status": None, "history": [], "locations": []},
                    FIRMWARE_TEMPLATE)


def publish_status(doc: Doc | None, request_id: int | None, status: str, locations: Sequence[str] | None,
                   at: datetime) -> Doc:
    return _status(doc, "publications", request_id, status, at, FIRMWARE_TEMPLATE,
                   locations=list(locations) if locations else None)


def unpublished(doc: Doc | None, checksum: str, answer: str, at: datetime) -> Doc:
    out = _fresh(doc, FIRMWARE_TEMPLATE)
    if answer == "Unpublished":
        for entry in out["publications"]:
            if entry.get("checksum") == checksum:
                entry["status"] = "Unpublished"
                entry["history"] = _bounded(entry["history"] + [{"status": "Unpublished", "at": iso(at)}],
                                            KEEP_HISTORY)
    return out


LOGS_TEMPLATE: Doc = {"requests": []}


def log_requested(doc: Doc | None, request: Mapping[str, Any], answer: Mapping[str, Any], at: datetime) -> Doc:
    return _request(doc, "requests", {"request_id": request["requestId"], "log_type": request["logType"],
                                      "remote_location": request["log"]["remoteLocation"], "requested_at": iso(at),
                                      "answer": answer["status"], "filename": answer.get("filename"),
                                      "status": None, "history": []}, LOGS_TEMPLATE)


def log_status(doc: Doc | None, request_id: int | None, status: str, at: datetime) -> Doc:
    return _status(doc, "requests", request_id, status, at, LOGS_TEMPLATE)


# Certificates (A02/A03, M) ---------------------------------------------------------------------------------
CERTIFICATES_TEMPLATE: Doc = {"installs": [], "installed": [], "issued": []}


def certificate_installed(doc: Doc | None, certificate_type: str, serial_number: str, subject: str,
                          status: str, at: datetime) -> Doc:
    out = _fresh(doc, CERTIFICATES_TEMPLATE)
    out["installs"] = _bounded(out["installs"] + [{"certificate_type": certificate_type,
                                                   "serial_number": serial_number, "subject": subject,
                                                   "status": status, "at": iso(at)}])
    return out


def certificates_reported(doc: Doc | None, types: Sequence[str] | None, response: Mapping[str, Any],
                          at: datetime) -> Doc:
    """The inventory after GetInstalledCertificateIds: the types asked are replaced by the answer."""
    out = _fresh(doc, CERTIFICATES_TEMPLATE)
    reported = [{"certificate_type": c["certificateType"], "serial_number": c["certificateHashData"]["serialNumber"],
                 "hash_data": c["certificateHashData"], "children": c.get("childCertificateHashData", []),
                 "reported_at": iso(at)} for c in response.get("certificateHashDataChain", [])]
    if types:
        kept = [c for c in out["installed"] if c["certificate_type"] not in types]
    else:
        kept = []
    out["installed"] = kept + reported
    return out


def certificate_deleted(doc: Doc | None, serial_number: str) -> Doc:
    out = _fresh(doc, CERTIFICATES_TEMPLATE)
    out["installed"] = [c for c in out["installed"] if c["serial_number"] != serial_number]
    return out


def installed_hash_data(doc: Doc | None, serial_number: str) -> Doc | None:
    """The hash data the station reported for ``serial_number`` (M04.FR.07), or None."""
    for c in (doc or CERTIFICATES_TEMPLATE)["installed"]:
        if c["serial_number"].lower() == serial_number.lower():
            return dict(c["hash_data"])
    return None


def certificate_issued(doc: Doc | None, certificate_type: str, serial_number: str, not_after: datetime,
                       at: datetime) -> Doc:
    out = _fresh(doc, CERTIFICATES_TEMPLATE)
    out["issued"] = _bounded(out["issued"] + [{"certificate_type": certificate_type, "serial_number": serial_number,
                                               "not_after": iso(not_after), "issued_at": iso(at), "status": None}])
    return out


def certificate_delivered(doc: Doc | None, serial_number: str, status: str) -> Doc:
    out = _fresh(doc, CERTIFICATES_TEMPLATE)
    for entry in out["issued"]:
        if entry["serial_number"] == serial_number:
            entry["status"] = status
    return out


# Monitoring (N02-N06) ------------------------------------------------------------------------------------
MONITORING_TEMPLATE: Doc = {"base": None, "level": None, "monitors": []}


def _monitor(component: Mapping[str, Any], variable: Mapping[str, Any], m: Mapping[str, Any], source: str) -> Doc:
    return {"id": m["id"], "component": component["name"], "component_instance": component.get("instance"),
            "evse": component.get("evse"), "variable": variable["name"], "variable_instance": variable.get("instance"),
            "type": m["type"], "value": m["value"], "severity": m["severity"],
            "transaction": bool(m.get("transaction", False)), "source": source}


def monitors_set(doc: Doc | None, request: Mapping[str, Any], response: Mapping[str, Any]) -> Doc:
    out = _fresh(doc, MONITORING_TEMPLATE)
    by_id = {m["id"]: m for m in out["monitors"]}
    for data, result in zip(request["setMonitoringData"], response["setMonitoringResult"], strict=False):
        if result.get("status") == "Accepted" and "id" in result:
            by_id[result["id"]] = _monitor(data["component"], data["variable"], {**data, "id": result["id"]}, "set")
    out["monitors"] = sorted(by_id.values(), key=lambda m: m["id"])
    return out


def monitors_cleared(doc: Doc | None, response: Mapping[str, Any]) -> Doc:
    out = _fresh(doc, MONITORING_TEMPLATE)
    gone = {r["id"] for r in response.get("clearMonitoringResult", []) if r.get("status") in ("Accepted", "NotFound")}
    out["monitors"] = [m for m in out["monitors"] if m["id"] not in gone]
    return out


def monitors_reported(doc: Doc | None, report: Mapping[str, Any]) -> Doc:
    out = _fresh(doc, MONITORING_TEMPLATE)
    by_id = {m["id"]: m for m in out["monitors"]}
    for item in report.get("monitor", []):
        for m in item.get("variableMonitoring", []):
            by_id[m["id"]] = _monitor(item["component"], item["variable"], m, "report")
    out["monitors"] = sorted(by_id.values(), key=lambda m: m["id"])
    return out


def monitoring_setting(doc: Doc | None, key: str, value: Any) -> Doc:
    out = _fresh(doc, MONITORING_TEMPLATE)
    out[key] = value
    return out


# Customer information (N09/N10) -----------------------------------------------------------------------
CUSTOMER_TEMPLATE: Doc = {"requests": []}


def customer_requested(doc: Doc | None, request: Mapping[str, Any], answer: str, at: datetime) -> Doc:
    reference = request.get("idToken") or request.get("customerIdentifier") or request.get("customerCertificate")
    return _request(doc, "requests", {"request_id": request["requestId"], "report": request["report"],
                                      "clear": request["clear"], "customer": reference, "answer": answer,
                                      "requested_at": iso(at), "parts": {}, "data": "", "complete": False},
                    CUSTOMER_TEMPLATE)


def customer_reported(doc: Doc | None, notification: Mapping[str, Any]) -> Doc:
    out = _fresh(doc, CUSTOMER_TEMPLATE)
    request_id = notification["requestId"]
    entry = next((e for e in out["requests"] if e["request_id"] == request_id), None)
    if entry is None:
        entry = {"request_id": request_id, "answer": None, "parts": {}, "data": "", "complete": False}
        out["requests"] = _bounded(out["requests"] + [entry])
    entry["parts"][str(notification["seqNo"])] = notification["data"]
    entry["data"] = "".join(entry["parts"][k] for k in sorted(entry["parts"], key=int))
    if not notification.get("tbc", False):
        entry["complete"] = True
    return out


# Display messages (O) ---------------------------------------------------------------------------------------
DISPLAY_TEMPLATE: Doc = {"messages": [], "reported": [], "reported_at": None}


def _message(info: Mapping[str, Any]) -> Doc:
    content = info.get("message", {})
    return {"id": info["id"], "priority": info.get("priority"), "state": info.get("state"),
            "content": content.get("content"), "format": content.get("format"), "language": content.get("language"),
            "start_date_time": info.get("startDateTime"), "end_date_time": info.get("endDateTime"),
            "transaction_id": info.get("transactionId"), "display": info.get("display")}


def display_message_set(doc: Doc | None, request: Mapping[str, Any], status: str, at: datetime) -> Doc:
    out = _fresh(doc, DISPLAY_TEMPLATE)
    message = {**_message(request["message"]), "status": status, "set_at": iso(at)}
    out["messages"] = _bounded([m for m in out["messages"] if m["id"] != message["id"]] + [message])
    return out


def display_message_cleared(doc: Doc | None, message_id: int, status: str) -> Doc:
    out = _fresh(doc, DISPLAY_TEMPLATE)
    if status == "Accepted":
        out["messages"] = [m for m in out["messages"] if m["id"] != message_id]
        out["reported"] = [m for m in out["reported"] if m["id"] != message_id]
    return out


def display_messages_reported(doc: Doc | None, notification: Mapping[str, Any], first_part: bool,
                              at: datetime) -> Doc:
    out = _fresh(doc, DISPLAY_TEMPLATE)
    reported = [] if first_part else out["reported"]
    out["reported"] = _bounded(reported + [_message(i) for i in notification.get("messageInfo", [])])
    out["reported_at"] = iso(at)
    return out


# Reservations (H) -----------------------------------------------------------------------------------------
ENDED = frozenset({"Cancelled", "Expired", "Removed", "Used", "Occupied", "Rejected", "Faulted", "Unavailable"})


def reservation(request: Mapping[str, Any], station_id: str, answer: str, at: datetime) -> Doc:
    group = request.get("groupIdToken")
    return {"reservation_id": request["id"], "station_id": station_id, "evse_id": request.get("evseId"),
            "connector_type": request.get("connectorType"), "id_token": request["idToken"]["idToken"],
            "id_token_type": request["idToken"]["type"], "group_id": group["idToken"] if group else None,
            "expiry": request["expiryDateTime"], "status": answer, "created_at": iso(at), "updated_at": iso(at),
            "transaction_id": None}


def reservation_status(doc: Doc, status: str, at: datetime, transaction_id: str | None = None) -> Doc:
    out = copy.deepcopy(doc)
    out["status"] = status
    out["updated_at"] = iso(at)
    if transaction_id is not None:
        out["transaction_id"] = transaction_id
    return out


def reservation_view(doc: Doc, now: datetime) -> Doc:
    """The reservation as the API shows it: expired by our clock when the station never said so."""
    out = dict(doc)
    expiry = datetime.fromisoformat(out["expiry"].replace("Z", "+00:00"))
    if out["status"] == "Accepted" and expiry <= now:
        out["status"] = "Expired"
    out["active"] = out["status"] == "Accepted"
    return out
