"""Authorize (OCPP 2.0.1 block C): id tokens from the store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from csms.handlers import router
from csms.handlers.common import now

if TYPE_CHECKING:
    from csms.connection import StationConnection



async def id_token_info(conn: StationConnection, id_token: dict[str, Any]) -> dict[str, Any]:
    """The IdTokenInfoType for a token: Accepted, Blocked, Expired, Invalid or Unknown.

    Every token type is looked up, `Central` included (a made-up Central token must not start a
    charge); only `NoAuthorization` (free charging) skips the lookup, and only where
    `registration.accept_no_authorization` allows it.
    """
    if id_token.get("type") == "NoAuthorization" and conn.daemon.config.registration.accept_no_authorization:
        return {"status": "Accepted"}
    record = await conn.daemon.store.get_id_token(id_token.get("idToken", ""))
    if record is None:
        accept = conn.daemon.config.registration.accept_unknown_id_tokens
        return {"status": "Accepted" if accept else "Unknown"}
    info: dict[str, Any] = {"status": record.status}
    if record.expiry is not None:
        if record.expiry <= now() and record.status == "Accepted":
            info["status"] = "Expired"
        info["cacheExpiryDateTime"] = record.expiry.isoformat().replace("+00:00", "Z")
    if record.group_id:
        info["groupIdToken"] = {"idToken": record.group_id, "type": "Central"}
    return info


@router.on("Authorize")
async def authorize(conn: StationConnection, payload: dict[str, Any]) -> dict[str, Any]:
    return {"idTokenInfo": await id_token_info(conn, payload["idToken"])}
