"""Status notifications kept as they arrived (firmware, logs, security, customer data, displays,
reservations) and DataTransfer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from csms.domain.events import SecurityEvent, StationNotification
from csms.interfaces import StationSession
from csms.ocpp.common import now
from csms.ocpp.package import Handler, HandlerDeps, StationReports
from csms.store.base import MessageLog

KEPT = ("FirmwareStatusNotification", "LogStatusNotification", "PublishFirmwareStatusNotification",
        "NotifyCustomerInformation", "NotifyDisplayMessages", "ReservationStatusUpdate")


def _kept(messages: MessageLog, reports: StationReports | None, action: str) -> Handler:
    async def handler(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        await messages.record_station_message(session.station_id, action, payload, now())
        if reports is not None:  # the request it reports on (firmware, log, reservation ...) gets its status
            await reports.station_message(session.station_id, action, payload)
        session.publish(StationNotification(station_id=session.station_id, action=action, payload=payload))
        return {}
    handler.__name__ = action
    return handler


def routes(deps: HandlerDeps) -> Mapping[str, Handler]:
    messages = deps.messages

    async def security_event_notification(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        await messages.record_security_event(session.station_id, payload["type"], payload["timestamp"],
                                             payload.get("techInfo"), now())
        session.publish(SecurityEvent(station_id=session.station_id, type=payload["type"],
                                      tech_info=payload.get("techInfo")))
        return {}

    async def data_transfer(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        # No vendor extensions are implemented; keep the message so a lab can see what was sent.
        await messages.record_station_message(session.station_id, "DataTransfer", payload, now())
        return {"status": "UnknownVendorId",
                "statusInfo": {"reasonCode": "UnknownVendor",
                               "additionalInfo": f"no DataTransfer extension for vendor {payload['vendorId']!r}"[:512]}}

    return {**{action: _kept(messages, deps.reports, action) for action in KEPT},
            "SecurityEventNotification": security_event_notification, "DataTransfer": data_transfer}
