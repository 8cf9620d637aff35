"""Certificate messages (OCPP 2.0.1 blocks A and M).

Until the daemon has a certificate authority configured these answer a clear Rejected/Failed with
a reason, so a station knows to retry later rather than wait for a certificate that never comes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from csms.interfaces import StationSession
from csms.ocpp.common import now
from csms.ocpp.package import Handler, HandlerDeps

_NO_CA = {"reasonCode": "NoCertAuthority",  # reasonCode: at most 20 characters
          "additionalInfo": "this central system has no certificate authority configured"}


def routes(deps: HandlerDeps) -> Mapping[str, Handler]:
    messages, signer, iso15118 = deps.messages, deps.signer, deps.iso15118

    async def sign_certificate(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        await messages.record_station_message(session.station_id, "SignCertificate", payload, now())
        if signer is None:
            return {"status": "Rejected", "statusInfo": _NO_CA}
        return await signer(session, payload)

    async def get_15118_ev_certificate(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        await messages.record_station_message(session.station_id, "Get15118EVCertificate", payload, now())
        if iso15118 is None:
            return {"status": "Failed", "exiResponse": "", "statusInfo": {
                "reasonCode": "NoContractProvider", "additionalInfo": "no ISO 15118 contract certificate pool"}}
        return await iso15118.ev_certificate(session.station_id, payload)

    async def get_certificate_status(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        if iso15118 is None:
            return {"status": "Failed", "statusInfo": {
                "reasonCode": "NoOCSPResponder", "additionalInfo": "no OCSP client is configured"}}
        return await iso15118.certificate_status(payload["ocspRequestData"])

    return {"SignCertificate": sign_certificate, "Get15118EVCertificate": get_15118_ev_certificate,
            "GetCertificateStatus": get_certificate_status}
