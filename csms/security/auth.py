"""Station authentication in the websocket handshake (security profiles 1-3).

The profile a connection *offers* follows from how it arrived: a verified client certificate is
profile 3, Basic credentials over TLS profile 2, over plain TCP profile 1. The station's record
holds the profile it *must* use; weaker offers are refused (no downgrade), stronger ones are
admitted and ratchet the record up. Every refusal is the same bare 401, whatever was wrong;
the reason goes to the log and to the store as a security event (types in EVENT_TYPES).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import logging
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from csms.domain.events import SecurityEvent
from csms.domain.records import StationRecord
from csms.domain.registration import RegistrationConfig
from csms.interfaces import Bus
from csms.security import passwords
from csms.security.ratelimit import MAX_TRACKED_KEYS, FailureLimiter
from csms.security.tls import common_names, is_tls, peer_certificate
from csms.store.base import MessageLog, StationStore

log = logging.getLogger("csms.security")

NEXT_PASSWORD_KEY = "next_password_hash"  # StationRecord.extra: the rotated password not yet used

# Security event types the CSMS records about handshakes (documented in docs/security.md).
NO_CREDENTIALS = "NoStationCredentials"
INVALID_CREDENTIALS = "InvalidStationCredentials"
INVALID_CERTIFICATE = "InvalidStationCertificate"
UNKNOWN_STATION = "UnknownStation"
DOWNGRADE = "SecurityProfileDowngrade"
RATE_LIMITED = "AuthenticationRateLimited"
EVENT_TYPES = (NO_CREDENTIALS, INVALID_CREDENTIALS, INVALID_CERTIFICATE, UNKNOWN_STATION, DOWNGRADE, RATE_LIMITED)



@functools.cache
def _dummy_hash() -> str:
    """A hash to check unknown identities against, so their refusal takes as long as a wrong password."""
    return passwords.hash_password(secrets.token_hex(passwords.MIN_LENGTH))


@dataclass(frozen=True)
class Verdict:
    ok: bool
    offered: int  # the security profile the connection offered (0: no credentials at all)
    event: str = ""
    reason: str = ""
    promote: bool = False  # the station used its rotated password: make it the only one


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """(username, password) from an ``Authorization: Basic`` header; None if absent or malformed."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def has_credentials(record: StationRecord | None) -> bool:
    """Whether an operator gave this station credentials (otherwise it is unknown to authentication)."""
    return record is not None and (record.security_profile == 3
                                   or (record.security_profile in (1, 2) and bool(record.password_hash)))


class AuthStore(StationStore, MessageLog, Protocol):
    """What authentication reads and writes: station credentials and the security events."""


class StationAuthenticator:
    """The handshake check the gateway runs (a :data:`csms.interfaces.HandshakeCheck`)."""

    def __init__(self, store: AuthStore, bus: Bus, registration: RegistrationConfig, limiter: FailureLimiter) -> None:
        self.store = store
        self.bus = bus
        self.registration = registration
        self.limiter = limiter
        self._key = secrets.token_bytes(32)
        # (identity, stored hash) -> keyed digest of a password that verified: reconnects skip scrypt.
        self._verified: dict[tuple[str, str], bytes] = {}
        self._limited_logged: dict[tuple[str, str], float] = {}

    async def __call__(self, connection: ServerConnection, request: Request, identity: str) -> Response | None:
        address = connection.remote_address[0] if connection.remote_address else "?"
        record = await self.store.get_station(identity)
        # Whose budget an attempt spends depends on whether the identity has credentials: failures
        # for unknown ids never lock out the registered stations behind the same address.
        registered = has_credentials(record)
        wait = self.limiter.retry_after(address, identity, registered)
        if wait > 0:
            await self._rate_limited(address, identity, wait)
            response = connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many failed logins; retry later\n")
            response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return response
        verdict = await self._authenticate(connection, request, identity, record)
        if not verdict.ok:
            self.limiter.failure(address, identity, registered)
            await self._record(identity, verdict.event, f"from {address}: {verdict.reason}")
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "authentication failed\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="OCPP", charset="UTF-8"'
            return response
        self.limiter.success(address, identity)
        await self._update_record(record, verdict)
        log.info("%s authenticated from %s with security profile %d", identity, address, verdict.offered)
        return None

    async def _authenticate(self, connection: ServerConnection, request: Request, identity: str,
                            record: StationRecord | None) -> Verdict:
        transport = connection.transport
        cert = peer_certificate(transport)
        known = has_credentials(record)
        required = record.security_profile if known and record is not None else 0
        if cert is not None:
            cns = common_names(cert)
            if cns != [identity]:
                return Verdict(False, 3, INVALID_CERTIFICATE,
                               f"client certificate subject CN {cns} does not match the identity in the URL")
            if not known and self.registration.policy == "registered_only":
                return Verdict(False, 3, UNKNOWN_STATION, "certificate is valid but the station is not registered "
                               "and the policy is registered_only")
            return Verdict(True, 3)
        basic = basic_credentials(request)
        offered = 2 if is_tls(transport) else 1
        if basic is None:
            what = "an unusable Authorization header" if "Authorization" in request.headers else "no credentials"
            return Verdict(False, 0, NO_CREDENTIALS, f"{what} (profile {required or 'unknown'} station)")
        user, password = basic
        if not known or record is None:
            await passwords.verify_async(password, _dummy_hash())
            return Verdict(False, offered, UNKNOWN_STATION, "no credentials are registered for this identity")
        if required == 3:
            return Verdict(False, offered, DOWNGRADE, f"profile-3 station offered a password (profile {offered})")
        if user != identity:
            await passwords.verify_async(password, _dummy_hash())
            return Verdict(False, offered, INVALID_CREDENTIALS, "Basic username is not the station identity")
        promote = False
        if not await self._verify(identity, password, record.password_hash):
            promote = await self._verify(identity, password, record.extra.get(NEXT_PASSWORD_KEY))
            if not promote:
                return Verdict(False, offered, INVALID_CREDENTIALS, "wrong password")
        if offered < required:
            return Verdict(False, offered, DOWNGRADE,
                           f"profile-{required} station connected with profile {offered} (plain ws://)")
        return Verdict(True, offered, promote=promote)

    async def _verify(self, identity: str, password: str, stored: Any) -> bool:
        if not isinstance(stored, str) or not stored:
            return False
        digest = hmac.new(self._key, password.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        cached = self._verified.get((identity, stored))
        if cached is not None:
            return hmac.compare_digest(cached, digest)
        if not await passwords.verify_async(password, stored):
            return False
        if len(self._verified) >= MAX_TRACKED_KEYS:
            self._verified.clear()
        self._verified[(identity, stored)] = digest
        return True

    async def _update_record(self, record: StationRecord | None, verdict: Verdict) -> None:
        """Promote a rotated password at its first use; ratchet the profile up after a stronger login."""
        if record is None or not has_credentials(record):
            return
        changed = False
        if verdict.promote:
            record.password_hash = record.extra.pop(NEXT_PASSWORD_KEY)
            changed = True
            log.info("%s logged in with its rotated password; the previous one is no longer accepted",
                     record.station_id)
        if verdict.offered > record.security_profile:
            log.warning("%s connected with security profile %d (registered: %d); from now on it must use %d",
                        record.station_id, verdict.offered, record.security_profile, verdict.offered)
            record.security_profile = verdict.offered
            changed = True
        if changed:
            await self.store.put_station(record)

    async def _rate_limited(self, address: str, identity: str, wait: float) -> None:
        """Record the lockout once per window, not every refused attempt (that would be a store flood)."""
        now = self.limiter.clock()
        key = (address, identity)
        if self._limited_logged.get(key, -math.inf) > now:
            return
        if len(self._limited_logged) >= MAX_TRACKED_KEYS:
            self._limited_logged.clear()
        self._limited_logged[key] = now + wait
        await self._record(identity, RATE_LIMITED, f"from {address}: too many failed logins, refused for "
                                                   f"{wait:.0f} s")

    async def _record(self, identity: str, type_: str, tech_info: str) -> None:
        log.warning("station authentication refused for %s: %s (%s)", identity, type_, tech_info)
        at = datetime.now(timezone.utc)
        await self.store.record_security_event(identity, type_, at.isoformat().replace("+00:00", "Z"),
                                                      tech_info[:255], at)
        self.bus.publish(SecurityEvent(station_id=identity, type=type_, tech_info=tech_info[:255], source="csms"))
