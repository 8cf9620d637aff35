"""The OpenAPI document: valid, served, in sync with the routes, and fuzzed with schemathesis.

The property-based run sends generated requests to every documented operation of a real daemon
(with a connected station answering every command and grid control configured) and requires that
no request gets a 5xx answer and every status is one the document lists.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error, status_code_conformance

from csms.api.openapi import DOCUMENT
from csms.api.server import all_routes
from tests.api_fixture import answer_everything, api_daemon

GRID = {"transformers": {"T1": {"capacity_kw": 100, "members": [{"station": "CS-*"}]}},
        "mqtt": {"broker_grace_s": 3600}}


def test_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"] == "3.1.0"


def test_every_route_is_documented_and_every_entry_has_a_route() -> None:
    routes = {(r.method.lower(), r.path) for r in all_routes()}
    documented = {(method, path) for path, ops in DOCUMENT["paths"].items() for method in ops}
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented operations without a route"


def test_public_operations_are_exactly_the_ones_without_a_token() -> None:
    public = {(r.method.lower(), r.path) for r in all_routes() if r.scope == "public"}
    documented_public = {(m, p) for p, ops in DOCUMENT["paths"].items() for m, op in ops.items()
                         if op.get("security") == []}
    assert public == documented_public


async def test_document_is_served(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        status, body = await api.get("/openapi.json", token=None)
        assert status == 200 and body == DOCUMENT


class _Daemon(threading.Thread):
    """A daemon with a connected, always-answering station, in its own thread and event loop."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(daemon=True)
        self.tmp_path = tmp_path
        self.ready = threading.Event()
        self.url = ""
        self.token = ""
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        async with api_daemon(self.tmp_path, grid=GRID, websocket={"call_timeout_s": 5}) as api:
            await api.station("CS-1", answers=answer_everything(api.daemon), evses=1)
            self.url, self.token = api.url, api.admin_token
            self.ready.set()
            await self._stopping.wait()

    def shutdown(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self.join(20)


@pytest.fixture(scope="module")
def live_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Daemon]:
    server = _Daemon(tmp_path_factory.mktemp("schemathesis"))
    server.start()
    assert server.ready.wait(20), "daemon did not start"
    if server.error is not None:
        raise server.error
    yield server
    server.shutdown()


def _with_examples(document: dict[str, Any]) -> dict[str, Any]:
    """Point the generated station ids at the connected station now and then."""
    import copy

    doc = copy.deepcopy(document)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            # Unregistering or blocking the one connected station would turn every later case into a 409.
            destructive = method == "delete" or path.endswith("/block")
            for p in op.get("parameters", []):
                if p["name"] == "station_id" and p["in"] == "path":
                    p["examples"] = {"unknown": {"value": "NOPE"}} if destructive else {
                        "connected": {"value": "CS-1"}, "unknown": {"value": "NOPE"}}
                if p["name"] == "transformer_id":
                    p["examples"] = {"known": {"value": "T1"}}
    return doc


OUTCOMES: list[tuple[str, str, int]] = []
schema = schemathesis.openapi.from_dict(_with_examples(DOCUMENT)).exclude(path="/api/events")


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_has_no_server_errors(case: schemathesis.Case, live_daemon: _Daemon) -> None:
    response = case.call_and_validate(base_url=live_daemon.url, headers={"Authorization": f"Bearer {live_daemon.token}"},
                           timeout=10, checks=[not_a_server_error, status_code_conformance])
    OUTCOMES.append((case.method, case.path, response.status_code))


def test_the_fuzzing_reached_the_connected_station() -> None:
    """Not only 4xx: generated requests were accepted, and commands reached the simulated station."""
    assert any(200 <= status < 300 for _, _, status in OUTCOMES)
    assert any("/commands/" in path and status == 200 for _, path, status in OUTCOMES)
    assert not [o for o in OUTCOMES if o[2] >= 500]

