"""Status notifications (diagnostics, firmware, signed firmware, logs), security events and
SignCertificate from OCPP 1.6 stations (Firmware Management and the security extensions).

They are kept as they arrived, like their 2.0.1 counterparts; LogStatusNotification and the firmware
statuses also reach the operations that asked for them (their 2.0.1 names where 1.6 has its own:
DiagnosticsStatusNotification is a log upload's status, SignedFirmwareStatusNotification a firmware
update's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from csms.domain.events import SecurityEvent, StationNotification
from csms.interfaces import StationSession
from csms.ocpp.common import now
from csms.ocpp.package import Handler, HandlerDeps, StationReports
from csms.store.base import MessageLog

#: 1.6 action -> the 2.0.1 action the operations know it as (None: kept only).
KEPT: dict[str, str | None] = {
    "DiagnosticsStatusNotification": None, "FirmwareStatusNotification": "FirmwareStatusNotification",
    "SignedFirmwareStatusNotification": "FirmwareStatusNotification", "LogStatusNotification": "LogStatusNotification",
}


def _kept(messages: MessageLog, reports: StationReports | None, action: str, as_action: str | None) -> Handler:
    async def handler(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        await messages.record_station_message(session.station_id, action, payload, now())
        if reports is not None and as_action is not None:
            await reports.station_message(session.station_id, as_action, payload)
        session.publish(StationNotification(station_id=session.station_id, action=action, payload=payload))
        return {}
    handler.__name__ = action
    return handler


def routes(deps: HandlerDeps) -> Mapping[str, Handler]:
    messages, signer = deps.messages, deps.signer

    async def security_event_notification(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        await messages.record_security_event(session.station_id, payload["type"], payload["timestamp"],
                                             payload.get("techInfo"), now())
        session.publish(SecurityEvent(station_id=session.station_id, type=payload["type"],
                                      tech_info=payload.get("techInfo")))
        return {}

    async def sign_certificate(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        """The CSR is signed by the daemon's CA (CertificateSigned follows, 1.6 form: the chain only);
        without a CA it is Rejected (1.6 has no statusInfo to say why)."""
        await messages.record_station_message(session.station_id, "SignCertificate", payload, now())
        if signer is None:
            return {"status": "Rejected"}
        answer = await signer(session, payload)
        return {"status": "Accepted" if answer.get("status") == "Accepted" else "Rejected"}

    return {**{action: _kept(messages, deps.reports, action, as_action) for action, as_action in KEPT.items()},
            "SecurityEventNotification": security_event_notification, "SignCertificate": sign_certificate}
