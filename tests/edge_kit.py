"""Test tools for the hardened edge (issue 16), driving the daemon from the outside.

Everything here talks to a daemon over its sockets (websocket, HTTP, SSE) or watches its process,
so the tests that use it do not depend on how the daemon is wired inside. The store backends
are selected through the config alone (``backend_overrides``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.fuzz import EventStream  # noqa: F401 - the live-stream reader, shared with the fuzz run
from tests.pg_kit import PG_DSN, pg_schema
from tests.redis_kit import REDIS_URL, delete_prefix  # noqa: F401 - delete_prefix: the edge tests' clean-up

REPO = Path(__file__).resolve().parent.parent
#: Every store backend: the edge's tests and the store's input contract run against each.
BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis), pytest.param("postgres", marks=pytest.mark.postgres)]
ADMIN_TOKEN = "edge-kit-admin-token-0123456789abcdef"


# Store backends ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def backend_overrides(backend: str, tmp_path: Path, redis_url: str = REDIS_URL) -> AsyncIterator[dict[str, Any]]:
    """The ``store`` config section for ``backend``; Redis keys get their own prefix, PostgreSQL tables their own
    schema, deleted afterwards."""
    if backend == "sqlite":
        yield {"backend": "sqlite", "sqlite_path": str(tmp_path / "edge.db")}
        return
    if backend == "postgres":
        async with pg_schema() as schema:
            yield {"backend": "postgres", "postgres_dsn": PG_DSN, "postgres_schema": schema}
        return
    prefix = f"nbedge:{uuid.uuid4().hex}:"
    try:
        yield {"backend": "redis", "redis_url": redis_url, "redis_prefix": prefix}
    finally:
        await delete_prefix(prefix)


# Raw HTTP ------------------------------------------------------------------------------------------
@dataclass
class RawAnswer:
    status: int | None  # None: the server closed without an HTTP answer
    head: bytes
    body: bytes


async def raw_http(port: int, request: bytes, timeout: float = 5.0) -> RawAnswer:
    """Send bytes as they are to 127.0.0.1:port and read whatever comes back until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = b""
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            async with asyncio.timeout(timeout):
                while chunk := await reader.read(65536):
                    data += chunk
                    if b"\r\n\r\n" in data and _complete(data):
                        break
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return RawAnswer(int(m.group(1)) if m else None, head, body)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return m is not None and len(body) >= int(m.group(1))


def upgrade_request(path: bytes, port: int, subprotocol: bytes = b"ocpp2.0.1") -> bytes:
    """A websocket upgrade request for ``path``, byte for byte as given (no escaping)."""
    return (b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1:" + str(port).encode() + b"\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: " + subprotocol + b"\r\n\r\n")


# Memory --------------------------------------------------------------------------------------------
def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (default: this one), from /proc."""
    with open(f"/proc/{pid or os.getpid()}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status")


# A TCP proxy that can cut a backend off (a store outage without touching the shared server) -------
class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._lose_reply = False
        self.replies_lost = 0

    def lose_next_reply(self) -> None:
        """Forward requests as usual, but the next bytes the backend answers never reach the client:
        the proxy drops both sides of that connection instead (a reply lost after the backend acted,
        as when a connection breaks at the wrong moment). New connections pass through again."""
        self._lose_reply = True

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, replies: bool) -> None:
            try:
                while data := await src.read(65536):
                    if replies and self._lose_reply:
                        self._lose_reply = False
                        self.replies_lost += 1
                        writer.transport.abort()
                        up_writer.transport.abort()
                        return
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()
        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))
        self._writers -= {writer, up_writer}

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones (the backend is 'down')."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def stop(self) -> None:
        await self.cut()


# The daemon as its own process ---------------------------------------------------------------------
LISTENING = re.compile(r"listening for OCPP stations on ws://127\.0\.0\.1:(\d+)(/\S*)/<stationId>")
API_AT = re.compile(r"operator API.* on (http://127\.0\.0\.1:\d+)/")


def write_config(path: Path, sections: dict[str, Any]) -> Path:
    """A YAML config (JSON is YAML) for a daemon on ephemeral ports with a known admin token."""
    data: dict[str, Any] = {
        "websocket": {"host": "127.0.0.1", "port": 0, "call_timeout_s": 5},
        "store": {"sqlite_path": str(path.parent / "edge.db")},
        "registration": {"accept_unknown_id_tokens": True},
        "logging": {"level": "INFO"},
        "api": {"tokens": [{"name": "edge", "scope": "admin", "token": ADMIN_TOKEN}], "generate_token": False},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@dataclass
class DaemonProcess:
    proc: asyncio.subprocess.Process
    ws_url: str
    api_url: str | None
    log: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def log_text(self) -> str:
        return "".join(self.log)

    async def terminate(self, timeout: float = 30.0) -> float:
        """SIGTERM; the seconds until the process exited."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.proc.wait(), timeout)
        return time.monotonic() - started


@contextlib.asynccontextmanager
async def daemon_process(config: Path, env: dict[str, str] | None = None, api: bool = True
                         ) -> AsyncIterator[DaemonProcess]:
    """``python -m csms serve`` on ``config`` (logging at INFO, so its URLs can be read from its log,
    which is kept draining); ``api``: whether the config enables the operator API."""
    environment = {**os.environ, "COLUMNS": "1000", "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "csms", "serve", "--config", str(config),
                                                cwd=REPO, env=environment, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    lines: list[str] = []
    drain: asyncio.Task[None] | None = None
    try:
        ws_url = api_url = None
        async with asyncio.timeout(30):
            while ws_url is None or (api and api_url is None):
                raw = await proc.stderr.readline()
                assert raw, "daemon exited before listening:\n" + "".join(lines)
                lines.append(raw.decode(errors="replace"))
                if m := LISTENING.search(lines[-1]):
                    ws_url = f"ws://127.0.0.1:{m.group(1)}{m.group(2)}"
                if m := API_AT.search(lines[-1]):
                    api_url = m.group(1)
        running = DaemonProcess(proc, ws_url, api_url, lines)

        async def keep_draining() -> None:  # a full pipe would block the daemon's logging
            assert proc.stderr is not None
            async for line in proc.stderr:
                lines.append(line.decode(errors="replace"))
        drain = asyncio.create_task(keep_draining())
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain


async def api_get(session: aiohttp.ClientSession, api_url: str, path: str, token: str = ADMIN_TOKEN
                  ) -> tuple[int, Any]:
    async with session.get(api_url + path, headers={"Authorization": f"Bearer {token}"}) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body
