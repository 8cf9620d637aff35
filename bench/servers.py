"""The servers under test, each in its own process pinned to core 0.

Ours is the real daemon (`python -m csms serve`) with a generated config; the baseline is
`python -m bench.baseline`. Both get the soft RLIMIT_NOFILE raised to the hard limit, and both
only listen on 127.0.0.1. RSS and CPU time come from /proc, so they are the server's own.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SERVER_CORE = 0
LOADGEN_CORE = 1
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def raise_nofile() -> int:
    """Raise this process's soft fd limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin_loadgen() -> str:
    """Pin this (load generator) process to core 1 when the machine has one; returns a description."""
    cores = os.sched_getaffinity(0)
    if os.cpu_count() and os.cpu_count() >= 2:  # type: ignore[operator]
        os.sched_setaffinity(0, {LOADGEN_CORE})
        return f"load generator on core {LOADGEN_CORE}, server on core {SERVER_CORE}"
    return f"single core machine ({sorted(cores)}): server and load generator share it"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    kind: str  # "ours" | "baseline"
    port: int
    prefix: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    db_path: Path | None = None
    log_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        return await stop_process(self.proc, timeout)


async def stop_process(proc: subprocess.Popen[Any], timeout: float) -> int | None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return proc.returncode


async def drop_redis_prefix(redis_url: str, prefix: str) -> None:
    """Delete every key of a run's Redis prefix (in batches)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=2000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i:i + 1000])
    finally:
        await client.aclose()


def _preexec() -> None:
    raise_nofile()


def _spawn(argv: list[str], log_path: Path, cores: str | None = str(SERVER_CORE)) -> subprocess.Popen[bytes]:
    """Start a server process pinned to ``cores`` (a taskset list; None: every core of the machine,
    not the load generator's one that the child would otherwise inherit)."""
    every = f"0-{(os.cpu_count() or 1) - 1}"
    pin = ["taskset", "-c", cores or every] if (os.cpu_count() or 1) >= 2 else []
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        return subprocess.Popen(pin + argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_preexec,
                                env=env)
    finally:
        log.close()


async def _wait_listening(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.kind} server exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    await server.stop()
    raise TimeoutError(f"{server.kind} server not listening on port {server.port} within {timeout} s:\n"
                       f"{server.log_tail()}")


def ours_config(workdir: Path, port: int, grid: dict[str, Any] | None = None) -> dict[str, Any]:
    """The daemon's defaults except what a benchmark must pin down: port, store file, quiet logs, no API."""
    cfg: dict[str, Any] = {
        "websocket": {"host": "127.0.0.1", "port": port, "path_prefix": "/ocpp", "call_timeout_s": 30},
        "registration": {"policy": "allow_unknown", "accept_unknown_id_tokens": True},
        "store": {"backend": "sqlite", "sqlite_path": str(workdir / "bench.db")},
        "logging": {"level": "WARNING"},
        "api": {"enabled": False},
    }
    if grid:
        cfg["grid"] = grid
    return cfg


async def start_ours(workdir: Path, grid: dict[str, Any] | None = None, timeout: float = 30.0) -> ServerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = ours_config(workdir, port, grid)
    cfg_path = workdir / "bench-config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    log_path = workdir / "csms.log"
    proc = _spawn([sys.executable, "-m", "csms", "serve", "--config", str(cfg_path)], log_path)
    server = ServerProcess("ours", port, "/ocpp", proc, workdir, db_path=workdir / "bench.db", log_path=log_path)
    await _wait_listening(server, timeout)
    return server


async def start_baseline(workdir: Path, mqtt_prefix: str | None = None, timeout: float = 30.0) -> ServerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [sys.executable, "-m", "bench.baseline", "--port", str(port)]
    if mqtt_prefix:
        argv += ["--mqtt-prefix", mqtt_prefix]
    log_path = workdir / "baseline.log"
    proc = _spawn(argv, log_path)
    server = ServerProcess("baseline", port, "/ocpp", proc, workdir, log_path=log_path)
    await _wait_listening(server, timeout)
    return server


async def start(kind: str, workdir: Path, **kwargs: Any) -> ServerProcess:
    if kind == "ours":
        return await start_ours(workdir, grid=kwargs.get("grid"))
    if kind == "baseline":
        return await start_baseline(workdir, mqtt_prefix=kwargs.get("mqtt_prefix"))
    raise ValueError(f"unknown server kind {kind!r} (ours, baseline)")
