"""The daemon as an operator runs it: `python -m csms serve` in its own process.

Durability: whatever a station got a CALLRESULT for survives SIGKILL mid-traffic (SQLite and
PostgreSQL; the same for Redis in tests/test_grid_survives_restart.py). Graceful stop:
SIGTERM closes every station socket with 1001 and exits 0. `check-config` reports every error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from csms.store.base import Store
from csms.store.postgres import PostgresStore
from csms.store.sqlite import SqliteStore
from tests.ocpp_client import now_iso
from tests.pg_kit import PG_DSN, pg_schema
from tests.test_daemon_kit import BOOT, meter_value, transaction_event, wait_until

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "COLUMNS": "1000", "PYTHONUNBUFFERED": "1"}  # one log record per line
LISTENING = re.compile(r"listening for OCPP stations on ws://127\.0\.0\.1:(\d+)(/\S*)/<stationId>")


@dataclass
class DaemonProcess:
    proc: asyncio.subprocess.Process
    url: str
    log: list[str] = field(default_factory=list)
    _drain: asyncio.Task[None] | None = None


def _write_config(tmp_path: Path, db: Path, store: dict[str, str] | None = None) -> Path:
    """The daemon's config; its store is the SQLite file ``db`` unless ``store`` gives the section."""
    cfg = tmp_path / "csms.yaml"
    section = "".join(f"  {key}: {json.dumps(value)}\n" for key, value in (store or {"sqlite_path": str(db)}).items())
    cfg.write_text(f"websocket:\n  host: 127.0.0.1\n  port: 0\n  call_timeout_s: 5\n"
                   f"store:\n{section}logging:\n  level: INFO\n", encoding="utf-8")
    return cfg


@contextlib.asynccontextmanager
async def _store_section(backend: str, tmp_path: Path) -> AsyncIterator[tuple[dict[str, str] | None, Store]]:
    """The config's store section for ``backend`` (None: the SQLite file) and a reader of the same data."""
    if backend == "sqlite":
        yield None, SqliteStore(str(tmp_path / "csms.db"))
        return
    async with pg_schema() as schema:
        yield {"backend": "postgres", "postgres_dsn": PG_DSN, "postgres_schema": schema}, PostgresStore(PG_DSN, schema)


@contextlib.asynccontextmanager
async def daemon_process(config: Path) -> AsyncIterator[DaemonProcess]:
    """Start the daemon, learn its port from its log, keep draining the log; kill it if still running."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "csms", "serve", "--config", str(config),
                                                cwd=REPO, env=ENV, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            while True:
                raw = await proc.stderr.readline()
                assert raw, "daemon exited before listening:\n" + "".join(lines)
                lines.append(raw.decode())
                m = LISTENING.search(lines[-1])
                if m:
                    break
        running = DaemonProcess(proc, f"ws://127.0.0.1:{m.group(1)}{m.group(2)}", lines)

        async def drain() -> None:  # a full pipe would block the daemon's logging
            assert proc.stderr is not None
            async for line in proc.stderr:
                lines.append(line.decode())
        running._drain = asyncio.create_task(drain())
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _connect(url: str, station_id: str) -> ClientConnection:
    return await websockets.connect(f"{url}/{station_id}", subprotocols=["ocpp2.0.1"])  # type: ignore[list-item]


async def _call(ws: ClientConnection, uid: str, action: str, payload: dict[str, Any]) -> list[Any]:
    await ws.send(json.dumps([2, uid, action, payload]))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert reply[1] == uid and reply[0] == 3, reply
    return reply


@dataclass
class Acked:
    tx_events: set[tuple[str, str, int]] = field(default_factory=set)  # station, transaction, seqNo
    meter: set[tuple[str, float]] = field(default_factory=set)  # station, unique energy value

    def __len__(self) -> int:
        return len(self.tx_events) + len(self.meter)


async def _station_traffic(url: str, station_id: str, acked: Acked, max_messages: int) -> None:
    """Transactions with meter values plus MeterValues, as fast as answers come, until the socket dies."""
    ids = itertools.count()
    try:
        ws = await _connect(url, station_id)
        await _call(ws, "boot", "BootNotification", BOOT)
        for tx_no in itertools.count():
            tx = f"{station_id}-T{tx_no}"
            for seq in range(6):
                if next(ids) >= max_messages:
                    return
                kind = "Started" if seq == 0 else "Ended" if seq == 5 else "Updated"
                event = transaction_event(kind, tx, seq, charging_state="Charging", energy_wh=float(seq * 100),
                                          power_w=7400.0, stopped_reason="Local" if kind == "Ended" else None)
                await _call(ws, f"te{tx_no}-{seq}", "TransactionEvent", event)
                acked.tx_events.add((station_id, tx, seq))
                energy = float(tx_no * 1000 + seq) + 0.5  # unique per station
                await _call(ws, f"mv{tx_no}-{seq}", "MeterValues",
                            {"evseId": 2, "meterValue": [meter_value(energy, 3000.0)]})
                acked.meter.add((station_id, energy))
    except (websockets.ConnectionClosed, OSError, asyncio.TimeoutError):
        return  # the daemon was killed under us: what was acknowledged is what counts


async def _at_least(acked: Acked, n: int) -> bool:
    return len(acked) >= n


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_everything_acknowledged_survives_sigkill_mid_traffic(tmp_path: Path, backend: str) -> None:
    async with _store_section(backend, tmp_path) as (section, store):
        await _acknowledged_survives_sigkill(tmp_path, section, store)


async def _acknowledged_survives_sigkill(tmp_path: Path, section: dict[str, str] | None, store: Store) -> None:
    config = _write_config(tmp_path, tmp_path / "csms.db", section)
    acked = Acked()
    async with daemon_process(config) as first:
        stations = [asyncio.create_task(_station_traffic(first.url, f"DUR-{i}", acked, 5000)) for i in range(6)]
        await wait_until(lambda: _at_least(acked, 600), timeout=30, step=0.005)
        first.proc.send_signal(signal.SIGKILL)  # mid-traffic: every station is waiting on an answer
        await first.proc.wait()
        await asyncio.wait_for(asyncio.gather(*stations), 15)
    assert first.proc.returncode == -signal.SIGKILL
    assert len(acked) >= 600

    # The restarted daemon serves the same stations from the same file ...
    async with daemon_process(config) as second:
        ws = await _connect(second.url, "DUR-0")
        await _call(ws, "hb", "Heartbeat", {})  # accepted before the crash: no new boot needed
        await ws.close()
        second.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.proc.wait(), 15) == 0

    # ... and every acknowledged event and sample is in it.
    await store.open()
    try:
        missing_tx = []
        for station_id, tx, seq in sorted(acked.tx_events):
            events = await store.transaction_events(station_id, tx)
            if seq not in {e["seqNo"] for e in events}:
                missing_tx.append((station_id, tx, seq))
        assert not missing_tx, f"{len(missing_tx)} acknowledged TransactionEvents lost: {missing_tx[:5]}"
        stored_meter = set()
        for i in range(6):
            stored_meter |= {(f"DUR-{i}", s["value"]) for s in await store.meter_samples(f"DUR-{i}", evse_id=2)
                             if s["measurand"] == "Energy.Active.Import.Register"}
        lost = acked.meter - stored_meter
        assert not lost, f"{len(lost)} acknowledged MeterValues lost: {sorted(lost)[:5]}"
        ended = [t for t in await store.list_transactions(active=False, limit=10000)]
        assert all(t.stopped_reason == "Local" for t in ended)
    finally:
        await store.close()


async def test_sigterm_closes_station_sockets_with_1001_and_exits_0(tmp_path: Path) -> None:
    config = _write_config(tmp_path, tmp_path / "csms.db")
    async with daemon_process(config) as d:
        sockets = [await _connect(d.url, f"TERM-{i}") for i in range(3)]
        for i, ws in enumerate(sockets):
            await _call(ws, f"b{i}", "BootNotification", BOOT)
        await _call(sockets[0], "s", "StatusNotification", {"timestamp": now_iso(), "connectorStatus": "Available",
                                                           "evseId": 1, "connectorId": 1})
        d.proc.send_signal(signal.SIGTERM)
        for ws in sockets:
            await asyncio.wait_for(ws.wait_closed(), 10)
            assert ws.close_code == 1001
        assert await asyncio.wait_for(d.proc.wait(), 15) == 0
        assert any("signal received: shutting down" in line for line in d.log)
    store = SqliteStore(str(tmp_path / "csms.db"))
    await store.open()
    try:
        stations = {s.station_id: s for s in await store.list_stations()}
        assert set(stations) == {"TERM-0", "TERM-1", "TERM-2"}
        assert not any(s.connected for s in stations.values())  # the stop was recorded
        assert [c["status"] for c in await store.list_connectors("TERM-0")] == ["Available"]
    finally:
        await store.close()


async def test_check_config_lists_every_error_with_file_and_key_and_exits_3(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("websocket:\n  port: seventy\n  max_frame_bytes: 10\n  colour: blue\n"
                   "registration:\n  policy: everyone\n", encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "csms", "check-config", str(bad), cwd=REPO,
                                                env=ENV, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 3
    text = err.decode()
    for key in ("websocket.port", "websocket.max_frame_bytes", "websocket.colour", "registration.policy"):
        assert re.search(rf"{re.escape(str(bad))}: {re.escape(key)}: \S", text), f"{key} not reported:\n{text}"
    assert "4 problems" in text

    good = tmp_path / "good.yaml"
    good.write_text("websocket:\n  port: 9100\n", encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "csms", "check-config", str(good), cwd=REPO,
                                                env=ENV, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0 and b"OK" in out
