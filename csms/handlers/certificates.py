"""Certificate messages (OCPP 2.0.1 blocks A and M).

Until the daemon has a certificate authority configured these answer a clear Rejected/Failed with
a reason, so a station knows to retry later rather than wait for a certificate that never comes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from csms.handlers import router
from csms.handlers.common import now

if TYPE_CHECKING:
    from csms.connection import StationConnection

_NO_CA = {"reasonCode": "NoCertAuthority",  # reasonCode: at most 20 characters
          "additionalInfo": "this central system has no certificate authority configured"}


@router.on("SignCertificate")
async def sign_certificate(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    signer = conn.daemon.certificate_signer
    await conn.daemon.store.record_station_message(conn.station_id, "SignCertificate", payload, now())
    if signer is None:
        return {"status": "Rejected", "statusInfo": _NO_CA}
    return await signer(conn, payload)


@router.on("Get15118EVCertificate")
async def get_15118_ev_certificate(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    await conn.daemon.store.record_station_message(conn.station_id, "Get15118EVCertificate", payload, now())
    return {"status": "Failed", "exiResponse": "", "statusInfo": {
        "reasonCode": "NoContractProvider", "additionalInfo": "no ISO 15118 contract certificate pool is connected"}}


@router.on("GetCertificateStatus")
async def get_certificate_status(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    return {"status": "Failed", "statusInfo": {
        "reasonCode": "NoOCSPResponder", "additionalInfo": "no OCSP responder is configured"}}
