"""The live event stream (server-sent events)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.api_fixture import Api, api_daemon


async def _next_event(response: aiohttp.ClientResponse, timeout: float = 5.0) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        async for line in response.content:
            if line.startswith(b"data: "):
                return json.loads(line[6:])
        raise AssertionError("stream ended")
    return await asyncio.wait_for(read(), timeout)


async def _open(api: Api, query: str = "", token: str | None = None) -> aiohttp.ClientResponse:
    response = await api.session.get(api.url + "/api/events" + query,
                                     headers={"Authorization": f"Bearer {token or api.admin_token}"})
    assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
    first = await asyncio.wait_for(response.content.readline(), 5)
    assert first == b"retry: 2000\n"
    return response


async def test_stream_carries_bus_events_as_json(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        response = await _open(api, token="read-only-token-for-tests-0123456789")
        await api.station("CS-1", evses=1)
        kinds = []
        while "connector.status" not in kinds:
            ev = await _next_event(response)
            kinds.append(ev["kind"])
            assert ev["station_id"] == "CS-1" and isinstance(ev["seq"], int) and ev["at"].endswith("+00:00")
            if ev["kind"] == "connector.status":
                assert ev["data"] == {"evse_id": 1, "connector_id": 1, "status": "Available"}
        assert kinds == ["station.connected", "station.booted", "connector.status"]
        response.close()


async def test_kinds_and_station_filters(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        response = await _open(api, "?kinds=connector.,station.booted&station_id=CS-2")
        await api.station("CS-1", evses=1)
        await api.station("CS-2", evses=1)
        first, second = await _next_event(response), await _next_event(response)
        assert [(first["kind"], first["station_id"]), (second["kind"], second["station_id"])] == [
            ("station.booted", "CS-2"), ("connector.status", "CS-2")]
        response.close()


async def test_stream_needs_a_token_and_ends_when_the_daemon_stops(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        async with api.session.get(api.url + "/api/events") as r:
            assert r.status == 401
        status, body = await api.get("/api/events?kinds=" + ",".join(["x"] * 51))
        assert status == 400 and body["field"] == "kinds"
        response = await _open(api)
        await api.daemon.stop()
        rest = await asyncio.wait_for(response.content.read(), 5)  # the stream closes instead of hanging
        assert b"data:" not in rest
        response.close()
