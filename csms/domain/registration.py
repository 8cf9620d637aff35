"""Who may use the central system: the registration policy and the id-token rules.

Version-neutral decisions: a BootNotification (2.0.1) or a 1.6 BootNotification both become
:func:`decide_boot`; Authorize, TransactionEvent and StartTransaction all ask
:class:`Authorizer`. The handlers of each OCPP version only translate to and from their wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

from csms.configcheck import bounds
from csms.domain.records import IdTokenRecord, StationRecord
from csms.store.base import IdTokenStore, StationStore


@dataclass(frozen=True)
class RegistrationConfig:
    """The ``registration:`` config section."""

    # allow_unknown: any station is Accepted; approve_unknown: unknown stations are Pending until an
    # operator registers them; registered_only: unknown stations are Rejected.
    policy: Literal["allow_unknown", "approve_unknown", "registered_only"] = "allow_unknown"
    heartbeat_interval_s: int = field(default=300, metadata=bounds(1, 86400))
    pending_retry_interval_s: int = field(default=60, metadata=bounds(1, 86400))
    accept_unknown_id_tokens: bool = False
    # NoAuthorization tokens (free charging) skip the token lookup only where the operator allows it.
    accept_no_authorization: bool = False


HOLD_KEY = "hold"  # StationRecord.extra: the operator keeps this station Pending (the value: why)
VERSION_KEY = "ocpp_version"  # StationRecord.extra: the subprotocol of the station's latest connection


async def remember_version(stations: StationStore, station_id: str, subprotocol: str) -> None:
    """Keep the OCPP version a station connected with in its record (shown while it is away).
    Called at connect for a known station and right after the boot of a new one, never at
    departure: a whole-record write then could undo an operator's change (a block) made meanwhile."""
    record = await stations.get_station(station_id)
    if record is not None and record.extra.get(VERSION_KEY) != subprotocol:
        record.extra[VERSION_KEY] = subprotocol
        await stations.put_station(record)


@dataclass(frozen=True)
class BootDecision:
    status: Literal["Accepted", "Pending", "Rejected"]  # the answer the station gets
    stored: str  # what the station record keeps: the status, or "Blocked" (an operator decision)
    why: str
    interval_s: int  # heartbeat interval when Accepted, else when to retry the boot
    reason_code: str | None = None  # for an answer other than Accepted: "Blocked" or "Unregistered"


def decide_boot(record: StationRecord | None, config: RegistrationConfig) -> BootDecision:
    """The answer to a station's boot, from its record (None: never seen) and the policy."""
    blocked = record is not None and record.registration == "Blocked"
    registered = record is not None and record.registered
    hold = record.extra.get(HOLD_KEY) if record is not None else None
    status: Literal["Accepted", "Pending", "Rejected"]
    if blocked:
        status, why = "Rejected", "station is blocked by the operator"
    elif hold is not None:
        return BootDecision("Pending", "Pending", f"held by the operator: {hold}" if hold else "held by the operator",
                            config.pending_retry_interval_s, "OperatorHold")
    elif config.policy == "allow_unknown" or registered:
        status, why = "Accepted", "registered" if registered else "policy allows unknown stations"
    elif config.policy == "approve_unknown":
        status, why = "Pending", "unknown station waits for operator approval"
    else:
        status, why = "Rejected", "unknown station and policy is registered_only"
    if status == "Accepted":
        return BootDecision("Accepted", "Accepted", why, config.heartbeat_interval_s)
    # A known but not (yet) registered station is as unregistered as a new one; only an operator's
    # block is "Blocked".
    return BootDecision(status, "Blocked" if blocked else status, why, config.pending_retry_interval_s,
                        "Blocked" if blocked else "Unregistered")


def accepted_at_connect(record: StationRecord | None) -> bool:
    """Whether a (re)connecting station may send more than BootNotification before booting again."""
    return record is not None and record.registration == "Accepted"


@dataclass(frozen=True)
class TokenDecision:
    status: str  # Accepted | Blocked | Expired | Invalid | Unknown ...
    cache_expiry: datetime | None = None
    group_id: str | None = None


class Authorizer:
    """Id-token decisions, for every message that carries a token.

    Every token type is looked up, `Central` included (a made-up Central token must not start a
    charge); only `NoAuthorization` (free charging) skips the lookup, and only where
    `registration.accept_no_authorization` allows it.
    """

    def __init__(self, tokens: IdTokenStore, config: RegistrationConfig) -> None:
        self.tokens = tokens
        self.config = config

    async def decide(self, id_token: str, token_type: str | None) -> TokenDecision:
        if token_type == "NoAuthorization" and self.config.accept_no_authorization:
            return TokenDecision("Accepted")
        record = await self.tokens.get_id_token(id_token)
        if record is None:
            if self.config.accept_unknown_id_tokens:
                return TokenDecision("Accepted")
            # C04.FR.01: a key code (PIN) that is not valid here is Invalid, not merely unknown.
            return TokenDecision("Invalid" if token_type == "KeyCode" else "Unknown")
        return token_decision(record, datetime.now(timezone.utc))


def token_decision(record: IdTokenRecord, now: datetime) -> TokenDecision:
    status = record.status
    if record.expiry is not None and record.expiry <= now and status == "Accepted":
        status = "Expired"
    return TokenDecision(status, record.expiry, record.group_id or None)
