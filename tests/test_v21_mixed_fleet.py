"""A mixed fleet of our simulator's stations, 2.0.1 and 2.1 (V2X and not), under one transformer on the
real daemon: a limit below the non-EV load is held, the 2.1 V2X car discharges by CentralSetpoint, the
others pause; with room again they all charge."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from simulators.clock import Clock
from simulators.ev import EV
from simulators.models import EVModel, StationModel
from simulators.station import SimStation
from tests.daemon_fixture import running_daemon
from tests.waiting import until

pytestmark = pytest.mark.timeout(90)

BASE_KW = 20.0
GRID: dict[str, Any] = {
    "transformers": {"T1": {"capacity_kw": 200, "members": [{"station": "MIX-*"}],
                            "base_load": {"kind": "profile", "profile": [["00:00", BASE_KW]], "timezone": "UTC"}}},
    "planning": {"slot_s": 900, "horizon_slots": 8, "replan_interval_s": 1, "min_push_interval_s": 0,
                 "verify_after_s": 1},
    "session_defaults": {"energy_kwh": 30, "dwell_h": 6, "guaranteed_kwh": 0},
}
# station id -> (OCPP version, bidirectional station and car)
FLEET = {"MIX-201-A": ("2.0.1", False), "MIX-201-B": ("2.0.1", False), "MIX-21-V2X": ("2.1", True),
         "MIX-21-AC": ("2.1", False)}


def ev_for(v2x: bool) -> EV:
    if v2x:
        model = EVModel(name="v2x", battery_kwh=60, max_current_a=16, bidirectional=True, max_discharge_w=7000,
                        iso15118=True)
        return EV(model, soc=0.6, target_soc=0.9, min_soc=0.3,
                  departure=datetime.now(timezone.utc) + timedelta(hours=6), energy_need_kwh=18)
    return EV(EVModel(name="ev", battery_kwh=60, max_current_a=16, iso15118=True), soc=0.3, target_soc=0.9)


async def test_mixed_versions_hold_a_limit_below_the_base_load(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, grid=GRID, api={"enabled": False}) as d:
        grid = d.daemon.grid
        assert grid is not None
        stations = [SimStation(sid, d.ws_url, StationModel(name=f"sim{version}", ocpp_version=version, v2g=v2x,
                                                           meter_interval_s=0.5, tick_s=0.1,
                                                           message_attempt_interval_s=0.2),
                               clock=Clock(), call_timeout_s=5, reconnect_base_s=0.1, reconnect_max_s=0.5)
                    for sid, (version, v2x) in FLEET.items()]
        tasks = [asyncio.create_task(s.run()) for s in stations]
        try:
            await asyncio.wait_for(asyncio.gather(*(s.accepted.wait() for s in stations)), 15)
            assert {sid: link.version.subprotocol for sid, link in d.daemon.connections.items()} == {
                sid: f"ocpp{version}" for sid, (version, _) in FLEET.items()}
            for s in stations:
                s.plug_in(1, ev_for(FLEET[s.station_id][1]))
            book = grid.sessions
            await until(lambda: len(book) == len(FLEET) and all(st.ready for st in book.stations.values()), 15,
                        "sessions known, stations set up")

            await grid.limits.submit("T1", {"signal_id": "below", "limit_kw": 10.0, "source": "operator"})
            power = {s.station_id: s for s in stations}

            def kw(sid: str) -> float:
                return sum(power[sid].power_w.values()) / 1000.0
            await until(lambda: kw("MIX-21-V2X") < -1.0, 15, "the 2.1 V2X car discharging")
            await until(lambda: all(kw(sid) <= 0.05 for sid in FLEET if sid != "MIX-21-V2X"), 15, "the others paused")
            # Room under the limit is 10 - 20 = -10 kW (less the margin): only discharge can come near it.
            assert sum(kw(sid) for sid in FLEET) < 0
            assert grid.snapshot()["transformers"]["T1"]["limit_kw"] == 10.0

            await grid.limits.submit("T1", {"signal_id": "room", "limit_kw": 150.0, "source": "operator"})
            await until(lambda: all(kw(sid) > 1.0 for sid in FLEET), 15, "every car charging again")
        finally:
            for s in stations:
                s.stop()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
