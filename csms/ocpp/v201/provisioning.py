"""Boot, heartbeat and connector status (OCPP 2.0.1 blocks B and G)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from csms.domain.events import ConnectorStatusChanged, StationBooted
from csms.domain.records import BootInfo
from csms.domain.registration import decide_boot, remember_version
from csms.interfaces import StationSession
from csms.ocpp.common import now, ocpp_time
from csms.ocpp.package import Handler, HandlerDeps

log = logging.getLogger("csms.registration")


def boot_info(payload: dict[str, Any]) -> BootInfo:
    """A 2.0.1 BootNotificationRequest in the domain's terms."""
    cs = payload.get("chargingStation", {})
    return BootInfo(vendor=cs.get("vendorName"), model=cs.get("model"), serial_number=cs.get("serialNumber"),
                    firmware_version=cs.get("firmwareVersion"), reason=payload.get("reason"))


def routes(deps: HandlerDeps) -> Mapping[str, Handler]:
    stations, config = deps.stations, deps.registration

    async def boot_notification(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        decision = decide_boot(await stations.get_station(session.station_id), config)
        boot = boot_info(payload)
        await stations.record_boot(session.station_id, boot, decision.stored, now())
        await remember_version(stations, session.station_id, session.version.subprotocol)
        session.accepted = decision.status == "Accepted"
        (log.info if session.accepted else log.warning)(
            "%s boot %s (%s %s, reason %s): %s", session.station_id, decision.status, boot.vendor, boot.model,
            boot.reason, decision.why)
        session.publish(StationBooted(station_id=session.station_id, status=decision.status, vendor=boot.vendor,
                                      model=boot.model))
        response: dict[str, Any] = {"currentTime": ocpp_time(), "interval": decision.interval_s,
                                    "status": decision.status}
        if decision.reason_code is not None:
            response["statusInfo"] = {"reasonCode": decision.reason_code, "additionalInfo": decision.why[:512]}
        return response

    async def heartbeat(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        return {"currentTime": ocpp_time()}

    async def status_notification(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        evse, connector, status = payload["evseId"], payload["connectorId"], payload["connectorStatus"]
        await stations.set_connector_status(session.station_id, evse, connector, status, now())
        session.publish(ConnectorStatusChanged(station_id=session.station_id, evse_id=evse, connector_id=connector,
                                               status=status))
        return {}

    return {"BootNotification": boot_notification, "Heartbeat": heartbeat,
            "StatusNotification": status_notification}
