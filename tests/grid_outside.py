"""The daemon from the outside, as an operator runs it: `python -m csms serve --config FILE` in its own
process, the operator HTTP API and the `csms` CLI. Restart it (SIGTERM or SIGKILL) on the same ports
and store, and stations reconnect to the same address.

Only the config file, the processes, HTTP and the command line are used here, so the tests built on
it keep working however the package is arranged inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp
import yaml

from tests.pg_kit import PG_DSN, drop_schema, ensure_database
from tests.redis_kit import REDIS_URL, delete_prefix

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "COLUMNS": "1000", "PYTHONUNBUFFERED": "1"}
ADMIN_TOKEN = "grid-outside-admin-token-0123456789abcdef"
API_LISTENING = re.compile(r"operator API\S* .*on (http://127\.0\.0\.1:\d+)/")


def free_port() -> int:
    """A port free now, below the kernel's range for outgoing connections (32768-60999), so no client
    socket of a concurrent test takes it before the daemon binds it (the daemon keeps it across restarts)."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


@dataclass
class Site:
    """One installation: config file, ports and store that survive a restart of the daemon."""

    tmp: Path
    grid: dict[str, Any]
    backend: str = "sqlite"
    ws_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    redis_prefix: str = field(default_factory=lambda: f"nbgrid:{uuid.uuid4().hex}:")
    pg_schema: str = field(default_factory=lambda: f"nbgrid_{uuid.uuid4().hex}")
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ocpp"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def config(self) -> dict[str, Any]:
        store: dict[str, Any] = {
            "sqlite": {"backend": "sqlite", "sqlite_path": str(self.tmp / "csms.db")},
            "redis": {"backend": "redis", "redis_url": REDIS_URL, "redis_prefix": self.redis_prefix},
            "postgres": {"backend": "postgres", "postgres_dsn": PG_DSN, "postgres_schema": self.pg_schema},
        }[self.backend]
        data: dict[str, Any] = {
            "websocket": {"host": "127.0.0.1", "port": self.ws_port, "path_prefix": "/ocpp", "call_timeout_s": 5},
            "registration": {"accept_unknown_id_tokens": True},
            "store": store,
            "logging": {"level": "INFO"},
            "api": {"host": "127.0.0.1", "port": self.api_port,
                    "tokens": [{"name": "operator", "scope": "admin", "token": ADMIN_TOKEN}]},
            "grid": self.grid,
        }
        for key, value in self.extra.items():
            data[key] = {**data[key], **value} if isinstance(data.get(key), dict) else value
        return data

    def write_config(self) -> Path:
        path = self.tmp / "csms.yaml"
        path.write_text(yaml.safe_dump(self.config(), sort_keys=False), encoding="utf-8")
        return path

    async def prepare(self) -> None:
        """What the store needs before the daemon starts (the test database, for PostgreSQL)."""
        if self.backend == "postgres":
            await ensure_database()

    async def cleanup(self) -> None:
        if self.backend == "postgres":
            await drop_schema(self.pg_schema)
        if self.backend == "redis":
            await delete_prefix(self.redis_prefix)


#: Daemons running now (for the timeout dump in tests/conftest.py: what a hung test's daemon was doing).
RUNNING: list[Daemon] = []


@dataclass(eq=False)
class Daemon:
    proc: asyncio.subprocess.Process
    log: list[str]
    drain: asyncio.Task[None] | None = None

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the process to end; returns its exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self.drain is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self.drain, 5)
        return code

    def text(self) -> str:
        return "".join(self.log)


@contextlib.asynccontextmanager
async def daemon(site: Site, *, timeout: float = 30.0) -> AsyncIterator[Daemon]:
    """Start the daemon for ``site`` and wait until its API answers; kill it on the way out."""
    config = site.write_config()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "csms", "serve", "--config", str(config),
                                                cwd=REPO, env=ENV, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    lines: list[str] = []
    running = Daemon(proc, lines)
    try:
        async with asyncio.timeout(timeout):
            while True:
                raw = await proc.stderr.readline()
                assert raw, "daemon exited before its API listened:\n" + "".join(lines)
                lines.append(raw.decode())
                if API_LISTENING.search(lines[-1]):
                    break

        async def drain() -> None:  # a full pipe would block the daemon's logging
            assert proc.stderr is not None
            async for line in proc.stderr:
                lines.append(line.decode())

        running.drain = asyncio.create_task(drain())
        RUNNING.append(running)
        yield running
    finally:
        if running in RUNNING:
            RUNNING.remove(running)
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        if running.drain is not None:
            running.drain.cancel()


class Api:
    """The operator HTTP API with the admin token."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self._session is not None
        async with self._session.request(method, self.site.api_url + path, json=body,
                                         timeout=aiohttp.ClientTimeout(total=30)) as r:
            if r.content_type == "application/json":
                return r.status, await r.json()
            return r.status, await r.text()

    async def get(self, path: str) -> Any:
        status, body = await self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        return await self.request("POST", path, body)

    async def group(self, tid: str = "T1") -> dict[str, Any]:
        return (await self.get("/api/grid"))["transformers"][tid]

    async def sessions(self, tid: str = "T1") -> dict[tuple[str, int], dict[str, Any]]:
        return {(s["station_id"], s["evse_id"]): s for s in (await self.group(tid))["sessions"]}

    async def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        events = (await self.get("/api/grid/events?limit=10000"))["events"]
        return [e for e in events if kind is None or e.get("kind") == kind]


async def cli(site: Site, *args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """Run ``csms <args>`` against the site's API (as an operator would, with --url/--token)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "csms", *args, "--url", site.api_url,
                                                "--token", ADMIN_TOKEN, cwd=REPO, env=ENV,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
