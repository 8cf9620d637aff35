"""The daemon: wires the edge, the store, the bus and the components, and owns their lifecycle."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, Protocol

from csms.bus import Bus
from csms.commands import Commands
from csms.config import Config
from csms.connection import StationConnection, Trace
from csms.gateway import Gateway, HandshakeCheck
from csms.handlers import Router, router
from csms.metrics import Metrics
from csms.store import Store, open_store

log = logging.getLogger("csms")

LAST_SEEN_FLUSH_S = 5.0


class Component(Protocol):
    """A part of the daemon with its own lifecycle (grid controller, operator API ...)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Daemon:
    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        self.store: Store = store if store is not None else open_store(config.store)
        self.bus = Bus()
        self.metrics = Metrics()
        self.router: Router = router
        self.connections: dict[str, StationConnection] = {}
        self.last_seen: dict[str, datetime] = {}
        self.commands = Commands(self)
        self.gateway = Gateway(self)
        self.handshake_checks: list[HandshakeCheck] = []
        self.ssl_context: ssl.SSLContext | None = None
        self.certificate_signer: Any = None  # async (conn, SignCertificate payload) -> response
        self.message_gate: Any = None  # per-station CALL rate cap (csms.security.ratelimit.MessageGate)
        self.components: list[Component] = []
        self._trace = Trace(config.store.trace_frames)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False

    # Helpers used by the edge ---------------------------------------------------------------------
    def trace(self, station_id: str, direction: str, frame: str | bytes) -> None:
        self._trace.add(station_id, direction, frame)

    def station_trace(self, station_id: str) -> list[tuple[str, str, str]]:
        return self._trace.get(station_id)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """Run a background job owned by the daemon (kept referenced, errors logged, cancelled at stop)."""
        task = asyncio.get_running_loop().create_task(coro, name=name or None)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background job %r failed", task.get_name(), exc_info=task.exception())

    @property
    def ws_port(self) -> int:
        return self.gateway.port

    # Lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open()
        # After a crash the records may still say "connected": nobody is, until they reconnect.
        for station in await self.store.list_stations():
            if station.connected:
                station.connected = False
                await self.store.put_station(station)
        self.components.extend(build_components(self))
        await self.gateway.start()
        for component in self.components:
            await component.start()
        self.spawn(self._flush_last_seen_forever(), "flush last-seen")
        self._started = True
        gc.collect()
        gc.freeze()  # modules, config, schemas: never garbage; keep them out of every full collection

    async def stop(self) -> None:
        """Stop accepting, close station sockets (1001), stop components, flush the store."""
        if not self._started:
            return
        self._started = False
        await self.gateway.stop()
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
            batch, self.last_seen = self.last_seen, {}
            await self.store.touch_stations(batch)

    async def _flush_last_seen_forever(self) -> None:
        while True:
            await asyncio.sleep(LAST_SEEN_FLUSH_S)
            await self._flush_last_seen()

    async def run_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
            log.info("signal received: shutting down")
        finally:
            await self.stop()


def build_components(daemon: Daemon) -> list[Component]:
    """The optional parts the config asks for. Each lives in its own package and only needs the daemon."""
    components: list[Component] = []
    if daemon.config.security:  # station authentication, TLS, CA, edge limits (csms/security)
        from csms.security import install as install_security
        components.append(install_security(daemon))
    else:
        from csms.security import LAB_MODE_WARNING
        log.warning(LAB_MODE_WARNING)
    if daemon.config.grid:  # limit signals and the grid controller (csms/grid); sets daemon.grid
        from csms.grid.controller import grid_components
        components.extend(grid_components(daemon))
    from csms.api.server import api_component  # operator API + dashboard, unless api.enabled is false
    if (api := api_component(daemon)) is not None:
        components.append(api)
    return components
