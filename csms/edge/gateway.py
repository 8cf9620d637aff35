"""The websocket edge: handshake checks, subprotocol choice, and one StationConnection per socket.

Refusals happen in the HTTP handshake with a status and a plain-text reason, and each is logged
with the remote address, so a lab engineer sees why a charger does not get in: 404 for a path
that is not ``<prefix>/<stationId>``, 400 for an identity that is not one (a bad percent-escape,
not UTF-8, a dot segment, a control character ...), 400 for a request that is not HTTP at all.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import partial
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote_to_bytes, urlsplit
from weakref import WeakKeyDictionary

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidMessage
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from csms.config import WebsocketConfig
from csms.domain.events import StationConnected, StationDisconnected
from csms.domain.identity import MAX_IDENTITY_LENGTH, identity_problem
from csms.domain.registration import VERSION_KEY, accepted_at_connect, remember_version
from csms.edge.connection import EdgeContext, StationConnection
from csms.interfaces import HandshakeCheck, Presence
from csms.ocpp.package import Router
from csms.store.base import StationStore

log = logging.getLogger("csms.gateway")



class BadPath(ValueError):
    """The request's path is not ``<prefix>/<one segment>`` (404)."""


class BadIdentity(ValueError):
    """The path's last segment is not a station identity (400); the message says why."""


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def station_identity(path: str, prefix: str) -> str:
    """The station identity from ``<prefix>/<identity>``, percent-decoded strictly.

    Raises BadPath or BadIdentity: an escape that is not ``%`` and two hex digits, bytes that
    are not UTF-8 (``%FF`` would otherwise fold into U+FFFD, so ``CP%FF`` and ``CP%FE`` would be
    one station), and what :func:`csms.domain.identity.identity_problem` refuses.
    """
    route = urlsplit(path).path
    prefix = prefix.rstrip("/")
    if not route.startswith(prefix + "/"):
        raise BadPath(route)
    raw = route[len(prefix) + 1:]
    if not raw or "/" in raw:
        raise BadPath(route)
    if _BAD_ESCAPE.search(raw):
        raise BadIdentity("has a '%' that is not followed by two hexadecimal digits")
    try:
        identity = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadIdentity("is not UTF-8 once percent-decoded") from None
    problem = identity_problem(identity)
    if problem is not None:
        raise BadIdentity(problem)
    return identity


class StationSocket(ServerConnection):
    """A server connection that answers a request it cannot parse as HTTP with 400.

    websockets closes such a connection without a word (a raw space in the path, a header line
    without a colon, not HTTP at all); a client then cannot tell a broken request from a dead
    server. ``on_malformed(connection, cause)`` is told, to log and count it.
    """

    def __init__(self, *args: Any, on_malformed: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_malformed = on_malformed
        protocol = self.protocol
        plain_eof = protocol.send_eof

        def answer_then_eof() -> None:
            exc = protocol.handshake_exc
            if protocol.state is State.CONNECTING and isinstance(exc, InvalidMessage) and self.request is None:
                protocol.writes.append(protocol.reject(HTTPStatus.BAD_REQUEST, "malformed HTTP request\n").serialize())
                if self._on_malformed is not None:
                    self._on_malformed(self, exc.__cause__ or exc)
            plain_eof()
        protocol.send_eof = answer_then_eof  # type: ignore[method-assign]


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
                 connections: dict[str, StationConnection], presence: Presence | None = None, *,
                 reuse_port: bool = False) -> None:
        self.config = config
        self.reuse_port = reuse_port  # several worker processes listen on the same port (SO_REUSEPORT)
        self.presence = presence
        self.edge = edge
        self.stations = stations
        self.connections = connections
        self.routers: Mapping[str, Router] = {}
        self.ssl_context: ssl.SSLContext | None = None
        self.checks: Sequence[HandshakeCheck] = ()
        self.server: Server | None = None
        self.tls_server: Server | None = None  # a second, TLS listener beside a plain one (tls_port)
        self._disconnect_level = logging.INFO

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
            create_connection=cast(type[ServerConnection], partial(StationSocket, on_malformed=self._malformed)),
            ssl=ssl_context,
            server_header="Netbewust",
            reuse_port=self.reuse_port or None,
            # security: TLS handshakes get the websocket handshake's deadline too (asyncio's default is 60 s).
            ssl_handshake_timeout=cfg.handshake_timeout_s if ssl_context is not None else None,
        )
        scheme = "wss" if ssl_context is not None else "ws"
        log.info("listening for OCPP stations on %s://%s:%d%s/<stationId> (subprotocols: %s)", scheme, cfg.host,
                 int(server.sockets[0].getsockname()[1]), cfg.path_prefix.rstrip("/"), ", ".join(cfg.subprotocols))
        return server

    async def stop(self) -> None:
        """Stop accepting, close every station socket with 1001 (going away) and wait for handlers.

        The stations' disconnections are logged as one line here (one line each took seconds for
        thousands of stations with a console handler).
        """
        servers = [server for server in (self.server, self.tls_server) if server is not None]
        if not servers:
            return
        count, started = len(self.connections), time.monotonic()
        self._disconnect_level = logging.DEBUG
        for server in servers:
            server.close(close_connections=True)
        for server in servers:
            await server.wait_closed()
        log.info("closed %d station connections (1001, going away) in %.2f s", count, time.monotonic() - started)

    def _malformed(self, connection: ServerConnection, cause: BaseException) -> None:
        log.warning("refused %s: malformed HTTP request (%s: %s); answered 400",
                    connection.remote_address[0] if connection.remote_address else "?", type(cause).__name__,
                    str(cause)[:200])
        self.edge.metrics.refused.labels("http").inc()

    def _refuse(self, connection: ServerConnection, status: HTTPStatus, reason: str, why: str) -> Response:
        log.warning("refused %s %s: %s", connection.remote_address[0] if connection.remote_address else "?",
                    connection.request.path if connection.request else "", why)
        self.edge.metrics.refused.labels(reason).inc()
        return connection.respond(status, why + "\n")

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        cfg = self.config
        try:
            identity = station_identity(request.path, cfg.path_prefix)
        except BadPath:
            return self._refuse(connection, HTTPStatus.NOT_FOUND, "path",
                                f"expected path {cfg.path_prefix.rstrip('/')}/<stationId> (identity of 1-48 "
                                "characters, no spaces or '/')")
        except BadIdentity as exc:
            return self._refuse(connection, HTTPStatus.BAD_REQUEST, "identity",
                                f"the station identity in the path {exc} (an identity is 1-{MAX_IDENTITY_LENGTH} "
                                "UTF-8 characters, percent-encoded, without spaces, control characters or '/')")
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
        edge.trace.arrived(station_id)
        known = False
        try:
            record = await self.stations.get_station(station_id)
            known = record is not None
            conn.accepted = accepted_at_connect(record)
            if record is not None and record.extra.get(VERSION_KEY) != conn.version.subprotocol:
                await remember_version(self.stations, station_id, conn.version.subprotocol)
            del record  # held for the connection's lifetime otherwise
            if self.presence is not None:  # before the record says connected: readers trust the directory
                await self.presence.arrived(station_id)
            if known:
                await self.stations.set_connection_state(station_id, True, datetime.now(timezone.utc))
            log.info("%s connected from %s (%s, %s)", station_id, remote, ws.subprotocol,
                     "accepted" if conn.accepted else "must boot first")
            edge.bus.publish(StationConnected(station_id=station_id, remote=remote, accepted=conn.accepted,
                                              subprotocol=str(ws.subprotocol)))
            await conn.serve()
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001 - e.g. the store is down: close this socket, log once per incident
            edge.errors.failed(log, "station connection", exc, f"{station_id} could not be served")
            await ws.close(1011, "internal error")
        finally:
            conn.abort_pending()
            if connections.get(station_id) is conn:
                del connections[station_id]
                edge.trace.departed(station_id)
                edge.metrics.connected.set(len(connections))
                gone = True  # False: it is connected to another node by now (several nodes)
                try:
                    # Always: a station first seen in this connection got its record at boot (even when
                    # Pending or Rejected), and the update is a no-op when there is no record. Several
                    # nodes: the directory marks it, only while no other node holds the station.
                    if self.presence is not None:
                        gone = await self.presence.departed(station_id)
                    else:
                        await self.stations.set_connection_state(station_id, False, datetime.now(timezone.utc))
                except Exception as exc:  # noqa: BLE001 - the store is down: the start-up check corrects it
                    edge.errors.failed(log, "station disconnection", exc, f"{station_id} not marked disconnected")
                if gone:
                    edge.bus.publish(StationDisconnected(station_id=station_id))
            log.log(self._disconnect_level, "%s disconnected (%s)", station_id, close_description(ws))


def close_description(ws: ServerConnection) -> str:
    """How a connection ended, naming who closed it with which code (a close we sent, such as 1009 for
    a frame over the limit, is reported as that code, not as the 1006 websockets reports then)."""
    protocol = ws.protocol
    sent, rcvd = protocol.close_sent, protocol.close_rcvd
    if sent is not None and (rcvd is None or protocol.close_rcvd_then_sent is False):
        return f"close code {sent.code} sent by the central system" + (f": {sent.reason}" if sent.reason else "")
    if rcvd is not None:
        return f"close code {rcvd.code} from the station" + (f": {rcvd.reason}" if rcvd.reason else "")
    return "connection lost without a closing handshake (1006)"


#: The identity a handshake admitted, until its connection handler takes it (weak: a handshake
#: that fails after the check leaves nothing behind).
_IDENTITY: WeakKeyDictionary[ServerConnection, str] = WeakKeyDictionary()
