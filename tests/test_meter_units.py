"""Energy is stored in Wh whatever ``unitOfMeasure`` (unit and multiplier) says, on both backends.

Third-party stations (the `ocpp` package) report their energy register in Wh, in kWh, and in Wh with
multiplier 3; their registers start at 1236 Wh as a real meter's would. The transaction summary,
its energy series and the grid view must all say the same energy in the same unit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.grid_outside import Api, Site, daemon
from tests.ocpp_station import LibStation
from tests.waiting import until

GRID: dict[str, Any] = {
    "transformers": {"T1": {"capacity_kw": 200, "members": [{"station": "UNIT-*"}]}},
    "planning": {"replan_interval_s": 1, "min_push_interval_s": 0},
}
START_WH = 1236.0


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def test_energy_in_wh_whatever_the_unit(tmp_path: Path, backend: str) -> None:
    site = Site(tmp_path, GRID, backend=backend)
    stations = {unit: LibStation(f"UNIT-{n}", energy_unit=unit, meter_interval_s=0.3)
                for n, unit in enumerate(("Wh", "kWh", "Wh*10^3"))}
    try:
        async with daemon(site), Api(site) as api:
            txs = {}
            for unit, st in stations.items():
                await st.connect(site.ws_url)
                st.evses[1].energy_wh = START_WH
                txs[unit] = await st.start_transaction(1)
            await until(lambda: all(st.evses[1].energy_wh > START_WH + 3 for st in stations.values()), 10,
                        "some energy charged")
            sessions = await api.sessions()
            for unit, st in stations.items():
                st.tick()
                delivered = sessions[(st.station_id, 1)]["delivered_kwh"]
                assert 0 < delivered < (st.evses[1].energy_wh - START_WH) / 1000.0 + 0.001, (unit, delivered)
            for st in stations.values():
                await st.end_transaction(1)
            for unit, st in stations.items():
                detail = await api.get(f"/api/transactions/{st.station_id}/{txs[unit]}")
                final = detail["energy_series"][-1]["energy_wh"]
                assert abs(detail["energy_wh"] - final) < 0.2, (unit, detail["energy_wh"], final)
                assert START_WH < detail["energy_wh"] < START_WH + 100, (unit, detail["energy_wh"])
                assert detail["energy_series"][0]["energy_wh"] == pytest.approx(START_WH, abs=0.2), unit
    finally:
        for st in stations.values():
            await st.stop()
        await site.cleanup()
