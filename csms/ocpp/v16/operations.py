"""The operator's operations (local lists, reservations, firmware, logs, certificates ...) as OCPP 1.6
spells them.

:class:`csms.operations.Operations` builds each request in the domain's terms (the 2.0.1 form) and
keeps what it changes in the station's documents; for a 1.6 station :func:`adapt` turns the request
into its 1.6 counterpart and the station's answer back into the 2.0.1 form the documents read. A
firmware update with a signature goes as the security extensions' SignedUpdateFirmware, a plain one
as UpdateFirmware; GetLog, InstallCertificate, GetInstalledCertificateIds and DeleteCertificate are
the security extensions' messages. What 1.6 has no counterpart for (display messages, monitoring,
customer information, firmware publishing, network profiles, reports) raises ActionNotInVersion.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from csms.ocpp.package import Payload
from csms.ocpp.v16.commands import ActionNotInVersion, refuse

Back = Callable[[Payload], Payload]


def _same(response: Payload) -> Payload:
    return response


@dataclass(frozen=True)
class Adapted:
    """A domain request as one version sends it, and how its answer reads in the domain's terms."""

    action: str
    payload: Payload
    back: Back = field(default=_same)


#: Certificate types of 2.0.1 InstallCertificate / GetInstalledCertificateIds -> 1.6 CertificateUse.
_CERTIFICATE_USE = {"CSMSRootCertificate": "CentralSystemRootCertificate",
                    "ManufacturerRootCertificate": "ManufacturerRootCertificate"}
_UNCHANGED = frozenset({"CancelReservation", "ClearCache", "DeleteCertificate", "GetLog"})


def adapt(action: str, payload: Payload) -> Adapted:
    """The 1.6 request for a domain request (raises ActionNotInVersion / InvalidRequest)."""
    if action in _UNCHANGED:  # same name and same shape in 1.6 (core or security extensions)
        return Adapted(action, payload)
    builder = _BUILDERS.get(action)
    if builder is None:
        raise ActionNotInVersion(action)
    return builder(payload)


def _send_local_list(p: Payload) -> Adapted:
    entries = []
    for entry in p.get("localAuthorizationList", []):
        item: Payload = {"idTag": entry["idToken"]["idToken"]}
        info = entry.get("idTokenInfo")
        if info is not None:
            tag_info: Payload = {"status": info["status"] if info["status"] in (
                "Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx") else "Invalid"}
            if "cacheExpiryDateTime" in info:
                tag_info["expiryDate"] = info["cacheExpiryDateTime"]
            if "groupIdToken" in info:
                tag_info["parentIdTag"] = info["groupIdToken"]["idToken"]
            item["idTagInfo"] = tag_info
        entries.append(item)
    out: Payload = {"listVersion": p["versionNumber"], "updateType": p["updateType"]}
    if entries:
        out["localAuthorizationList"] = entries

    def back(r: Payload) -> Payload:  # 1.6 NotSupported has no 2.0.1 word: the list was not taken
        return {"status": r["status"] if r["status"] in ("Accepted", "VersionMismatch") else "Failed"}
    return Adapted("SendLocalList", out, back)


def _get_local_list_version(p: Payload) -> Adapted:
    return Adapted("GetLocalListVersion", {}, lambda r: {"versionNumber": r["listVersion"]})


def _reserve_now(p: Payload) -> Adapted:
    out: Payload = {"connectorId": p.get("evseId", 0), "expiryDate": p["expiryDateTime"],
                    "idTag": p["idToken"]["idToken"], "reservationId": p["id"]}
    if "groupIdToken" in p:
        out["parentIdTag"] = p["groupIdToken"]["idToken"]
    return Adapted("ReserveNow", out)


def _update_firmware(p: Payload) -> Adapted:
    firmware = p["firmware"]
    retry: Payload = {k: p[k] for k in ("retries", "retryInterval") if k in p}
    if "signature" in firmware and "signingCertificate" in firmware:
        return Adapted("SignedUpdateFirmware", {"requestId": p["requestId"], "firmware": dict(firmware), **retry})
    # A plain 1.6 UpdateFirmware answers nothing but that it got the request.
    return Adapted("UpdateFirmware", {"location": firmware["location"], "retrieveDate": firmware["retrieveDateTime"],
                                      **retry}, lambda r: {"status": "Accepted"})


def _install_certificate(p: Payload) -> Adapted:
    use = _CERTIFICATE_USE.get(p["certificateType"])
    if use is None:
        raise refuse("InstallCertificate", "certificateType", f"{p['certificateType']!r} cannot be installed on an "
                   f"OCPP 1.6 station (only {', '.join(_CERTIFICATE_USE)})")
    return Adapted("InstallCertificate", {"certificateType": use, "certificate": p["certificate"]})


def _get_installed_certificate_ids(p: Payload) -> Adapted:
    types = p.get("certificateType") or []
    if len(types) != 1 or types[0] not in _CERTIFICATE_USE:
        raise refuse("GetInstalledCertificateIds", "certificateType", "OCPP 1.6 asks for one type at a time: "
                   f"give exactly one of {', '.join(_CERTIFICATE_USE)}")
    asked = types[0]

    def back(r: Payload) -> Payload:
        out: Payload = {"status": r["status"]}
        if r.get("certificateHashData"):
            out["certificateHashDataChain"] = [{"certificateType": asked, "certificateHashData": h}
                                               for h in r["certificateHashData"]]
        return out
    return Adapted("GetInstalledCertificateIds", {"certificateType": _CERTIFICATE_USE[asked]}, back)


def _data_transfer(p: Payload) -> Adapted:
    out = dict(p)
    if "data" in out and not isinstance(out["data"], str):  # 1.6 data is a string
        out["data"] = json.dumps(out["data"], separators=(",", ":"))
    return Adapted("DataTransfer", out)


_BUILDERS: dict[str, Callable[[Payload], Adapted]] = {
    "SendLocalList": _send_local_list, "GetLocalListVersion": _get_local_list_version, "ReserveNow": _reserve_now,
    "UpdateFirmware": _update_firmware, "InstallCertificate": _install_certificate,
    "GetInstalledCertificateIds": _get_installed_certificate_ids, "DataTransfer": _data_transfer,
}


def adapter(action: str, payload: Payload) -> tuple[str, Payload, Back]:
    """:func:`adapt` as the version table's ``adapt`` hook takes it."""
    adapted = adapt(action, dict(payload))
    return adapted.action, adapted.payload, adapted.back


