"""Boot, heartbeat, connector status, Authorize and DataTransfer (OCPP 1.6 Core).

The decisions are the version-neutral ones of csms/domain/registration.py (the same registration
policy and the same id-token store as 2.0.1); this module only translates the 1.6 wire format.
A 1.6 StatusNotification also carries what 2.0.1 says in ``chargingState`` (Charging, SuspendedEV,
SuspendedEVSE): for a connector with a running transaction it becomes that transaction's state.
"""

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
from csms.ocpp.v16.authorization import id_tag_info
from csms.ocpp.v16.transactions import charging_state_changed

log = logging.getLogger("csms.registration")

#: 1.6 ChargePointStatus -> the domain's (2.0.1) connector status.
CONNECTOR_STATUS = {"Available": "Available", "Preparing": "Occupied", "Charging": "Occupied",
                    "SuspendedEVSE": "Occupied", "SuspendedEV": "Occupied", "Finishing": "Occupied",
                    "Reserved": "Reserved", "Unavailable": "Unavailable", "Faulted": "Faulted"}
#: 1.6 statuses that are a transaction's charging state (2.0.1 ChargingStateEnumType).
CHARGING_STATES = {"Charging": "Charging", "SuspendedEV": "SuspendedEV", "SuspendedEVSE": "SuspendedEVSE",
                   "Preparing": "EVConnected", "Finishing": "EVConnected"}


def evse_of(connector_id: int) -> tuple[int, int]:
    """(evse, connector) of the domain for a 1.6 connector: connector 0 is the whole charge point."""
    return (connector_id, 1) if connector_id > 0 else (0, 0)


def boot_info(payload: dict[str, Any]) -> BootInfo:
    """A 1.6 BootNotification.req in the domain's terms."""
    return BootInfo(vendor=payload.get("chargePointVendor"), model=payload.get("chargePointModel"),
                    serial_number=payload.get("chargePointSerialNumber") or payload.get("chargeBoxSerialNumber"),
                    firmware_version=payload.get("firmwareVersion"), reason=None)


def routes(deps: HandlerDeps) -> Mapping[str, Handler]:
    stations, config, authorizer, messages = deps.stations, deps.registration, deps.authorizer, deps.messages

    async def boot_notification(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        decision = decide_boot(await stations.get_station(session.station_id), config)
        boot = boot_info(payload)
        await stations.record_boot(session.station_id, boot, decision.stored, now())
        await remember_version(stations, session.station_id, session.version.subprotocol)
        session.accepted = decision.status == "Accepted"
        (log.info if session.accepted else log.warning)(
            "%s boot %s (OCPP 1.6, %s %s): %s", session.station_id, decision.status, boot.vendor, boot.model,
            decision.why)
        session.publish(StationBooted(station_id=session.station_id, status=decision.status, vendor=boot.vendor,
                                      model=boot.model))
        return {"currentTime": ocpp_time(), "interval": decision.interval_s, "status": decision.status}

    async def heartbeat(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        return {"currentTime": ocpp_time()}

    async def status_notification(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        evse, connector = evse_of(payload["connectorId"])
        status = CONNECTOR_STATUS[payload["status"]]
        await stations.set_connector_status(session.station_id, evse, connector, status, now())
        if payload["status"] == "Faulted" or payload["errorCode"] != "NoError":
            await messages.record_station_message(session.station_id, "StatusNotification", payload, now())
        session.publish(ConnectorStatusChanged(station_id=session.station_id, evse_id=evse, connector_id=connector,
                                               status=status))
        state = CHARGING_STATES.get(payload["status"])
        if state is not None and evse > 0:
            await charging_state_changed(deps.transactions, session, evse, state, payload.get("timestamp"))
        return {}

    async def authorize(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        return {"idTagInfo": await id_tag_info(authorizer, payload["idTag"])}

    async def data_transfer(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        # No vendor extensions are implemented; keep the message so a lab can see what was sent.
        await messages.record_station_message(session.station_id, "DataTransfer", payload, now())
        return {"status": "UnknownVendorId"}

    return {"BootNotification": boot_notification, "Heartbeat": heartbeat, "StatusNotification": status_notification,
            "Authorize": authorize, "DataTransfer": data_transfer}
