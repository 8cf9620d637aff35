"""The security part of the daemon: TLS, the handshake authenticator, the CALL rate gate, the
CSR signer, and an idle-timeout sweeper (built by :func:`build_security` for the composition root)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from datetime import datetime, timezone

from csms.domain.registration import RegistrationConfig
from csms.interfaces import Bus, ConnectionRegistry, Spawner
from csms.metrics import Metrics
from csms.protocol.redaction import REDACTED, mentions_secret, redact_frame
from csms.security.auth import AuthStore, StationAuthenticator
from csms.security.ca import CertificateAuthority, CsrSigner, IssuedCertificates
from csms.security.config import SecurityConfig
from csms.security.ratelimit import FailureLimiter, MessageGate
from csms.security.tls import server_context

log = logging.getLogger("csms.security")

LAB_MODE_WARNING = ("no 'security' section in the config: LAB MODE - stations connect over plain ws:// "
                    "without any authentication; never expose this port beyond a lab network")


class _SecretsFilter(logging.Filter):
    """Blank the Authorization header and password frames in websockets' DEBUG logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            if len(args) == 2 and isinstance(args[0], str) and args[0].lower() == "authorization":
                record.args = (args[0], REDACTED)
            elif any(mentions_secret(str(a)) for a in args):
                record.args = tuple(redact_frame(str(a)) for a in args)
        return True


class Security:
    """The installed security part (a daemon component: runs the idle-timeout sweeper).

    The composition root hands ``ssl_context`` and ``authenticator`` to the gateway,
    ``message_gate`` to the connections and ``signer`` to the handlers.
    """

    def __init__(self, config: SecurityConfig, store: AuthStore, bus: Bus, registration: RegistrationConfig,
                 links: ConnectionRegistry, spawner: Spawner, metrics: Metrics,
                 issued: IssuedCertificates | None = None) -> None:
        self.config = config
        self.links = links
        self.spawner = spawner
        self.failures = FailureLimiter(config.auth_failures)
        self.authenticator = StationAuthenticator(store, bus, registration, self.failures)
        self.message_gate = MessageGate(config.message_rate, metrics)
        self.ca = CertificateAuthority.load(config.ca) if config.ca is not None else None
        self.signer = CsrSigner(self.ca, issued) if self.ca is not None else None
        self.ssl_context: ssl.SSLContext | None = server_context(config.tls) if config.tls is not None else None
        self._log_filter = _SecretsFilter()

    async def start(self) -> None:
        for name in ("websockets.server", "websockets.client"):
            logging.getLogger(name).addFilter(self._log_filter)
        if self.config.allow_plain_ws:
            log.warning("security.allow_plain_ws: stations use profile 1 over plain ws:// - their passwords cross "
                        "the network unencrypted; lab use only")
        self.spawner.spawn(self._sweep_idle_forever(), "security: idle sweeper")

    async def stop(self) -> None:
        for name in ("websockets.server", "websockets.client"):
            logging.getLogger(name).removeFilter(self._log_filter)

    def idle_stations(self) -> list[str]:
        """Connected stations that sent no CALL within idle_timeout_s (counting from their connect).

        Activity is what StationConnection.serve reports through the message gate; until that hook
        has reported any CALL at all, nobody is judged idle (an active station must never be cut).
        """
        if not self.message_gate.hooked:
            return []
        limit = self.config.idle_timeout_s
        mono, wall = time.monotonic(), datetime.now(timezone.utc)
        idle = []
        for station_id, conn in self.links.items():
            since_connect = (wall - conn.connected_at).total_seconds()
            last = self.message_gate.last_call.get(station_id)
            since_call = mono - last if last is not None else since_connect
            if min(since_connect, since_call) > limit:
                idle.append(station_id)
        return idle

    async def _sweep_idle_forever(self) -> None:
        period = max(0.05, min(self.config.idle_timeout_s / 4, 30.0))
        while True:
            await asyncio.sleep(period)
            for station_id in self.idle_stations():
                conn = self.links.get(station_id)
                if conn is not None:
                    log.warning("%s sent nothing for %g s: closing its socket (idle timeout)", station_id,
                                self.config.idle_timeout_s)
                    self.spawner.spawn(conn.close(1000, "idle timeout"), f"idle close {station_id}")
            self.message_gate.forget_others(self.links)
