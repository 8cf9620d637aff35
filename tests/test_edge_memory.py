"""Issue 16, item 4: memory per station id is freed after the station left.

The daemon runs as its own process (``python -m csms serve``) and its resident memory is read
from /proc. The issue's scenario: 300 ids each send 16 frames of about 63 KB and leave. A second
wave of 300 new ids then must not grow the daemon by what the first wave cost (freed memory is
reused even when the allocator keeps it), whether the departed stations' traces are pruned by
age (``store.trace_ttl_s``) or by the cap on the total (``store.trace_max_bytes``).

The store backend does not matter here (the per-id state is in memory), so this runs on SQLite.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from tests.edge_kit import api_get, daemon_process, write_config
from tests.waiting import until

IDS = 300
FRAMES = 16
PAD = 63_000  # a Heartbeat with this much customData is just under the default 64 KiB frame limit
MIB = 1024 * 1024
LEAK_PER_WAVE = IDS * FRAMES // 2 * PAD  # what the trace kept per wave before the fix (~150 MB)


async def _station(url: str, station_id: str) -> None:
    async with websockets.connect(f"{url}/{station_id}", subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                                  max_size=None, compression=None) as ws:
        await ws.send(json.dumps([2, "b", "BootNotification", {"reason": "PowerUp", "chargingStation": {
            "vendorName": "V", "model": "M"}}]))
        assert json.loads(await ws.recv())[0] == 3
        big = json.dumps([2, "h", "Heartbeat", {"customData": {"vendorId": "pad", "pad": "p" * PAD}}])
        for _ in range(FRAMES - 1):
            await ws.send(big)
            assert json.loads(await ws.recv())[0] == 3


async def wave(url: str, prefix: str, n: int = IDS, concurrency: int = 25) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await _station(url, f"{prefix}-{i:03d}")
    await asyncio.gather(*(one(i) for i in range(n)))


async def trace_length(session: aiohttp.ClientSession, api_url: str, station_id: str) -> int:
    status, body = await api_get(session, api_url, f"/api/stations/{station_id}/trace")
    assert status == 200, body
    return len(body["frames"])


async def run_scenario(tmp_path: Path, store: dict[str, Any]) -> dict[str, float]:
    """RSS (MiB) at start, after a warm-up wave, after wave A has gone, and after wave B has gone."""
    config = write_config(tmp_path / "csms.yaml", {"store": store})
    async with daemon_process(config) as d, aiohttp.ClientSession() as session:
        assert d.api_url is not None
        rss = {"start": d.rss() / MIB}
        await wave(d.ws_url, "WARM", n=30)
        gone = store.get("trace_ttl_s", 3600) < 60  # else only the cap prunes

        async def pruned(prefix: str) -> bool:
            return not gone or await trace_length(session, d.api_url, f"{prefix}-000") == 0  # type: ignore[arg-type]
        await until(lambda: pruned("WARM"), timeout=30, what="the warm-up traces pruned")
        rss["warm"] = d.rss() / MIB
        for name in ("A", "B"):
            await wave(d.ws_url, name)
            rss[f"{name} connected"] = d.rss() / MIB
            await until(lambda name=name: pruned(name), timeout=30, what=f"wave {name}'s traces pruned")
            rss[f"{name} gone"] = d.rss() / MIB
        assert await trace_length(session, d.api_url, f"B-{IDS - 1:03d}") <= 2 * FRAMES
        print("RSS MiB:", {k: round(v, 1) for k, v in rss.items()})
        return rss


@pytest.mark.timeout(240)
async def test_traces_of_departed_stations_are_pruned_after_their_ttl(tmp_path: Path) -> None:
    rss = await run_scenario(tmp_path, {"trace_ttl_s": 1})
    assert rss["B gone"] - rss["A gone"] < 40, rss  # a leak would add ~150 MiB per wave
    assert rss["B gone"] - rss["warm"] < LEAK_PER_WAVE / MIB / 2, rss


@pytest.mark.timeout(240)
async def test_the_total_trace_is_capped_even_before_the_ttl(tmp_path: Path) -> None:
    rss = await run_scenario(tmp_path, {"trace_ttl_s": 3600, "trace_max_bytes": 16 * MIB})
    assert rss["B connected"] - rss["A connected"] < 40, rss
    assert rss["B gone"] - rss["warm"] < LEAK_PER_WAVE / MIB / 2, rss
