"""Grid control through the operator API, with simulated stations charging under one transformer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from simulators.clock import Clock
from simulators.ev import EV
from simulators.models import EVModel, StationModel
from simulators.station import SimStation
from tests.api_fixture import Api, api_daemon
from tests.waiting import until

GRID = {
    "transformers": {"T1": {"capacity_kw": 100, "members": [{"station": "G-*"}]}},
    "mqtt": {"broker_grace_s": 3600},
    "planning": {"replan_interval_s": 1, "min_push_interval_s": 0, "verify_after_s": 1},
}


@contextlib.asynccontextmanager
async def charging_site(tmp_path: Path, n: int = 2,
                        grid: dict[str, Any] | None = None) -> AsyncIterator[tuple[Api, list[SimStation]]]:
    async with api_daemon(tmp_path, grid=grid or GRID) as api:
        model = StationModel(name="sim-ac22", meter_interval_s=0.3, tick_s=0.1, message_attempt_interval_s=0.2)
        stations = [SimStation(f"G-{i}", api.running.ws_url, model, clock=Clock(), call_timeout_s=5)
                    for i in range(1, n + 1)]
        tasks = [asyncio.create_task(s.run()) for s in stations]
        try:
            await asyncio.wait_for(asyncio.gather(*(s.accepted.wait() for s in stations)), 10)
            for s in stations:
                s.plug_in(1, EV(EVModel(max_current_a=16), soc=0.3, target_soc=0.9))
            await until(lambda: len(api.daemon.grid.snapshot()["transformers"]["T1"]["sessions"]) == n, 10,
                        "sessions known to the controller")
            yield api, stations
        finally:
            for s in stations:
                s.stop()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)


async def test_without_grid_control_every_grid_route_is_503(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        for method, path, body in (("GET", "/api/grid", None), ("GET", "/api/grid/events", None),
                                   ("POST", "/api/grid/transformers/T1/limit", {"signal_id": "a", "limit_kw": 5}),
                                   ("POST", "/api/grid/sessions/CS-1/1/need", {"energy_kwh": 5})):
            status, out = await api.request(method, path, body)
            assert (status, out) == (503, {"error": "grid control is not configured"}), path


async def test_snapshot_limit_and_session_need(tmp_path: Path) -> None:
    async with charging_site(tmp_path) as (api, stations):
        await until(lambda: all(s["setpoint_kw"] for s in
                                api.daemon.grid.snapshot()["transformers"]["T1"]["sessions"]), 10, "first plan pushed")
        status, snap = await api.get("/api/grid", token="read")
        assert status == 200
        t1 = snap["transformers"]["T1"]
        assert sum(s["setpoint_kw"] for s in t1["sessions"]) > 8  # so the limit below has something to cut
        assert t1["limit_kw"] == 100 and t1["limit_source"] == "capacity"
        assert sorted(s["station_id"] for s in t1["sessions"]) == ["G-1", "G-2"]

        # A limit, as the DSO would send it over MQTT: the controller cuts the sessions under it.
        status, out = await api.post("/api/grid/transformers/T1/limit", {"signal_id": "op-1", "limit_kw": 8,
                                                                          "source": "operator"})
        assert status == 202 and out["signal_id"] == "op-1" and out["intervals"][0]["limit_kw"] == 8
        await until(lambda: api.daemon.grid.snapshot()["transformers"]["T1"]["limit_kw"] == 8, 5, "limit in force")
        def cut() -> bool:
            sessions = api.daemon.grid.snapshot()["transformers"]["T1"]["sessions"]
            return all(s["setpoint_kw"] is not None for s in sessions) and \
                sum(s["setpoint_kw"] for s in sessions) <= 8.0 + 1e-6
        await until(cut, 10, "setpoints cut under the limit")
        _, snap = await api.get("/api/grid")
        t1 = snap["transformers"]["T1"]
        assert t1["limit_kw"] == 8 and "operator" in t1["limit_source"]
        assert sum(s["setpoint_kw"] or 0 for s in t1["sessions"]) <= 8.0 + 1e-6
        _, events = await api.get("/api/grid/events?limit=500", token="read")
        assert any(e["kind"] == "limit" and e.get("limit_kw") == 8 for e in events["events"])
        assert any(e["kind"] == "push" for e in events["events"])
        _, few = await api.get("/api/grid/events?limit=1")
        assert len(few["events"]) == 1

        status, out = await api.post("/api/grid/sessions/G-1/1/need", {"energy_kwh": 12.5, "guaranteed_kwh": 2,
                                                                         "departure": "2099-01-01T06:00:00Z"})
        assert status == 200 and out["session"]["energy_kwh"] == 12.5 and out["session"]["guaranteed_kwh"] == 2
        session = next(s for s in api.daemon.grid.snapshot()["transformers"]["T1"]["sessions"] if s["station_id"] == "G-1")
        assert session["need_kwh"] == 12.5 and session["need_source"] == "api"


async def test_limit_and_need_failures(tmp_path: Path) -> None:
    async with charging_site(tmp_path, n=1) as (api, _):
        status, out = await api.post("/api/grid/transformers/T9/limit", {"signal_id": "x", "limit_kw": 5})
        assert status == 404 and "unknown transformer 'T9'" in out["error"]
        status, out = await api.post("/api/grid/transformers/T1/limit", {"signal_id": "x"})
        assert status == 422 and "limit_kw" in out["error"]
        status, out = await api.post("/api/grid/transformers/T1/limit", {"signal_id": "x", "limit_kw": 500})
        assert status == 422 and out["error"].startswith("limit signal rejected")
        status, out = await api.post("/api/grid/transformers/T1/limit", ["not", "an", "object"])
        assert status == 422
        status, _ = await api.post("/api/grid/transformers/T1/limit", {"signal_id": "x", "limit_kw": 5}, token="read")
        assert status == 403
        assert api.daemon.grid.snapshot()["transformers"]["T1"]["limit_kw"] == 100  # nothing applied

        status, out = await api.post("/api/grid/sessions/G-1/7/need", {"energy_kwh": 5})
        assert status == 404
        status, out = await api.post("/api/grid/sessions/G-1/one/need", {"energy_kwh": 5})
        assert status == 400 and out["field"] == "evse_id"
        status, out = await api.post("/api/grid/sessions/G-1/1/need", {})
        assert status == 422
        status, out = await api.post("/api/grid/sessions/G-1/1/need", {"energy_kwh": -1})
        assert status == 422 and out["field"] == "energy_kwh"
        status, out = await api.post("/api/grid/sessions/G-1/1/need", {"departure": "tomorrow"})
        assert status == 422 and out["field"] == "departure"
        status, out = await api.get("/api/grid/events?limit=0")
        assert status == 400 and out["field"] == "limit"
