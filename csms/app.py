"""The composition root: builds every part of the daemon and hands each only the interfaces it needs.

Nothing else constructs services or reaches into another part: the gateway gets the websocket
config and the edge context, each OCPP version's handlers their :class:`HandlerDeps`, the grid
its :class:`GridDeps`, the operator API an :class:`ApiContext`. The daemon owns the lifecycle:
``start()`` opens the store, builds the parts the config asks for and starts them; ``stop()``
undoes it in reverse.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import signal
import ssl
import time
from collections import ChainMap
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from csms.api.http import ApiContext
from csms.api.operations import execute_forwarded
from csms.api.server import ApiServer
from csms.billing import Billing
from csms.bus import LocalBus
from csms.cluster import Cluster, StationKey, default_node_id
from csms.cluster_grid import (
    GridFeed,
    GridLeadership,
    LeadingGrid,
    NotLeading,
    RemoteLink,
    RoutedGridCommands,
    execute_grid_forwarded,
    reconcile_forever,
)
from csms.collector import COLLECT_AFTER_RESIGN_S, collect_frozen_later, paused_then_frozen
from csms.commands import Commands
from csms.config import Config, api_port, api_token_file
from csms.domain.events import StationConnected, StationDisconnected
from csms.domain.records import StationRecord
from csms.domain.registration import VERSION_KEY, Authorizer
from csms.edge.connection import EdgeContext, StationConnection, Trace
from csms.edge.gateway import Gateway
from csms.errorlog import ErrorLog
from csms.grid.service import Grid
from csms.interfaces import CertificateSigner, Clock, Component, GridService, HandshakeCheck, MessageGate, Spawner
from csms.metrics import Metrics
from csms.ocpp.package import HandlerDeps, Router
from csms.ocpp.versions import DEFAULT_VERSION, VERSIONS
from csms.operations import Operations
from csms.operations_config import firmware_certificate
from csms.security.component import LAB_MODE_WARNING, Security
from csms.security.contracts import Iso15118, build_iso15118
from csms.store.base import Store
from csms.store.factory import open_store
from csms.store.redis_store import RedisStore

log = logging.getLogger("csms")

LAST_SEEN_FLUSH_S = 5.0


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclasses.dataclass(frozen=True)
class TermMetrics:
    """The grid's metrics of one leadership term (their own registry: a later term registers anew)."""

    registry: CollectorRegistry


@dataclasses.dataclass(frozen=True)
class TermDeps:
    """What the leader's grid part uses: the merged event feed, routed and fenced commands, every
    node's stations."""

    bus: GridFeed
    metrics: TermMetrics
    commands: RoutedGridCommands
    connections: Mapping[str, Any]
    spawner: Spawner

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        return self.spawner.spawn(coro, name)


class Daemon:
    """One central system process. ``clock`` is the grid's (simulated time in the demo and tests);
    the protocol edge always timestamps with the wall clock."""

    def __init__(self, config: Config, store: Store | None = None, *, clock: Clock = utc_now,
                 reuse_port: bool = False) -> None:
        self.config = config
        self.reuse_port = reuse_port  # one of several workers on the same ports (csms/workers.py)
        self.clock = clock
        self.store: Store = store if store is not None else open_store(config.store)
        self.bus = LocalBus()
        self.metrics = Metrics()
        self.connections: dict[str, StationConnection] = {}
        self.last_seen: dict[str, datetime] = {}
        self._trace = Trace(config.store.trace_frames, config.store.trace_ttl_s, config.store.trace_max_bytes)
        self.errors = ErrorLog()  # one traceback per incident and class, then counts (shared by every part)
        self.edge = EdgeContext(bus=self.bus, metrics=self.metrics, spawner=self, command_log=self.store,
                                trace=self._trace, last_seen=self.last_seen,
                                call_timeout_s=config.websocket.call_timeout_s, errors=self.errors)
        self.commands = Commands(self.connections, self.store, self.metrics, VERSIONS, DEFAULT_VERSION)
        self.cluster = self._cluster()
        self.gateway = Gateway(config.websocket, self.edge, self.store, self.connections, self.cluster,
                               reuse_port=reuse_port)
        # The optional parts, built at start() from the config (None when not configured).
        self.security: Security | None = None
        self.grid: Grid | None = None  # with several nodes: only while this node leads the grid
        self.leadership: GridLeadership | None = None
        self.api: ApiServer | None = None
        self.operations: Operations | None = None
        self.billing: Billing | None = None
        self.routers: dict[str, Router] = {}
        self.components: list[Component] = []
        self._term_grid: Grid | None = None  # the grid part of this node's current leadership term
        self._reconciler: asyncio.Task[Any] | None = None  # its drift repair against the store
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False

    # What the parts share ---------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """Run a background job owned by the daemon (kept referenced, errors logged, cancelled at stop)."""
        task = asyncio.get_running_loop().create_task(coro, name=name or None)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Keyed by the job's kind (its name up to the station id), so an outage logs one traceback.
            self.errors.failed(log, f"background job {task.get_name().split(' ')[0]!r}", exc,
                               f"{task.get_name()!r} failed")

    def station_trace(self, station_id: str) -> list[tuple[str, str, str]]:
        return self._trace.get(station_id)

    @property
    def ws_port(self) -> int:
        return self.gateway.port

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        return self.security.ssl_context if self.security is not None else None

    @property
    def handshake_checks(self) -> list[HandshakeCheck]:
        return [self.security.authenticator] if self.security is not None else []

    @property
    def message_gate(self) -> MessageGate | None:
        return self.security.message_gate if self.security is not None else None

    @property
    def certificate_signer(self) -> CertificateSigner | None:
        return self.security.signer if self.security is not None else None

    def readiness(self) -> dict[str, bool]:
        server = self.gateway.server
        checks = {"daemon_started": self._started, "station_endpoint": server is not None and server.is_serving()}
        if self.cluster is not None:  # a node whose lease lapsed is not in the directory's eyes
            checks["cluster_lease"] = self.cluster.lease_held
        return checks

    # Building ---------------------------------------------------------------------------------
    def _build(self) -> None:
        """The optional parts the config asks for, each handed its interfaces."""
        config = self.config
        self.billing = Billing(config.tariffs, self.store, self.store, self.store)
        self.operations = Operations(self.commands, self.store, self.store, self.store, self.store,
                                     firmware_certificate(config.firmware))
        if config.security is not None:  # station authentication, TLS, CA, edge limits
            self.security = Security(config.security, self.store, self.bus, config.registration, self.connections,
                                     self, self.metrics, self.operations)
            self.edge.gate = self.security.message_gate
            self.components.append(self.security)
        else:
            log.warning(LAB_MODE_WARNING)
        deps = HandlerDeps(stations=self.store, transactions=self.store, smart_charging=self.store,
                           device_model=self.store, messages=self.store, registration=config.registration,
                           authorizer=Authorizer(self.store, config.registration), signer=self.certificate_signer,
                           reports=self.operations, iso15118=self._iso15118(), billing=self.billing,
                           documents=self.store)
        self.routers = {sp: package.build_router(deps) for sp, package in VERSIONS.items()}
        if config.grid is not None and self.cluster is None:  # limit signals and the grid controller
            self.grid = Grid(config.grid, self, self.clock, store=self.store)
            self.components.append(self.grid)
        if config.api.enabled:  # operator API and dashboard
            context = ApiContext(store=self.store, connections=self.connections, bus=self.bus, commands=self.commands,
                                 metrics=self.metrics, station_trace=self.station_trace, readiness=self.readiness,
                                 version=DEFAULT_VERSION.version, operations=self.operations,
                                 grid=self._grid_service(),
                                 billing=self.billing, listeners=self.gateway.listeners, errors=self.errors,
                                 versions={sp: package.version for sp, package in VERSIONS.items()},
                                 openadr=self.grid.signals.openadr if self.grid is not None else None,
                                 cluster=self.cluster,
                                 grid_leader=self._grid_leader_url if self.leadership_wanted else None)
            self.api = ApiServer(config.api, context, token_file=api_token_file(config), port=api_port(config),
                                 reuse_port=self.reuse_port)
            self.components.append(self.api)
        if self.leadership_wanted:  # after the API: the leader key carries its address
            self.leadership = self._grid_leadership()
            self.components.append(self.leadership)

    def _cluster(self) -> Cluster | None:
        """This node's membership of several nodes on one Redis (None: one node, the default)."""
        cluster, store = self.config.cluster, self.config.store
        if cluster is None:
            return None
        node = Cluster(store.redis_url, store.redis_prefix, cluster.node_id or default_node_id(),
                       lease_s=cluster.lease_s,
                       forward_timeout_s=cluster.forward_timeout_s or self.config.websocket.call_timeout_s + 5.0,
                       spawner=self, errors=self.errors, station_key=self._station_key())
        node.local = lambda: list(self.connections)
        node.attach_bus(self.bus)
        node.executor = self._execute_forwarded
        node.on_release = self._released
        node.on_reclaim = self._reclaimed
        node.on_lost = self._lost
        return node

    def _station_key(self) -> StationKey:
        """The key of a station's record in the shared Redis store, which the cluster's sweep marks."""
        if not isinstance(self.store, RedisStore):
            raise TypeError("a cluster needs the Redis store (the nodes share their records there)")
        return self.store.keys.station

    def _released(self, stations: list[str]) -> None:
        """Stations of a dead node, released here: gone, for every node's grid and live stream."""
        for station_id in stations:
            if station_id not in self.connections:
                self.bus.publish(StationDisconnected(station_id=station_id))

    def _lost(self, stations: list[str]) -> None:
        """Stations that reconnected to another node while our lease had lapsed: our sockets are stale."""
        for station_id in stations:
            link = self.connections.get(station_id)
            if link is not None:
                self.spawn(link.close(1001, "this station is connected to another node now"),
                           f"close-stale {station_id}")

    def _reclaimed(self, stations: list[str]) -> None:
        """Our stations, claimed back after our lease had lapsed: to the others they are back now."""
        for station_id in stations:
            link = self.connections.get(station_id)
            if link is not None:
                self.bus.publish(StationConnected(station_id=station_id, accepted=link.accepted,
                                                  subprotocol=link.version.subprotocol, resumed=True))

    async def _execute_forwarded(self, request: dict[str, Any]) -> dict[str, Any]:
        """A command another node sent here: the leader's grid commands (fenced) or an API command."""
        if request.get("kind") == "grid":
            if self.leadership is None:
                raise RuntimeError("this node takes no part in grid control")
            return await execute_grid_forwarded(self.commands, self.leadership.fence, request)
        return await execute_forwarded(self.commands, self.operations, request)

    # Grid control with several nodes ----------------------------------------------------------
    def _grid_service(self) -> GridService | None:
        """What the API sees of the grid: with several nodes, whichever term this node leads."""
        return LeadingGrid(lambda: self.grid, self._controller) if self.leadership_wanted else self.grid

    @property
    def leadership_wanted(self) -> bool:
        return self.cluster is not None and self.config.grid is not None

    def _grid_leadership(self) -> GridLeadership:
        assert self.cluster is not None
        store, cluster = self.config.store, self.cluster
        return GridLeadership(store.redis_url, store.redis_prefix, cluster.node_id, lease_s=cluster.lease_s,
                              api_url=self._api_url, lead=self._lead_grid, resign=self._resign_grid,
                              node_lease=lambda: cluster.lease_held, spawner=self, errors=self.errors,
                              keeper=cluster.keeper)

    @property
    def node_id(self) -> str:
        return self.cluster.node_id if self.cluster is not None else ""

    def _controller(self) -> dict[str, Any]:
        token = self.leadership.token if self.leadership is not None else None
        return {"node": self.node_id, "epoch": token}

    def _api_url(self) -> str:
        """Where the other nodes reach this node's API (the grid leader's): ``cluster.api_url``, else
        where it listens. A worker (one port shared by several) gives its own second port instead."""
        advertised = self.config.cluster.api_url if self.config.cluster is not None else None
        if self.api is None:
            return (advertised or "").rstrip("/")
        if not self.reuse_port:
            return advertised.rstrip("/") if advertised else self.api.url
        base = urlsplit(advertised or self.api.url)
        host = base.hostname or "127.0.0.1"
        return f"{base.scheme}://{f'[{host}]' if ':' in host else host}:{self.api.own_port}"

    async def _grid_leader_url(self) -> str | None:
        """Where the grid's API answers: None here (this node runs the grid part), else the leading
        node's API address; NotLeading while no node runs it."""
        if self.grid is not None:
            return None
        leader = await self.leadership.leader() if self.leadership is not None else None
        if leader is None or leader.node == self.node_id or not leader.api_url:
            raise NotLeading("no node runs the grid controller at this moment")
        return leader.api_url

    async def _lead_grid(self, epoch: int) -> None:
        """This node won the election: build the grid part on the shared state and start it, with no
        garbage collection meanwhile and what it read kept out of later ones (csms/collector.py)."""
        try:
            with paused_then_frozen():
                await self._take_over(epoch)
        finally:  # also after a takeover that failed or was cancelled: what it froze is freed
            self.spawn(collect_frozen_later(), "collect what the takeover froze")

    async def _take_over(self, epoch: int) -> None:
        assert self.cluster is not None and self.leadership is not None and self.config.grid is not None
        started = time.monotonic()
        feed = GridFeed(self.bus, here=self.connections, owner=self.cluster.owner)
        self.cluster.grid_feed = feed  # the others' station events are held from now on
        registry = CollectorRegistry()
        self.metrics.extra = [registry]
        listed = await self.store.list_stations()  # once for the whole takeover (30,000: seconds each)
        links = self._remote_links(await self.cluster.live_owners(), listed)
        listed_at = time.monotonic()
        deps = TermDeps(bus=feed, metrics=TermMetrics(registry), spawner=self,
                        commands=RoutedGridCommands(self.commands, self.connections, self.cluster, self.leadership),
                        # Live: the stations that connect here while the state is read back (their
                        # events came before the grid listened) are taken as connected when it attaches.
                        connections=ChainMap(self.connections, links))
        grid = Grid(self.config.grid, deps, self.clock, store=self.store)
        self._term_grid = grid
        await grid.start(listed, listening=feed.release)  # held events in before the first plan
        self.grid = grid
        self._reconciler = self.spawn(reconcile_forever(self.store, grid.sessions, feed, self.errors),
                                      "grid session reconcile")
        took = time.monotonic() - started
        # A takeover slower than a lease is worth a warning: the stations wait for control that long.
        log.log(logging.WARNING if took > self.leadership.lease_s else logging.INFO,
                "grid: controller running on node %s (epoch %d) after %.1f s: %d stations listed in %.1f s, "
                "its state read back in %.1f s, %d events of other nodes held meanwhile", self.leadership.node_id,
                epoch, took, len(deps.connections), listed_at - started, time.monotonic() - listed_at, feed.released)

    def _remote_links(self, owners: Mapping[str, str], listed: list[StationRecord]) -> dict[str, RemoteLink]:
        """The stations other live nodes hold (``owners``: the live directory), with the OCPP version
        each last connected with (from ``listed``: one listing, not a read per station)."""
        assert self.cluster is not None
        records = {r.station_id: r for r in listed}
        links: dict[str, RemoteLink] = {}
        for station_id, node in owners.items():
            if node == self.cluster.node_id:
                continue
            record = records.get(station_id)
            package = VERSIONS.get(str(record.extra.get(VERSION_KEY))) if record is not None else None
            links[station_id] = RemoteLink(station_id, (package or DEFAULT_VERSION).version)
        return links

    async def _resign_grid(self) -> None:
        """This node no longer leads: stop its grid part (the next leader reads the store again)."""
        grid, self._term_grid, self.grid = self._term_grid, None, None
        if self._reconciler is not None:
            self._reconciler.cancel()
            self._reconciler = None
        if self.cluster is not None:
            feed, self.cluster.grid_feed = self.cluster.grid_feed, None
            if feed is not None:
                await feed.stop()
        self.metrics.extra = []
        if grid is not None:
            try:
                await grid.stop()
            except Exception:  # noqa: BLE001 - the node keeps serving its stations
                log.exception("grid: stopping the controller after losing the lead failed")
            # The term's state was frozen (csms/collector.py): free it once it has let go.
            self.spawn(collect_frozen_later(COLLECT_AFTER_RESIGN_S), "collect the resigned grid")

    def _iso15118(self) -> Iso15118:
        iso = self.config.iso15118
        provider = iso.contract_certificates if iso is not None else None
        return build_iso15118(iso.trust_anchors_file if iso is not None else None,
                              iso.ocsp_timeout_s if iso is not None else 5.0,
                              iso.ocsp_cache_s if iso is not None else 300.0,
                              dataclasses.asdict(provider) if provider is not None else None)

    # Lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open()
        if self.cluster is not None:
            # Several nodes: only the stations this node held before (and those of dead nodes) are gone.
            await self.cluster.open()
        else:
            # After a crash the records may still say "connected": nobody is, until they reconnect.
            for station in await self.store.list_stations():
                if station.connected:
                    station.connected = False
                    await self.store.put_station(station)
        self._build()
        tls = self.config.security.tls if self.config.security is not None else None
        await self.gateway.start(self.routers, self.ssl_context, self.handshake_checks,
                                 tls.port if tls is not None else None)
        for component in self.components:
            await component.start()
        self.spawn(self._flush_last_seen_forever(), "flush last-seen")
        if self.cluster is not None:
            self.cluster.start()
        self._started = True
        gc.collect()
        gc.freeze()  # modules, config, schemas: never garbage; keep them out of every full collection

    async def stop(self) -> None:
        """Stop accepting, close station sockets (1001), stop components, flush the store."""
        if not self._started:
            return
        self._started = False
        await self.gateway.stop()
        if self.cluster is not None:
            await self.cluster.close()
        for component in reversed(self.components):
            try:
                await component.stop()
            except Exception:  # noqa: BLE001 - keep shutting down the rest
                log.exception("stopping %r failed", component)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush_last_seen()
        await self.store.close()
        log.info("stopped")

    async def _flush_last_seen(self) -> None:
        if self.last_seen:
            batch = dict(self.last_seen)
            self.last_seen.clear()
            try:
                await self.store.touch_stations(batch)
            except Exception:
                for station_id, at in batch.items():  # keep them for the next round (newer times win)
                    self.last_seen.setdefault(station_id, at)
                raise

    async def _flush_last_seen_forever(self) -> None:
        """Every few seconds: last-seen times to the store, departed stations' traces out of memory.
        A store outage is logged (once per incident) and the next round tries again."""
        while True:
            await asyncio.sleep(LAST_SEEN_FLUSH_S)
            self._trace.sweep()
            try:
                await self._flush_last_seen()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive an outage
                self.errors.failed(log, "last-seen flush", exc, "last-seen times not stored yet")
            else:
                if self.errors.active:
                    self.errors.succeeded(log, "last-seen flush")

    async def run_until_signalled(self, started: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully; ``started`` is called once
        everything listens (a worker tells its supervisor)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        if started is not None:
            started()
        try:
            await stop.wait()
            log.info("signal received: shutting down")
        finally:
            await self.stop()
