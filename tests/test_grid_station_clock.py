"""Stations whose clocks differ from ours still obey the limit.

A station evaluates its charging profiles on its own clock. Third-party stations (built from the
`ocpp` package) run a year behind (the date a simulator scenario pinned), hours ahead, half a minute
behind and in step. After a limit drop, and after every refined plan and limit change that follows,
what each station itself says it may draw must add up to no more than the limit. The daemon shows
each station's clock offset, learnt from the timestamps of its messages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tests.grid_outside import Api, Site, daemon
from tests.ocpp_station import LibStation
from tests.waiting import until

TOLERANCE_KW = 0.05
PINNED = datetime(2025, 1, 15, 14, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
OFFSETS = {
    "CLK-2025": PINNED - datetime.now(UTC),  # a scenario's pinned date
    "CLK-AHEAD": timedelta(hours=3),
    "CLK-BEHIND": -timedelta(seconds=30),
    "CLK-SLIGHT": -timedelta(seconds=4),
    "CLK-OK-1": timedelta(0),
    "CLK-OK-2": timedelta(0),
}

GRID: dict[str, Any] = {
    "transformers": {"T1": {"capacity_kw": 200, "members": [{"station": "CLK-*"}]}},
    "planning": {"slot_s": 900, "horizon_slots": 8, "replan_interval_s": 1, "min_push_interval_s": 0,
                 "verify_after_s": 60},
    "session_defaults": {"energy_kwh": 40, "dwell_h": 8, "guaranteed_kwh": 0},
}


@contextlib.asynccontextmanager
async def skewed_site(tmp_path: Path) -> AsyncIterator[tuple[Site, Api, list[LibStation]]]:
    site = Site(tmp_path, GRID)
    stations = [LibStation(sid, clock_offset=offset, meter_interval_s=0.3) for sid, offset in OFFSETS.items()]
    async with daemon(site), Api(site) as api:
        try:
            for st in stations:
                await st.connect(site.ws_url)
                await st.start_transaction(1)
            await until(lambda: _all_sessions(api, len(stations)), 15, "every session known")
            yield site, api, stations
        finally:
            for st in stations:
                await st.stop()


async def _all_sessions(api: Api, n: int) -> bool:
    return len(await api.sessions()) == n


def allowed_kw(stations: list[LibStation]) -> float:
    """What the stations themselves draw under the profiles they hold, on their own clocks."""
    for st in stations:
        st.tick()
    return sum(st.power_kw() for st in stations)


async def _hold(stations: list[LibStation], limit_kw: float, seconds: float) -> list[float]:
    """Sample for ``seconds``; return every sample above the limit."""
    over = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        kw = allowed_kw(stations)
        if kw > limit_kw + TOLERANCE_KW:
            over.append(round(kw, 2))
        await asyncio.sleep(0.05)
    return over


async def test_stations_with_wrong_clocks_obey_cuts_and_plans(tmp_path: Path) -> None:
    async with skewed_site(tmp_path) as (_site, api, stations):
        # Under the rated capacity every car may take its 16 A, whatever its station's clock says.
        await until(lambda: allowed_kw(stations) >= 6 * 11.04 - TOLERANCE_KW, 5, "every car at full power")
        for n, limit in enumerate((24.0, 12.0, 30.0, 0.0)):
            status, body = await api.post("/api/grid/transformers/T1/limit",
                                          {"signal_id": f"clk-{n}", "limit_kw": limit, "source": "operator"})
            assert status == 202, body
            await until(lambda lim=limit: allowed_kw(stations) <= lim + TOLERANCE_KW, 5,
                        f"stations under {limit} kW")
            # Refined plans follow the cut every second; none may hand a station more than the limit,
            # not even for the moments its clock says a new schedule has not begun yet.
            over = await _hold(stations, limit, 4.0)
            assert not over, f"limit {limit} kW: stations allowed {over[:10]}"
        views = await api.sessions()
        for st in stations:
            shown = views[(st.station_id, 1)].get("clock_offset_s")
            assert shown is not None and abs(shown - st.clock_offset.total_seconds()) < 5, (st.station_id, shown)


async def test_new_sessions_on_a_station_a_year_behind_are_paused_under_a_zero_limit(tmp_path: Path) -> None:
    async with skewed_site(tmp_path) as (site, api, stations):
        status, _ = await api.post("/api/grid/transformers/T1/limit",
                                   {"signal_id": "zero", "limit_kw": 0, "source": "operator"})
        assert status == 202
        await until(lambda: allowed_kw(stations) <= TOLERANCE_KW, 5, "everything paused")
        late = LibStation("CLK-LATE", clock_offset=OFFSETS["CLK-2025"], meter_interval_s=0.3)
        try:
            await late.connect(site.ws_url)
            await late.start_transaction(1)
            await until(lambda: late.tx_pushes(), 5, "the late session got its profile")
            await until(lambda: late.power_kw() == 0.0, 5, "the late session paused on its own clock")
            assert not await _hold([*stations, late], 0.0, 3.0)
        finally:
            await late.stop()
