"""CSMS-initiated commands: the typed API the system itself uses, and the generic path.

Each typed command is built by the station's version (:class:`csms.ocpp.package.CommandSet`) and
sent through :meth:`StationLink.call`, which validates the request against that version's
schema, queues it behind the station's call in flight and records the outcome. Commands that
change what we know (charging profiles, variables) record that here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Protocol

from csms.domain.operations import items_per_message
from csms.edge.connection import check_request
from csms.interfaces import ConnectionRegistry
from csms.metrics import Metrics
from csms.ocpp.package import CommandSet, Request, VersionPackage
from csms.protocol.errors import InvalidRequest, StationOffline
from csms.protocol.redaction import redact_payload
from csms.protocol.schemas import known_actions
from csms.protocol.version import ProtocolVersion
from csms.store.base import CommandLog, DeviceModelStore

Payload = dict[str, Any]


class CommandStore(CommandLog, DeviceModelStore, Protocol):
    """What the commands record: every call and profile, and the variables they read or wrote."""


class Commands:
    """The :class:`csms.interfaces.Commands` of one daemon: stations connected to this process."""

    def __init__(self, links: ConnectionRegistry, store: CommandStore, metrics: Metrics,
                 versions: Mapping[str, VersionPackage], default: VersionPackage) -> None:
        self.links = links
        self.store = store
        self.metrics = metrics
        self.versions = versions
        self.default = default

    def _command_set(self, station_id: str) -> CommandSet:
        link = self.links.get(station_id)
        package = self.default if link is None else self.versions[link.version.subprotocol]
        return package.commands

    def _offline_version(self, action: str) -> ProtocolVersion:
        """What a request to an offline station is checked against: the default version, or the first
        version that has the action (the API has already held it to the station's last version)."""
        for package in (self.default, *self.versions.values()):
            if action in known_actions(package.version.schema_dir):
                return package.version
        return self.default.version

    async def _send(self, station_id: str, request: Request, timeout: float | None = None) -> Payload:
        return await self.call(station_id, request.action, request.payload, timeout)

    async def call(self, station_id: str, action: str, payload: Payload, timeout: float | None = None) -> Payload:
        """Send any CSMS-initiated OCPP action by name (validated before it is sent)."""
        link = self.links.get(station_id)
        if link is None:
            # Check the request all the same (a caller's bug should not hide behind an offline
            # station) and record the attempt, so the operator sees what could not be delivered.
            check_request(self._offline_version(action), action, payload)
            at = datetime.now(timezone.utc)
            self.metrics.command(action, "offline", 0.0)
            await self.store.record_command(station_id, action, redact_payload(action, payload), "offline",
                                            None, at, at)
            raise StationOffline(station_id)
        return await link.call(action, payload, timeout)

    async def operation(self, station_id: str, action: str, payload: Payload, timeout: float | None = None) -> Payload:
        """An operation built in the domain's (2.0.1) terms, sent as the station's version spells it (its
        package's ``adapt``), the answer read back in the domain's terms. A request the version cannot
        carry raises InvalidRequest naming ``action`` (never sent)."""
        link = self.links.get(station_id)
        package = self.default if link is None else self.versions[link.version.subprotocol]
        if package.adapt is None:
            return await self.call(station_id, action, payload, timeout)
        sent_as, request, back = package.adapt(action, payload)
        try:
            return back(await self.call(station_id, sent_as, request, timeout))
        except InvalidRequest as exc:
            if sent_as == action or exc.description.startswith(f"{action}Request: "):
                raise
            rest = exc.description.split(": ", 1)[-1]
            raise InvalidRequest(exc.code, f"{action}Request: as {sent_as} ({package.version.subprotocol}): {rest}",
                                 exc.details) from None

    async def flush_records(self) -> None:
        """Return once every command and profile recorded so far is committed (write-behind stores)."""
        await self.store.flush()

    async def _parts(self, station_id: str, items: list[Payload], instance: str) -> list[list[Payload]]:
        """``items`` in messages of at most the station's DeviceDataCtrlr.ItemsPerMessage[instance]."""
        size = items_per_message(await self.store.list_variables(station_id), instance)
        if size is None or len(items) <= size:
            return [items]
        return [items[i:i + size] for i in range(0, len(items), size)]

    # Smart charging ---------------------------------------------------------------------------
    async def set_charging_profile(self, station_id: str, evse_id: int, profile: Payload,
                                   timeout: float | None = None) -> Payload:
        commands = self._command_set(station_id)
        status, info = "error", None
        try:
            response = await self._send(station_id, commands.set_charging_profile(evse_id, profile), timeout)
            status, info = commands.profile_verdict(response)
            return response
        except Exception as exc:
            status, info = type(exc).__name__, {"error": str(exc)[:500]}
            raise
        finally:
            await self.store.record_charging_profile(station_id, evse_id, profile, status, info,
                                                     datetime.now(timezone.utc))

    async def clear_charging_profile(self, station_id: str, *, profile_id: int | None = None,
                                     evse_id: int | None = None, purpose: str | None = None,
                                     stack_level: int | None = None) -> Payload:
        request = self._command_set(station_id).clear_charging_profile(profile_id, evse_id, purpose, stack_level)
        return await self._send(station_id, request)

    async def get_charging_profiles(self, station_id: str, request_id: int, *, evse_id: int | None = None,
                                    purpose: str | None = None, profile_ids: list[int] | None = None,
                                    stack_level: int | None = None, limit_source: list[str] | None = None) -> Payload:
        request = self._command_set(station_id).get_charging_profiles(request_id, evse_id, purpose, profile_ids,
                                                                      stack_level, limit_source)
        return await self._send(station_id, request)

    async def get_composite_schedule(self, station_id: str, evse_id: int, duration_s: int,
                                     unit: str | None = None) -> Payload:
        return await self._send(station_id, self._command_set(station_id).get_composite_schedule(evse_id, duration_s,
                                                                                                  unit))

    async def notify_allowed_energy_transfer(self, station_id: str, transaction_id: str,
                                             allowed: list[str]) -> Payload:
        """OCPP 2.1 (Q): the energy transfer modes a transaction may use (refused unsent for other versions)."""
        return await self.call(station_id, "NotifyAllowedEnergyTransfer",
                               {"transactionId": transaction_id, "allowedEnergyTransfer": list(allowed)})

    # Transactions -----------------------------------------------------------------------------
    async def request_start_transaction(self, station_id: str, remote_start_id: int, id_token: Payload,
                                        evse_id: int | None = None, charging_profile: Payload | None = None) -> Payload:
        request = self._command_set(station_id).request_start_transaction(remote_start_id, id_token, evse_id,
                                                                         charging_profile)
        return await self._send(station_id, request)

    async def request_stop_transaction(self, station_id: str, transaction_id: str) -> Payload:
        return await self._send(station_id, self._command_set(station_id).request_stop_transaction(transaction_id))

    async def get_transaction_status(self, station_id: str, transaction_id: str | None = None) -> Payload:
        return await self._send(station_id, self._command_set(station_id).get_transaction_status(transaction_id))

    # Station management -----------------------------------------------------------------------
    async def reset(self, station_id: str, type_: str = "OnIdle", evse_id: int | None = None) -> Payload:
        return await self._send(station_id, self._command_set(station_id).reset(type_, evse_id))

    async def change_availability(self, station_id: str, status: str, evse_id: int | None = None,
                                  connector_id: int | None = None) -> Payload:
        request = self._command_set(station_id).change_availability(status, evse_id, connector_id)
        return await self._send(station_id, request)

    async def unlock_connector(self, station_id: str, evse_id: int, connector_id: int) -> Payload:
        return await self._send(station_id, self._command_set(station_id).unlock_connector(evse_id, connector_id))

    async def trigger_message(self, station_id: str, requested_message: str, evse_id: int | None = None,
                              connector_id: int | None = None) -> Payload:
        request = self._command_set(station_id).trigger_message(requested_message, evse_id, connector_id)
        return await self._send(station_id, request)

    async def get_variables(self, station_id: str, items: list[Payload]) -> Payload:
        """items: [{"component": {"name": ...}, "variable": {"name": ...}, "attributeType"?: ...}]"""
        commands = self._command_set(station_id)
        response: Payload = {"getVariableResult": []}
        for part in await self._parts(station_id, items, "GetVariables"):  # B06.FR.05
            answer = await self._send(station_id, commands.get_variables(part))
            response["getVariableResult"].extend(commands.variable_results(part, answer))
        found = commands.variables_read(response)
        if found:
            await self.store.record_variables(station_id, found, datetime.now(timezone.utc))
        return response

    async def set_variables(self, station_id: str, items: list[Payload]) -> Payload:
        """items: [{"component": {...}, "variable": {...}, "attributeValue": "...", "attributeType"?: ...}]"""
        commands = self._command_set(station_id)
        response: Payload = {"setVariableResult": []}
        for part in await self._parts(station_id, items, "SetVariables"):
            answer = await self._send(station_id, commands.set_variables(part))
            response["setVariableResult"].extend(commands.variable_statuses(part, answer))
        changed = commands.variables_written(items, response)
        if changed:
            await self.store.record_variables(station_id, changed, datetime.now(timezone.utc))
        return response

    async def get_base_report(self, station_id: str, request_id: int,
                              report_base: str = "FullInventory") -> Payload:
        return await self._send(station_id, self._command_set(station_id).get_base_report(request_id, report_base))
