"""``csms serve --workers N``: N daemon processes on one machine sharing the station and API ports.

One process uses one core and holds at most about 20,000 stations (its file limit); N workers use N
cores and hold N times as many. Each worker is a whole daemon and a cluster node
(``<cluster.node_id or hostname>-w<i>``, csms/cluster.py) on the shared Redis store, so the
directory, command forwarding and the shared event stream work across them as across machines. The
kernel spreads new connections over the workers' listening sockets (SO_REUSEPORT on the station
port, the TLS port and the API port).

The supervisor (this module, no event loop of the daemon, no store) binds each port first with
SO_REUSEPORT and keeps that socket (bound, not listening: it never takes a connection) so that port 0
becomes one concrete port all workers share, starts the workers, restarts one that dies (bounded
backoff), forwards SIGTERM/SIGINT and waits for them. A worker that keeps dying before it is ready
(Redis unreachable, a port taken) stops the whole supervisor with a non-zero exit instead of a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

from csms.api.auth import ensure_token_file
from csms.config import ClusterConfig, Config, ConfigError, ConfigIssue, api_port, api_token_file

log = logging.getLogger("csms.workers")

#: A worker that exits before it is ready this many times in a row stops the supervisor (exit 1).
MAX_START_FAILURES = 3
#: Backoff before restarting a worker: doubles from the first to the last, reset after a stable run.
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 10.0
STABLE_RUN_S = 60.0
#: How long a worker gets to start (lease of its node id included) and to stop after SIGTERM.
START_TIMEOUT_S, STOP_TIMEOUT_S = 60.0, 30.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Ports:
    """The concrete ports every worker listens on (``tls`` only with a separate wss:// listener)."""

    ws: int
    api: int | None = None
    tls: int | None = None

    def text(self) -> str:
        return ",".join("" if p is None else str(p) for p in (self.ws, self.api, self.tls))

    @classmethod
    def parse(cls, text: str) -> Ports:
        ws, api, tls = (text.split(",") + ["", ""])[:3]
        return cls(int(ws), int(api) if api else None, int(tls) if tls else None)


def workers_config(config: Config, count: int) -> Config:
    """The config every worker of ``count`` shares: a cluster on the Redis store (ConfigError naming the
    key when the config cannot run as several workers)."""
    if count <= 1:
        return config
    issues: list[ConfigIssue] = []
    if config.store.backend != "redis":
        issues.append(ConfigIssue(config.source, "store.backend",
                                  f"--workers {count} needs store.backend: redis (the workers share records, "
                                  f"the station directory and leases there), got {config.store.backend!r}"))
    if issues:
        raise ConfigError(issues)
    return config if config.cluster is not None else dataclasses.replace(config, cluster=ClusterConfig())


def node_base(config: Config) -> str:
    return config.cluster.node_id if config.cluster is not None and config.cluster.node_id else socket.gethostname()


def worker_config(config: Config, index: int, ports: Ports) -> Config:
    """Worker ``index``'s config: its own node id, the ports the supervisor chose."""
    cluster = config.cluster or ClusterConfig()
    out = dataclasses.replace(
        config, websocket=dataclasses.replace(config.websocket, port=ports.ws),
        cluster=dataclasses.replace(cluster, node_id=f"{node_base(config)}-w{index}"))
    if ports.api is not None:
        out = dataclasses.replace(out, api=dataclasses.replace(config.api, port=ports.api))
    security = config.security
    if ports.tls is not None and security is not None and security.tls is not None:
        out = dataclasses.replace(out, security=dataclasses.replace(
            security, tls=dataclasses.replace(security.tls, port=ports.tls)))
    return out


def _hold(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT and kept (not listening): port 0 becomes one
    concrete port the workers share, and a port taken by another program fails here, once."""
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:  # as asyncio's create_server binds it
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def hold_ports(config: Config) -> tuple[Ports, list[socket.socket]]:
    """Bind every port the workers will share; returns the concrete ports and the held sockets."""
    held: list[socket.socket] = []
    try:
        ws = _hold(config.websocket.host, config.websocket.port)
        held.append(ws)
        api = tls = None
        if config.api.enabled:
            held.append(_hold(config.api.host, api_port(config)))
            api = held[-1].getsockname()[1]
        security = config.security
        if security is not None and security.tls is not None and security.tls.port is not None:
            held.append(_hold(config.websocket.host, security.tls.port))
            tls = held[-1].getsockname()[1]
    except OSError:
        for sock in held:
            sock.close()
        raise
    return Ports(ws.getsockname()[1], api, tls), held


def _die_with_parent() -> None:
    """In the worker, before exec: SIGTERM when the supervisor dies (even by SIGKILL), so no orphans."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _describe(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class StartFailed(Exception):
    """A worker kept dying before it was ready."""


class Supervisor:
    """Starts ``count`` workers on the held ports, keeps them running, stops them on a signal."""

    def __init__(self, config_path: str, config: Config, count: int, ports: Ports) -> None:
        self.config_path = config_path
        self.config = config
        self.count = count
        self.ports = ports
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self._stop = asyncio.Event()
        self._failed: str | None = None
        self._ready: set[int] = set()

    def _argv(self, index: int, ready_fd: int) -> list[str]:
        return [sys.executable, "-m", "csms", "serve", "--config", self.config_path, "--worker", str(index),
                "--ports", self.ports.text(), "--ready-fd", str(ready_fd)]

    async def _spawn(self, index: int) -> tuple[asyncio.subprocess.Process, asyncio.StreamReader]:
        """Start worker ``index``; the reader gets one line once it is ready (EOF if it dies first)."""
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(*self._argv(index, write_fd), pass_fds=(write_fd,),
                                                        preexec_fn=_die_with_parent)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0))
        return proc, reader

    async def _started(self, proc: asyncio.subprocess.Process, reader: asyncio.StreamReader) -> bool:
        """Whether the worker said it is ready (False: it died or did not within the start timeout)."""
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                line = await reader.readline()
        except TimeoutError:
            log.error("worker pid %d not ready within %.0f s; killing it", proc.pid, START_TIMEOUT_S)
            proc.kill()
            return False
        return line.strip() == b"ready"

    async def _keep(self, index: int) -> None:
        """Run worker ``index`` until the supervisor stops; restart it when it dies."""
        failures = 0
        backoff = BACKOFF_FIRST_S
        while not self._stop.is_set():
            proc, reader = await self._spawn(index)
            self.procs[index] = proc
            if self._stop.is_set():  # stopped while it was being spawned
                proc.send_signal(signal.SIGTERM)
            started_at = time.monotonic()
            if await self._started(proc, reader):
                failures = 0
                self._ready.add(index)
                log.info("worker %d (pid %d) ready", index, proc.pid)
                if len(self._ready) == self.count:
                    self._all_ready()
            else:
                failures += 1
            code = await proc.wait()
            self._ready.discard(index)
            if self._stop.is_set():
                return
            if failures >= MAX_START_FAILURES:
                self._fail(f"worker {index} died {failures} times in a row before it was ready "
                           f"(last: {_describe(code)}); see its log above")
                return
            if time.monotonic() - started_at >= STABLE_RUN_S:
                backoff = BACKOFF_FIRST_S
            log.warning("worker %d (pid %d) died %s (%s); restarting it in %.1f s", index, proc.pid,
                        "before it was ready" if failures else "unexpectedly", _describe(code), backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            self.restarts += 1

    def _all_ready(self) -> None:
        ws, security = self.config.websocket, self.config.security
        scheme = "wss" if security is not None and security.tls is not None and security.tls.port is None else "ws"
        api = f", operator API on http://{self.config.api.host}:{self.ports.api}/" if self.ports.api else ""
        log.info("all %d workers ready: stations on %s://%s:%d%s/<stationId>%s", self.count, scheme, ws.host,
                 self.ports.ws, ws.path_prefix.rstrip("/"), api)

    def _fail(self, reason: str) -> None:
        if self._failed is None:
            self._failed = reason
            log.error("%s: stopping the workers", reason)
        self._stop.set()

    async def _stop_all(self) -> bool:
        """SIGTERM to every running worker, wait (SIGKILL after STOP_TIMEOUT_S); whether all exited 0."""
        running = [p for p in self.procs.values() if p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await asyncio.gather(*(p.wait() for p in running))
        except TimeoutError:
            for proc in running:
                if proc.returncode is None:
                    log.error("worker pid %d did not stop within %.0f s; killing it", proc.pid, STOP_TIMEOUT_S)
                    proc.kill()
            await asyncio.gather(*(p.wait() for p in running))
        return all(p.returncode == 0 for p in running)

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT (exit 0) or until a worker keeps failing at start (exit 1)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        log.info("starting %d workers (node ids %s-w0..w%d) on station port %d", self.count,
                 node_base(self.config), self.count - 1, self.ports.ws)
        keepers = [asyncio.create_task(self._keep(i), name=f"worker {i}") for i in range(self.count)]
        await self._stop.wait()
        if self._failed is None:
            log.info("signal received: stopping %d workers", self.count)
        clean = await self._stop_all()
        _, late = await asyncio.wait(keepers, timeout=STOP_TIMEOUT_S)
        clean = await self._stop_all() and clean  # a worker spawned while the first SIGTERMs went out
        for task in late:
            task.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        if self._failed is not None:
            return 1
        log.info("all workers stopped%s", "" if clean else " (some not cleanly)")
        return 0 if clean else 1


def supervise(config_path: str, config: Config, count: int) -> int:
    """Run ``count`` workers for the config at ``config_path`` (already checked by workers_config)."""
    ports, held = hold_ports(config)  # OSError: reported by the caller as "cannot start"
    try:
        if config.api.enabled:  # before the workers: each would otherwise race to create it
            ensure_token_file(api_token_file(config), config.api.generate_token)
        return asyncio.run(Supervisor(config_path, config, count, ports).run())
    finally:
        for sock in held:
            sock.close()


def tell_ready(fd: int) -> None:
    """In a worker: tell the supervisor it listens (one line on the pipe it handed down)."""
    with os.fdopen(fd, "wb", buffering=0) as pipe:
        pipe.write(b"ready\n")
