"""Authorize (OCPP 2.0.1 block C), and the IdTokenInfoType every token-carrying message answers with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from csms.domain.registration import Authorizer
from csms.interfaces import StationSession
from csms.ocpp.package import Handler, HandlerDeps


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
    authorizer = deps.authorizer

    async def authorize(session: StationSession, payload: dict[str, Any]) -> dict[str, Any]:
        return {"idTokenInfo": await id_token_info(authorizer, payload["idToken"])}

    return {"Authorize": authorize}
