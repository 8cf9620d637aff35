"""Verification by energy: the meter's energy register cross-checks the power a station reports.

Third-party stations (the `ocpp` package) that report ``Power.Active.Import = 0`` while their energy
register climbs (a real third-party simulator does this). The daemon must measure them by their
energy deltas, flag the mismatch, and judge over-draw on energy per interval as well as on power.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.grid_outside import Api, Site, daemon
from tests.ocpp_station import LibStation
from tests.waiting import until

GRID: dict[str, Any] = {
    "transformers": {"T1": {"capacity_kw": 200, "members": [{"station": "NRG-*"}]}},
    "planning": {"slot_s": 900, "horizon_slots": 8, "replan_interval_s": 1, "min_push_interval_s": 0,
                 "verify_after_s": 2},
    "session_defaults": {"energy_kwh": 40, "dwell_h": 8, "guaranteed_kwh": 0},
}
FULL_KW = 16 * 3 * 230 / 1000.0


@contextlib.asynccontextmanager
async def site_with(tmp_path: Path, *stations: LibStation) -> AsyncIterator[Api]:
    site = Site(tmp_path, GRID)
    async with daemon(site), Api(site) as api:
        try:
            for st in stations:
                await st.connect(site.ws_url)
                await st.start_transaction(1)
            yield api
        finally:
            for st in stations:
                await st.stop()


async def _actual(api: Api, station_id: str) -> float | None:
    return (await api.sessions()).get((station_id, 1), {}).get("actual_kw")


async def test_silent_power_is_measured_from_the_energy_register_and_flagged(tmp_path: Path) -> None:
    silent = LibStation("NRG-SILENT", report_power=False, meter_interval_s=0.3)
    honest = LibStation("NRG-HONEST", meter_interval_s=0.3)
    async with site_with(tmp_path, silent, honest) as api:
        await until(lambda: _near(api, "NRG-HONEST", FULL_KW), 10, "the honest station measured")
        await until(lambda: _near(api, "NRG-SILENT", FULL_KW), 10, "the silent station measured by its energy")
        group = await api.group()
        assert group["measured_ev_kw"] >= 2 * FULL_KW * 0.9, group["measured_ev_kw"]
        findings = [e for e in await api.events("finding") if e.get("station_id") == "NRG-SILENT"]
        assert any(f.get("finding") == "power_mismatch" for f in findings), findings
        assert not [e for e in await api.events("finding") if e.get("station_id") == "NRG-HONEST"
                    and e.get("finding") == "power_mismatch"]


async def _near(api: Api, station_id: str, kw: float) -> bool:
    actual = await _actual(api, station_id)
    return actual is not None and abs(actual - kw) <= 0.1 * kw


async def test_overdraw_is_judged_on_energy_when_power_says_nothing(tmp_path: Path) -> None:
    liar = LibStation("NRG-LIAR", report_power=False, obey=False, meter_interval_s=0.3)
    others = [LibStation(f"NRG-{i}", meter_interval_s=0.3) for i in range(2)]
    async with site_with(tmp_path, liar, *others) as api:
        status, _ = await api.post("/api/grid/transformers/T1/limit",
                                   {"signal_id": "nrg-1", "limit_kw": 15, "source": "operator"})
        assert status == 202
        await until(lambda: _overdraw(api), 15, "over-draw found from the energy register")
        session = (await api.sessions())[("NRG-LIAR", 1)]
        assert session["fixed_kw"] is not None and abs(session["fixed_kw"] - FULL_KW) < 0.1 * FULL_KW, session
        # The others absorb what the liar takes: the stations really under the limit.
        await until(lambda: sum(st.power_kw() for st in [liar, *others]) <= 15 + 0.05, 10,
                    "the others squeezed so the transformer holds")


async def _overdraw(api: Api) -> bool:
    return any(e.get("station_id") == "NRG-LIAR" and e.get("finding") == "overdraw"
               for e in await api.events("finding"))
