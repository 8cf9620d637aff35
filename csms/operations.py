"""The OCPP 2.0.1 operations an operator runs without writing OCPP (issue 17), with what they leave
behind: local authorisation lists, reservations, firmware, certificates, logs, monitoring,
customer information and display messages.

Each operation checks its body beyond the schema (csms/ocpp/v201/operations.py: a
:class:`BodyError` names the field, nothing is sent), sends through :class:`Commands` and keeps
the answer in the station's documents (csms/domain/operations.py, stored by a
:class:`DocumentStore`). What stations report later (status notifications, reports) lands in the
same documents through :meth:`Operations.station_message`, called by the handlers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from cryptography import x509

from csms.domain import operations as state
from csms.domain.records import IdTokenRecord
from csms.interfaces import Commands
from csms.ocpp.v201 import operations as v201
from csms.ocpp.v201.operations import BodyError
from csms.store.base import CommandLog, DeviceModelStore, DocumentStore, IdTokenStore

log = logging.getLogger("csms.operations")
Payload = dict[str, Any]
RESERVATIONS = "reservations"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def token_entry(record: IdTokenRecord) -> Payload:
    """An AuthorizationData entry (idToken + idTokenInfo) of the local list, from the token's record."""
    info: Payload = {"status": record.status}
    if record.expiry is not None:
        info["cacheExpiryDateTime"] = v201.ocpp_time(record.expiry)
    if record.group_id:
        info["groupIdToken"] = {"idToken": record.group_id, "type": "Central"}
    return {"idToken": {"idToken": record.id_token, "type": record.type}, "idTokenInfo": info}


def _reservation_key(reservation_id: int) -> str:
    return f"{reservation_id:010d}"


def _cleared(doc: Payload | None, response: Payload) -> Payload:
    return state.monitors_cleared(doc, response)


class Operations:
    """Typed 2.0.1 operations with kept state (built by the composition root)."""

    def __init__(self, commands: Commands, documents: DocumentStore, tokens: IdTokenStore,
                 device_model: DeviceModelStore, command_log: CommandLog, firmware_certificate: str | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.commands = commands
        self.command_log = command_log
        self.documents = documents
        self.tokens = tokens
        self.device_model = device_model
        self.firmware_certificate = firmware_certificate
        self.clock = clock
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._reports: dict[tuple[str, int], bool] = {}  # display-message reports with parts still to come

    # Documents ---------------------------------------------------------------------------------
    async def document(self, station_id: str, kind: str) -> Payload | None:
        return await self.documents.get_document(station_id, kind)

    async def _update(self, station_id: str, kind: str, change: Callable[[Payload | None], Payload]) -> Payload:
        """Read, change and write one document; one writer per document at a time."""
        async with self._locks[(station_id, kind)]:
            doc = change(await self.documents.get_document(station_id, kind))
            await self.documents.put_document(station_id, kind, doc)
            return doc

    async def _number(self, name: str) -> int:
        return await self.documents.next_number(name)

    async def _token(self, token: str, field: str) -> IdTokenRecord:
        record = await self.tokens.get_id_token(token)
        if record is None:
            raise BodyError(field, f"unknown id token {token!r} (add it with POST /api/id-tokens first)")
        return record

    # Simple typed commands ----------------------------------------------------------------------
    async def simple(self, station_id: str, name: str, body: Mapping[str, Any]) -> Payload:
        """get-report, set-network-profile, clear-cache, data-transfer: built and sent, nothing kept."""
        if name == "get-report":
            return await self.commands.operation(station_id, "GetReport",
                                            v201.get_report(body, await self._number("request")))
        if name == "set-network-profile":
            return await self.commands.operation(station_id, "SetNetworkProfile", {
                "configurationSlot": body["configuration_slot"], "connectionData": dict(body["connection_data"])})
        if name == "clear-cache":
            return await self.commands.operation(station_id, "ClearCache", {})
        if name == "data-transfer":
            return await self.commands.operation(station_id, "DataTransfer", v201.data_transfer(body))
        raise KeyError(name)

    # Local authorisation list (D) ----------------------------------------------------------------
    async def send_local_list(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        update_type = body["update_type"]
        doc = await self.document(station_id, state.LOCAL_LIST)
        current = list((doc or state.LOCAL_LIST_TEMPLATE)["id_tokens"])
        wanted = [*body.get("id_tokens", []), *body.get("add", []), *body.get("remove", [])]
        info: dict[str, Payload | None] = {}
        for token in wanted:
            record = await self.tokens.get_id_token(token)
            info[token] = token_entry(record) if record is not None else None
        entries, after = v201.local_list_entries(update_type, body, current, info)
        return await self._send_list(station_id, update_type, entries, after)

    async def _send_list(self, station_id: str, update_type: str, entries: list[Payload],
                         after: list[str]) -> Payload:
        version = state.local_list_next_version(await self.document(station_id, state.LOCAL_LIST))
        payload: Payload = {"versionNumber": version, "updateType": update_type}
        if entries:
            payload["localAuthorizationList"] = entries
        response = await self.commands.operation(station_id, "SendLocalList", payload)
        at = self.clock()
        await self._update(station_id, state.LOCAL_LIST, lambda d: state.local_list_sent(
            d, update_type, version, after, response["status"], at))
        return response

    async def get_local_list_version(self, station_id: str) -> Payload:
        response = await self.commands.operation(station_id, "GetLocalListVersion", {})
        await self._update(station_id, state.LOCAL_LIST,
                           lambda d: state.local_list_reported(d, response["versionNumber"]))
        return response

    async def forget_from_local_list(self, station_id: str, token: str) -> None:
        """N10.FR.02: a customer cleared from the station also leaves its local list."""
        doc = await self.document(station_id, state.LOCAL_LIST)
        if doc is None or token not in doc["id_tokens"]:
            return
        record = await self.tokens.get_id_token(token)
        entry = {"idToken": {"idToken": token, "type": record.type if record is not None else "ISO14443"}}
        await self._send_list(station_id, "Differential", [entry], [t for t in doc["id_tokens"] if t != token])

    # Reservations (H) --------------------------------------------------------------------------
    async def reserve_now(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        record = await self._token(body["id_token"], "id_token")
        id_token = {"idToken": record.id_token, "type": body.get("id_token_type", record.type)}
        group = body.get("group_id_token", record.group_id)
        group_token = {"idToken": group, "type": "Central"} if group else None
        reservation_id = body.get("reservation_id") or await self._number("reservation")
        request = v201.reserve_now({**body, "reservation_id": reservation_id}, reservation_id, id_token,
                                   group_token, self.clock())
        response = await self.commands.operation(station_id, "ReserveNow", request)
        doc = state.reservation(request, station_id, response["status"], self.clock())
        await self.documents.put_document(RESERVATIONS, _reservation_key(reservation_id), doc)
        return response

    async def cancel_reservation(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        reservation_id = body["reservation_id"]
        doc = await self.documents.get_document(RESERVATIONS, _reservation_key(reservation_id))
        if doc is None or doc["station_id"] != station_id:
            raise BodyError("reservation_id", f"station {station_id!r} has no reservation {reservation_id}")
        response = await self.commands.operation(station_id, "CancelReservation", {"reservationId": reservation_id})
        if response["status"] == "Accepted":
            await self.reservation_changed(reservation_id, "Cancelled")
        return response

    async def reservation_changed(self, reservation_id: int, status: str, transaction_id: str | None = None) -> None:
        key = _reservation_key(reservation_id)
        async with self._locks[(RESERVATIONS, key)]:
            doc = await self.documents.get_document(RESERVATIONS, key)
            if doc is not None:
                await self.documents.put_document(RESERVATIONS, key, state.reservation_status(
                    doc, status, self.clock(), transaction_id))

    async def reservation(self, reservation_id: int) -> Payload | None:
        doc = await self.documents.get_document(RESERVATIONS, _reservation_key(reservation_id))
        return state.reservation_view(doc, self.clock()) if doc is not None else None

    async def reservations(self, station_id: str | None = None, active: bool | None = None,
                           limit: int = 1000) -> list[Payload]:
        now = self.clock()
        views = [state.reservation_view(d, now) for _, d in await self.documents.list_documents(RESERVATIONS, 100_000)]
        views = [v for v in views if (station_id is None or v["station_id"] == station_id)
                 and (active is None or v["active"] == active)]
        return views[-limit:]

    # Firmware (L) ------------------------------------------------------------------------------
    async def update_firmware(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        request = v201.update_firmware(body, await self._number("request"), self.firmware_certificate, self.clock())
        response = await self.commands.operation(station_id, "UpdateFirmware", request)
        at = self.clock()
        await self._update(station_id, state.FIRMWARE,
                           lambda d: state.firmware_requested(d, request, response["status"], at))
        return response

    async def publish_firmware(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        request = v201.publish_firmware(body, await self._number("request"))
        response = await self.commands.operation(station_id, "PublishFirmware", request)
        at = self.clock()
        await self._update(station_id, state.FIRMWARE,
                           lambda d: state.publish_requested(d, request, response["status"], at))
        return response

    async def unpublish_firmware(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        request = v201.unpublish_firmware(body)
        response = await self.commands.operation(station_id, "UnpublishFirmware", request)
        at = self.clock()
        await self._update(station_id, state.FIRMWARE,
                           lambda d: state.unpublished(d, request["checksum"], response["status"], at))
        return response

    # Certificates (M) --------------------------------------------------------------------------
    async def install_certificate(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        request = v201.install_certificate(body)
        cert = x509.load_pem_x509_certificate(request["certificate"].encode())
        response = await self.commands.operation(station_id, "InstallCertificate", request)
        at = self.clock()
        await self._update(station_id, state.CERTIFICATES, lambda d: state.certificate_installed(
            d, request["certificateType"], format(cert.serial_number, "x"), cert.subject.rfc4514_string(),
            response["status"], at))
        return response

    async def get_installed_certificate_ids(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        types = list(body.get("certificate_types", []))
        response = await self.commands.operation(station_id, "GetInstalledCertificateIds",
                                            {"certificateType": types} if types else {})
        at = self.clock()
        await self._update(station_id, state.CERTIFICATES,
                           lambda d: state.certificates_reported(d, types or None, response, at))
        return response

    async def delete_certificate(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        if "certificate_hash_data" in body:
            hash_data = dict(body["certificate_hash_data"])
        elif "serial_number" in body:
            found = state.installed_hash_data(await self.document(station_id, state.CERTIFICATES),
                                              body["serial_number"])
            if found is None:
                raise BodyError("serial_number", "no installed certificate with this serial number was reported; "
                                                 "ask with get-installed-certificate-ids first")
            hash_data = found
        else:
            raise BodyError("serial_number", "give serial_number or certificate_hash_data")
        response = await self.commands.operation(station_id, "DeleteCertificate", {"certificateHashData": hash_data})
        if response["status"] == "Accepted":
            await self._update(station_id, state.CERTIFICATES,
                               lambda d: state.certificate_deleted(d, hash_data["serialNumber"]))
        return response

    async def certificate_issued(self, station_id: str, certificate_type: str, serial_number: str,
                                 not_after: datetime) -> None:
        at = self.clock()
        await self._update(station_id, state.CERTIFICATES, lambda d: state.certificate_issued(
            d, certificate_type, serial_number, not_after, at))

    async def certificate_delivered(self, station_id: str, serial_number: str, status: str) -> None:
        await self._update(station_id, state.CERTIFICATES,
                           lambda d: state.certificate_delivered(d, serial_number, status))

    # Logs and monitoring (N) ---------------------------------------------------------------------
    async def get_log(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        request = v201.get_log(body, await self._number("request"))
        response = await self.commands.operation(station_id, "GetLog", request)
        at = self.clock()
        await self._update(station_id, state.LOGS, lambda d: state.log_requested(d, request, response, at))
        return response

    async def _items_per_message(self, station_id: str, instance: str) -> int | None:
        return v201.items_per_message(await self.device_model.list_variables(station_id), instance)

    async def set_variable_monitoring(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        request = {"setMonitoringData": [dict(i) for i in body["items"]]}
        response = await self.commands.operation(station_id, "SetVariableMonitoring", request)
        await self._update(station_id, state.MONITORING, lambda d: state.monitors_set(d, request, response))
        return response

    async def set_monitoring_base(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        response = await self.commands.operation(station_id, "SetMonitoringBase",
                                                 {"monitoringBase": body["monitoring_base"]})
        if response["status"] == "Accepted":
            await self._update(station_id, state.MONITORING,
                               lambda d: state.monitoring_setting(d, "base", body["monitoring_base"]))
        return response

    async def set_monitoring_level(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        response = await self.commands.operation(station_id, "SetMonitoringLevel", {"severity": body["severity"]})
        if response["status"] == "Accepted":
            await self._update(station_id, state.MONITORING,
                               lambda d: state.monitoring_setting(d, "level", body["severity"]))
        return response

    async def clear_variable_monitoring(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        """N06.FR.04: in as many messages as the station's ItemsPerMessage ClearVariableMonitoring needs."""
        results: list[Payload] = []
        size = await self._items_per_message(station_id, "ClearVariableMonitoring")
        for ids in v201.chunks(list(body["ids"]), size):
            response = await self.commands.operation(station_id, "ClearVariableMonitoring", {"id": ids})
            results.extend(response["clearMonitoringResult"])
            await self._update(station_id, state.MONITORING, functools.partial(_cleared, response=response))
        return {"clearMonitoringResult": results}

    async def get_monitoring_report(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        return await self.commands.operation(station_id, "GetMonitoringReport",
                                        v201.get_monitoring_report(body, await self._number("request")))

    # Customer information (N09/N10) --------------------------------------------------------------
    async def customer_information(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        id_token = None
        if "id_token" in body:
            record = await self.tokens.get_id_token(body["id_token"])
            id_token = {"idToken": body["id_token"], "type": record.type if record is not None else "ISO14443"}
        request = v201.customer_information(body, await self._number("request"), id_token)
        response = await self.commands.operation(station_id, "CustomerInformation", request)
        at = self.clock()
        await self._update(station_id, state.CUSTOMER_INFORMATION,
                           lambda d: state.customer_requested(d, request, response["status"], at))
        if body["clear"] and response["status"] == "Accepted" and "id_token" in body:
            await self.forget_from_local_list(station_id, body["id_token"])
        return response

    # Display messages (O) ----------------------------------------------------------------------
    async def set_display_message(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        message_id = body.get("id") or await self._number("display-message")
        request = v201.set_display_message(body, message_id)
        response = await self.commands.operation(station_id, "SetDisplayMessage", request)
        at = self.clock()
        await self._update(station_id, state.DISPLAY_MESSAGES,
                           lambda d: state.display_message_set(d, request, response["status"], at))
        return response

    async def get_display_messages(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        return await self.commands.operation(station_id, "GetDisplayMessages",
                                        v201.get_display_messages(body, await self._number("request")))

    async def clear_display_message(self, station_id: str, body: Mapping[str, Any]) -> Payload:
        response = await self.commands.operation(station_id, "ClearDisplayMessage", {"id": body["id"]})
        await self._update(station_id, state.DISPLAY_MESSAGES,
                           lambda d: state.display_message_cleared(d, body["id"], response["status"]))
        return response

    # Remote starts (F01/F02) ---------------------------------------------------------------------
    async def remote_start_granted(self, station_id: str, remote_start_id: int, id_token: str) -> bool:
        """Whether this station accepted our RequestStartTransaction of ``remote_start_id`` for this token.

        A remote start's token (an app user, type Central) need not be an id-token record: the
        central system handed it out itself, so the TransactionEvent bringing it back is accepted.
        """
        for record in await self.command_log.list_commands(station_id, limit=200):
            request, response = record.get("request") or {}, record.get("response") or {}
            if (record.get("action") == "RequestStartTransaction" and response.get("status") == "Accepted"
                    and request.get("remoteStartId") == remote_start_id
                    and (request.get("idToken") or {}).get("idToken") == id_token):
                return True
        return False

    async def remote_start_tag_granted(self, station_id: str, id_tag: str, connector_id: int) -> bool:
        """The 1.6 form: an Accepted RemoteStartTransaction for this id tag on this connector (or none
        named), among the station's recent commands (1.6 has no remoteStartId to match)."""
        for record in await self.command_log.list_commands(station_id, limit=200):
            request, response = record.get("request") or {}, record.get("response") or {}
            if (record.get("action") == "RemoteStartTransaction" and response.get("status") == "Accepted"
                    and request.get("idTag") == id_tag and request.get("connectorId", connector_id) == connector_id):
                return True
        return False

    # What stations report --------------------------------------------------------------------------
    async def station_message(self, station_id: str, action: str, payload: Payload) -> None:
        """Fold a station's report or status notification into the document it belongs to."""
        at = self.clock()
        if action == "FirmwareStatusNotification":
            await self._update(station_id, state.FIRMWARE, lambda d: state.firmware_status(
                d, payload.get("requestId"), payload["status"], at))
        elif action == "PublishFirmwareStatusNotification":
            await self._update(station_id, state.FIRMWARE, lambda d: state.publish_status(
                d, payload.get("requestId"), payload["status"], payload.get("location"), at))
        elif action == "LogStatusNotification":
            await self._update(station_id, state.LOGS, lambda d: state.log_status(
                d, payload.get("requestId"), payload["status"], at))
        elif action == "NotifyCustomerInformation":
            await self._update(station_id, state.CUSTOMER_INFORMATION, lambda d: state.customer_reported(d, payload))
        elif action == "NotifyDisplayMessages":
            await self._update(station_id, state.DISPLAY_MESSAGES, lambda d: state.display_messages_reported(
                d, payload, not self._continuing(station_id, payload), at))
        elif action == "NotifyMonitoringReport":
            await self._update(station_id, state.MONITORING, lambda d: state.monitors_reported(d, payload))
        elif action == "ReservationStatusUpdate":
            await self.reservation_changed(payload["reservationId"], payload["reservationUpdateStatus"])

    def _continuing(self, station_id: str, payload: Payload) -> bool:
        """Whether a NotifyDisplayMessages continues a report whose first part we already kept."""
        key = (station_id, payload["requestId"])
        continuing = self._reports.get(key, False)
        if payload.get("tbc"):
            self._reports[key] = True
        else:
            self._reports.pop(key, None)
        return continuing
