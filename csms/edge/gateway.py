"""The websocket edge: handshake checks, subprotocol choice, and one StationConnection per socket.

Refusals happen in the HTTP handshake with a status and a plain-text reason, and each is logged
with the remote address, so a lab engineer sees why a charger does not get in.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from http import HTTPStatus
from urllib.parse import unquote, urlsplit
from weakref import WeakKeyDictionary

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from csms.config import WebsocketConfig
from csms.domain.events import StationConnected, StationDisconnected
from csms.domain.identity import valid_identity
from csms.domain.registration import accepted_at_connect
from csms.edge.connection import EdgeContext, StationConnection
from csms.interfaces import HandshakeCheck
from csms.ocpp.package import Router
from csms.store.base import StationStore

log = logging.getLogger("csms.gateway")



def station_identity(path: str, prefix: str) -> str | None:
    """The station identity from ``<prefix>/<identity>`` (percent-decoded), or None if the path is wrong."""
    route = urlsplit(path).path
    prefix = prefix.rstrip("/")
    if not route.startswith(prefix + "/"):
        return None
    raw = route[len(prefix) + 1:]
    if not raw or "/" in raw:
        return None
    identity = unquote(raw)
    return identity if valid_identity(identity) else None


_NO_HEADERS = Headers()


def _forget_handshake_headers(ws: ServerConnection) -> None:
    """Drop the handshake's request and response headers once they have served their purpose.

    websockets keeps both for the connection's lifetime (~3-4 KiB per station); with tens of
    thousands of idle stations that is a large share of the memory. The objects stay (websockets
    checks ``ws.request is None`` to recognise the handshake); only their headers go.
    """
    if ws.request is not None:
        ws.request.headers = _NO_HEADERS
    if ws.response is not None:
        ws.response.headers = _NO_HEADERS


class Gateway:
    """Accepts station websockets and keeps the registry of their connections."""

    def __init__(self, config: WebsocketConfig, edge: EdgeContext, stations: StationStore,
                 connections: dict[str, StationConnection]) -> None:
        self.config = config
        self.edge = edge
        self.stations = stations
        self.connections = connections
        self.routers: Mapping[str, Router] = {}
        self.ssl_context: ssl.SSLContext | None = None
        self.checks: Sequence[HandshakeCheck] = ()
        self.server: Server | None = None
        self.tls_server: Server | None = None  # a second, TLS listener beside a plain one (tls_port)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def listeners(self) -> list[dict[str, object]]:
        """Where stations connect: scheme and port of each listener."""
        out: list[dict[str, object]] = []
        for server, tls in ((self.server, self.ssl_context is not None and self.tls_server is None),
                            (self.tls_server, True)):
            if server is not None and server.sockets:
                out.append({"scheme": "wss" if tls else "ws", "port": int(server.sockets[0].getsockname()[1])})
        return out

    async def start(self, routers: Mapping[str, Router], ssl_context: ssl.SSLContext | None = None,
                    checks: Sequence[HandshakeCheck] = (), tls_port: int | None = None) -> None:
        """Listen; ``routers`` by subprotocol (the version table), ``checks`` run in each handshake.

        With ``tls_port`` the daemon has two listeners: plain ws:// on the websocket port (security
        profile 1) and wss:// on ``tls_port`` (profiles 2 and 3); the handshake checks hold every
        station to its registered profile, whichever listener it uses.
        """
        self.routers, self.ssl_context, self.checks = routers, ssl_context, checks
        if tls_port is not None and ssl_context is not None:
            self.server = await self._serve(self.config.port, None)
            self.tls_server = await self._serve(tls_port, ssl_context)
        else:
            self.server = await self._serve(self.config.port, ssl_context)

    async def _serve(self, port: int, ssl_context: ssl.SSLContext | None) -> Server:
        cfg = self.config
        server = await serve(
            self._handle, cfg.host, port,
            process_request=self._process_request,
            subprotocols=[Subprotocol(p) for p in cfg.subprotocols],
            max_size=cfg.max_frame_bytes,
            ping_interval=cfg.ping_interval_s,
            ping_timeout=cfg.ping_timeout_s,
            compression="deflate" if cfg.compression else None,
            open_timeout=cfg.handshake_timeout_s,
            ssl=ssl_context,
            server_header="Netbewust",
            # security: TLS handshakes get the websocket handshake's deadline too (asyncio's default is 60 s).
            ssl_handshake_timeout=cfg.handshake_timeout_s if ssl_context is not None else None,
        )
        scheme = "wss" if ssl_context is not None else "ws"
        log.info("listening for OCPP stations on %s://%s:%d%s/<stationId> (subprotocols: %s)", scheme, cfg.host,
                 int(server.sockets[0].getsockname()[1]), cfg.path_prefix.rstrip("/"), ", ".join(cfg.subprotocols))
        return server

    async def stop(self) -> None:
        """Stop accepting, close every station socket with 1001 (going away) and wait for handlers."""
        for server in (self.server, self.tls_server):
            if server is not None:
                server.close(close_connections=True)
                await server.wait_closed()

    def _refuse(self, connection: ServerConnection, status: HTTPStatus, reason: str, why: str) -> Response:
        log.warning("refused %s %s: %s", connection.remote_address[0] if connection.remote_address else "?",
                    connection.request.path if connection.request else "", why)
        self.edge.metrics.refused.labels(reason).inc()
        return connection.respond(status, why + "\n")

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        cfg = self.config
        identity = station_identity(request.path, cfg.path_prefix)
        if identity is None:
            return self._refuse(connection, HTTPStatus.NOT_FOUND, "path",
                                f"expected path {cfg.path_prefix.rstrip('/')}/<stationId> (identity of 1-48 "
                                "characters, no spaces or '/')")
        offered = [p.strip() for h in request.headers.get_all("Sec-WebSocket-Protocol") for p in h.split(",")]
        if not any(p in cfg.subprotocols for p in offered):
            return self._refuse(connection, HTTPStatus.BAD_REQUEST, "subprotocol",
                                f"station {identity!r} offered subprotocols {offered or 'none'}; this central "
                                f"system speaks {', '.join(cfg.subprotocols)}")
        for check in self.checks:
            refusal = await check(connection, request, identity)
            if refusal is not None:
                self.edge.metrics.refused.labels("auth").inc()
                return refusal
        _IDENTITY[connection] = identity
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        edge, connections = self.edge, self.connections
        station_id = _IDENTITY.pop(ws)
        router = self.routers[str(ws.subprotocol)]
        remote = ws.remote_address[0] if ws.remote_address else "?"
        conn = StationConnection(edge, router, ws, station_id, remote)
        old = connections.get(station_id)
        if old is not None:
            log.info("%s reconnected from %s; closing its previous connection", station_id, remote)
            old.abort_pending()
            # In the background: a station usually reconnects because the old socket died, and a
            # dead socket never completes the closing handshake (close_timeout would stall us).
            edge.spawner.spawn(old.ws.close(1000, "replaced by a new connection of the same station"),
                               f"close replaced connection of {station_id}")
        connections[station_id] = conn
        edge.metrics.connected.set(len(connections))
        _forget_handshake_headers(ws)
        try:
            record = await self.stations.get_station(station_id)
            known = record is not None
            conn.accepted = accepted_at_connect(record)
            del record  # held for the connection's lifetime otherwise
            if known:
                await self.stations.set_connection_state(station_id, True, datetime.now(timezone.utc))
            log.info("%s connected from %s (%s, %s)", station_id, remote, ws.subprotocol,
                     "accepted" if conn.accepted else "must boot first")
            edge.bus.publish(StationConnected(station_id=station_id, remote=remote, accepted=conn.accepted))
            await conn.serve()
        except ConnectionClosed:
            pass
        finally:
            conn.abort_pending()
            if connections.get(station_id) is conn:
                del connections[station_id]
                edge.metrics.connected.set(len(connections))
                # Always: a station first seen in this connection got its record at boot (even when
                # Pending or Rejected), and the update is a no-op when there is no record.
                await self.stations.set_connection_state(station_id, False, datetime.now(timezone.utc))
                edge.bus.publish(StationDisconnected(station_id=station_id))
            rcvd = ws.close_code
            log.info("%s disconnected (close code %s%s)", station_id, rcvd,
                     f", {ws.close_reason}" if ws.close_reason else "")


#: The identity a handshake admitted, until its connection handler takes it (weak: a handshake
#: that fails after the check leaves nothing behind).
_IDENTITY: WeakKeyDictionary[ServerConnection, str] = WeakKeyDictionary()
