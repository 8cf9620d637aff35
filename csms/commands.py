"""CSMS-initiated commands: the typed API the system itself uses, and the generic path.

Everything goes through :meth:`StationConnection.call`, which validates the request against the
official schema, queues it behind the station's call in flight and records the outcome. The
typed methods only build the payload and, for charging profiles, record the profile's verdict.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from csms.connection import check_request, record_command
from csms.protocol.errors import StationOffline
from csms.protocol.redaction import redact_payload, variable_value
from csms.protocol.versions import OCPP201

DEFAULT_VERSION = OCPP201  # what an offline station's request is checked against

if TYPE_CHECKING:
    from csms.app import Daemon


class Commands:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def call(self, station_id: str, action: str, payload: dict[str, Any],
                   timeout: float | None = None) -> dict[str, Any]:
        """Send any CSMS-initiated OCPP action by name (validated before it is sent)."""
        conn = self.daemon.connections.get(station_id)
        if conn is None:
            # Check the request all the same (a caller's bug should not hide behind an offline
            # station) and record the attempt, so the operator sees what could not be delivered.
            check_request(DEFAULT_VERSION, action, payload)
            at = datetime.now(timezone.utc)
            self.daemon.metrics.command(action, "offline", 0.0)
            await record_command(self.daemon.store, station_id, action, redact_payload(action, payload), "offline",
                                 None, at, at)
            raise StationOffline(station_id)
        return await conn.call(action, payload, timeout)

    # Smart charging ---------------------------------------------------------------------------
    async def set_charging_profile(self, station_id: str, evse_id: int, profile: dict[str, Any],
                                   timeout: float | None = None) -> dict[str, Any]:
        status, info, response = "error", None, None
        try:
            response = await self.call(station_id, "SetChargingProfile",
                                       {"evseId": evse_id, "chargingProfile": profile}, timeout)
            status, info = response["status"], response.get("statusInfo")
            return response
        except Exception as exc:
            status, info = type(exc).__name__, {"error": str(exc)[:500]}
            raise
        finally:
            store = self.daemon.store
            later = getattr(store, "record_charging_profile_later", None)
            if later is not None:  # write-behind (see connection.record_command): the push need not wait
                later(station_id, evse_id, profile, status, info, datetime.now(timezone.utc))
            else:
                await store.record_charging_profile(station_id, evse_id, profile, status, info,
                                                    datetime.now(timezone.utc))

    async def flush_records(self) -> None:
        """Return once every command and profile recorded so far is committed (write-behind stores)."""
        flush = getattr(self.daemon.store, "flush", None)
        if flush is not None:
            await flush()

    async def clear_charging_profile(self, station_id: str, *, profile_id: int | None = None,
                                     evse_id: int | None = None, purpose: str | None = None,
                                     stack_level: int | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {}
        if profile_id is not None:
            payload["chargingProfileId"] = profile_id
        criteria = {k: v for k, v in (("evseId", evse_id), ("chargingProfilePurpose", purpose),
                                      ("stackLevel", stack_level)) if v is not None}
        if criteria:
            payload["chargingProfileCriteria"] = criteria
        return await self.call(station_id, "ClearChargingProfile", payload)

    async def get_charging_profiles(self, station_id: str, request_id: int, *, evse_id: int | None = None,
                                    purpose: str | None = None) -> dict[str, Any]:
        criteria: dict[str, Any] = {}
        if purpose is not None:
            criteria["chargingProfilePurpose"] = purpose
        payload: dict[str, Any] = {"requestId": request_id, "chargingProfile": criteria}
        if evse_id is not None:
            payload["evseId"] = evse_id
        return await self.call(station_id, "GetChargingProfiles", payload)

    async def get_composite_schedule(self, station_id: str, evse_id: int, duration_s: int,
                                     unit: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"evseId": evse_id, "duration": duration_s}
        if unit is not None:
            payload["chargingRateUnit"] = unit
        return await self.call(station_id, "GetCompositeSchedule", payload)

    # Transactions -----------------------------------------------------------------------------
    async def request_start_transaction(self, station_id: str, remote_start_id: int, id_token: dict[str, Any],
                                        evse_id: int | None = None,
                                        charging_profile: dict[str, Any] | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"remoteStartId": remote_start_id, "idToken": id_token}
        if evse_id is not None:
            payload["evseId"] = evse_id
        if charging_profile is not None:
            payload["chargingProfile"] = charging_profile
        return await self.call(station_id, "RequestStartTransaction", payload)

    async def request_stop_transaction(self, station_id: str, transaction_id: str) -> dict[str, Any]:
        return await self.call(station_id, "RequestStopTransaction", {"transactionId": transaction_id})

    async def get_transaction_status(self, station_id: str, transaction_id: str | None = None) -> dict[str, Any]:
        return await self.call(station_id, "GetTransactionStatus",
                               {} if transaction_id is None else {"transactionId": transaction_id})

    # Station management -----------------------------------------------------------------------
    async def reset(self, station_id: str, type_: str = "OnIdle", evse_id: int | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"type": type_}
        if evse_id is not None:
            payload["evseId"] = evse_id
        return await self.call(station_id, "Reset", payload)

    async def change_availability(self, station_id: str, status: str, evse_id: int | None = None,
                                  connector_id: int | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"operationalStatus": status}
        if evse_id is not None:
            payload["evse"] = {"id": evse_id, **({"connectorId": connector_id} if connector_id is not None else {})}
        return await self.call(station_id, "ChangeAvailability", payload)

    async def unlock_connector(self, station_id: str, evse_id: int, connector_id: int) -> dict[str, Any]:
        return await self.call(station_id, "UnlockConnector", {"evseId": evse_id, "connectorId": connector_id})

    async def trigger_message(self, station_id: str, requested_message: str, evse_id: int | None = None,
                              connector_id: int | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"requestedMessage": requested_message}
        if evse_id is not None:
            payload["evse"] = {"id": evse_id, **({"connectorId": connector_id} if connector_id is not None else {})}
        return await self.call(station_id, "TriggerMessage", payload)

    async def get_variables(self, station_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """items: [{"component": {"name": ...}, "variable": {"name": ...}, "attributeType"?: ...}]"""
        response = await self.call(station_id, "GetVariables", {"getVariableData": items})
        found = [{"component": r["component"], "variable": r["variable"],
                  "attributeType": r.get("attributeType", "Actual"),
                  "value": variable_value(r["variable"]["name"], r.get("attributeValue"))}
                 for r in response["getVariableResult"] if r["attributeStatus"] == "Accepted"]
        if found:
            await self.daemon.store.record_variables(station_id, found, datetime.now(timezone.utc))
        return response

    async def set_variables(self, station_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """items: [{"component": {...}, "variable": {...}, "attributeValue": "...", "attributeType"?: ...}]"""
        response = await self.call(station_id, "SetVariables", {"setVariableData": items})
        accepted = {(r["component"]["name"], r["variable"]["name"]) for r in response["setVariableResult"]
                    if r["attributeStatus"] in ("Accepted", "RebootRequired")}
        changed = [{"component": i["component"], "variable": i["variable"],
                    "attributeType": i.get("attributeType", "Actual"),
                    "value": variable_value(i["variable"]["name"], i["attributeValue"])}
                   for i in items if (i["component"]["name"], i["variable"]["name"]) in accepted]
        if changed:
            await self.daemon.store.record_variables(station_id, changed, datetime.now(timezone.utc))
        return response

    async def get_base_report(self, station_id: str, request_id: int,
                              report_base: str = "FullInventory") -> dict[str, Any]:
        return await self.call(station_id, "GetBaseReport", {"requestId": request_id, "reportBase": report_base})
