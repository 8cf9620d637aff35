"""Id-tag authorisation in OCPP 1.6 terms, from the same token store and rules as 2.0.1."""

from __future__ import annotations

from typing import Any

from csms.domain.registration import Authorizer
from csms.ocpp.common import ocpp_time

#: The domain's token verdicts that 1.6 (AuthorizationStatus) cannot say, in 1.6 words.
_TOKEN_STATUS = {"Unknown": "Invalid", "NoCredit": "Blocked", "NotAllowedTypeEVSE": "Blocked",
                 "NotAtThisLocation": "Blocked", "NotAtThisTime": "Blocked"}
_STATUSES = frozenset({"Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"})


async def id_tag_info(authorizer: Authorizer, id_tag: str) -> dict[str, Any]:
    """The 1.6 IdTagInfo for an id tag: the token store's verdict, the token's group as ``parentIdTag``."""
    decision = await authorizer.decide(id_tag, None)
    status = _TOKEN_STATUS.get(decision.status, decision.status)
    info: dict[str, Any] = {"status": status if status in _STATUSES else "Invalid"}
    if decision.cache_expiry is not None:
        info["expiryDate"] = ocpp_time(decision.cache_expiry)
    if decision.group_id:
        info["parentIdTag"] = decision.group_id[:20]
    return info
