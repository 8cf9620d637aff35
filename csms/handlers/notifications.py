"""Status notifications kept as they arrived (firmware, logs, security, customer data, displays,
reservations) and DataTransfer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from csms.handlers import router
from csms.handlers.common import now

if TYPE_CHECKING:
    from csms.connection import StationConnection


def _kept(action: str) -> None:
    async def handler(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
        await conn.daemon.store.record_station_message(conn.station_id, action, payload, now())
        conn.publish(f"station.{action}", payload=payload)
        return {}
    handler.__name__ = action
    router.on(action)(handler)


for _action in ("FirmwareStatusNotification", "LogStatusNotification", "PublishFirmwareStatusNotification",
                "NotifyCustomerInformation", "NotifyDisplayMessages", "ReservationStatusUpdate"):
    _kept(_action)


@router.on("SecurityEventNotification")
async def security_event_notification(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    await conn.daemon.store.record_security_event(conn.station_id, payload["type"], payload["timestamp"],
                                                  payload.get("techInfo"), now())
    conn.publish("station.security_event", type=payload["type"], tech_info=payload.get("techInfo"))
    return {}


@router.on("DataTransfer")
async def data_transfer(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    # No vendor extensions are implemented; keep the message so a lab can see what was sent.
    await conn.daemon.store.record_station_message(conn.station_id, "DataTransfer", payload, now())
    return {"status": "UnknownVendorId",
            "statusInfo": {"reasonCode": "UnknownVendor",
                           "additionalInfo": f"no DataTransfer extension for vendor {payload['vendorId']!r}"[:512]}}
