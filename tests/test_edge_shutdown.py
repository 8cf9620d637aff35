"""Issue 16, item 8: a graceful shutdown with 2,200 stations is well under 10 s.

The daemon runs as its own process; 2,200 booted stations (websockets clients in this process,
each reading so it can answer the closing handshake) are connected when it gets SIGTERM. Every
station must get close code 1001 (going away) and the process must exit 0 quickly.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.edge_kit import daemon_process, write_config

STATIONS = 2200
SHUTDOWN_BUDGET_S = 5.0  # "well under 10 s"


async def _booted(url: str, station_id: str) -> ClientConnection:
    ws = await websockets.connect(f"{url}/{station_id}", subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                                  compression=None, open_timeout=60)
    await ws.send(json.dumps([2, "b", "BootNotification", {"reason": "PowerUp", "chargingStation": {
        "vendorName": "V", "model": "M"}}]))
    assert json.loads(await asyncio.wait_for(ws.recv(), 60))[0] == 3
    return ws


@pytest.mark.timeout(240)
async def test_graceful_shutdown_of_2200_stations_is_well_under_10_s(tmp_path: Path) -> None:
    config = write_config(tmp_path / "csms.yaml", {"api": {"enabled": False}})
    async with daemon_process(config, api=False) as d:
        gate = asyncio.Semaphore(100)

        async def connect(i: int) -> ClientConnection:
            async with gate:
                return await _booted(d.ws_url, f"SD-{i:04d}")
        stations = await asyncio.gather(*(connect(i) for i in range(STATIONS)))
        closed = [asyncio.create_task(ws.wait_closed()) for ws in stations]
        took = await d.terminate(timeout=60)
        await asyncio.wait_for(asyncio.gather(*closed), 30)
        codes = [ws.close_code for ws in stations]
        closing = [line.strip() for line in d.log if "station connections" in line or "stopped" in line]
        print(f"graceful shutdown of {STATIONS} stations: {took:.2f} s", closing)
        assert d.proc.returncode == 0, d.log_text()[-2000:]
        assert codes.count(1001) == STATIONS, {c: codes.count(c) for c in set(codes)}
        assert took < SHUTDOWN_BUDGET_S, f"shutdown took {took:.2f} s"
