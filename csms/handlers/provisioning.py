"""Boot, heartbeat and connector status (OCPP 2.0.1 blocks B and G)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from csms.handlers import router
from csms.handlers.common import now, ocpp_time

if TYPE_CHECKING:
    from csms.connection import StationConnection

log = logging.getLogger("csms.registration")


@router.on("BootNotification")
async def boot_notification(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    cfg = conn.daemon.config.registration
    record = await conn.daemon.store.get_station(conn.station_id)
    blocked = record is not None and record.registration == "Blocked"
    if blocked:
        status, why = "Rejected", "station is blocked by the operator"
    elif cfg.policy == "allow_unknown" or (record is not None and record.registered):
        status, why = "Accepted", "registered" if record is not None and record.registered else "policy allows unknown stations"
    elif cfg.policy == "approve_unknown":
        status, why = "Pending", "unknown station waits for operator approval"
    else:
        status, why = "Rejected", "unknown station and policy is registered_only"
    # The record keeps "Blocked" (an operator decision) rather than the answer we gave.
    stored = "Blocked" if blocked else status
    await conn.daemon.store.record_boot(conn.station_id, payload, stored, now())
    conn.accepted = status == "Accepted"
    cs = payload["chargingStation"]
    (log.info if status == "Accepted" else log.warning)(
        "%s boot %s (%s %s, reason %s): %s", conn.station_id, status, cs.get("vendorName"), cs.get("model"),
        payload.get("reason"), why)
    conn.publish("station.booted", status=status, vendor=cs.get("vendorName"), model=cs.get("model"))
    interval = cfg.heartbeat_interval_s if status == "Accepted" else cfg.pending_retry_interval_s
    response: dict[str, Any] = {"currentTime": ocpp_time(), "interval": interval, "status": status}
    if status != "Accepted":
        # A known but not (yet) registered station is as unregistered as a new one; only an
        # operator's block is "Blocked".
        response["statusInfo"] = {"reasonCode": "Blocked" if blocked else "Unregistered",
                                  "additionalInfo": why[:512]}
    return response


@router.on("Heartbeat")
async def heartbeat(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    return {"currentTime": ocpp_time()}


@router.on("StatusNotification")
async def status_notification(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    evse, connector, status = payload["evseId"], payload["connectorId"], payload["connectorStatus"]
    await conn.daemon.store.set_connector_status(conn.station_id, evse, connector, status, now())
    conn.publish("connector.status", evse_id=evse, connector_id=connector, status=status)
    return {}
