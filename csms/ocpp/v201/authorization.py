"""Authorize (OCPP 2.0.1 block C), and the IdTokenInfoType every token-carrying message answers with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from csms.domain.registration import Authorizer
from csms.interfaces import StationSession
from csms.ocpp.package import Handler, HandlerDeps
from csms.security.contracts import combine


async def id_token_info(authorizer: Authorizer, id_token: dict[str, Any]) -> dict[str, Any]:
    """The IdTokenInfoType for a token: Accepted, Blocked, Expired, Invalid or Unknown."""
    decision = await authorizer.decide(id_token.get("idToken", ""), id_token.get("type"))
    info: dict[str, Any] = {"status": decision.status}
    if decision.cache_expiry is not None:
        info["cacheExpiryDateTime"] = decision.cache_expiry.isoformat().replace("+00:00", "Z")
    if decision.group_id:
        info["groupIdToken"] = {"idToken": decision.group_id, "type": "Central"}
    return info


def routes(deps: HandlerDeps) -> Mapping[str, Handler]:
    authorizer, iso15118, billing = deps.authorizer, deps.iso15118, deps.billing

    async def authorize(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        info = await id_token_info(authorizer, payload["idToken"])
        response: dict[str, Any] = {"idTokenInfo": info}
        certificate = await iso15118.contract_status(payload) if iso15118 is not None else None
        if certificate is not None:  # C07: the contract certificate's verdict and the token's go together
            info["status"], response["certificateStatus"] = combine(info["status"], certificate)
            if info["status"] != "Accepted":
                info.pop("groupIdToken", None)
        if billing is not None and info["status"] == "Accepted":
            message = await billing.tariff_message(info.get("groupIdToken", {}).get("idToken"))
            if message is not None:  # I01: the driver's tariff
                info["personalMessage"] = message
        return response

    return {"Authorize": authorize}
