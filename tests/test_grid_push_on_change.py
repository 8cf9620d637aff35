"""Push only on change: a session whose plan did not change is never sent the same schedule again, and
re-plans never postpone over-draw detection.

Third-party stations (the `ocpp` package) charge under one transformer whose contract makes the limit
drop in twenty minutes, so every plan has steps; their plans do not change. Some stations report a
small PeriodsPerSchedule or none at all (then one period is assumed), so their schedules are cut short.
Behind a second transformer,
other stations start and stop transactions every few hundred milliseconds: the controller re-plans
several times a second. Each station counts the TxProfiles that prescribe exactly what it already
had for the next eight hours (on its own clock): there must be none. One station ignores its profiles
and draws 11 kW: it must be found out and budgeted at what it draws, despite the re-plans.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.grid_outside import Api, Site, daemon
from tests.ocpp_station import LibStation
from tests.waiting import until

PLANS = 40  # re-plans to watch
FIND_S = 20.0


def grid_with_a_coming_contract() -> dict[str, Any]:
    now = datetime.now(UTC)
    start, end = now + timedelta(minutes=20), now + timedelta(minutes=80)
    return {
        "transformers": {
            "T1": {"capacity_kw": 150, "members": [{"station": "POC-S*"}, {"station": "POC-LIAR"}],
                   "base_load": {"kind": "profile", "profile": [["00:00", 20]], "timezone": "UTC"},
                   "contracts": [{"name": "soon", "days": "daily", "start": f"{start:%H:%M}",
                                  "end": f"{end:%H:%M}", "limit_kw": 60, "timezone": "UTC"}]},
            "T2": {"capacity_kw": 100, "members": [{"station": "POC-CHURN-*"}]}},
        "planning": {"slot_s": 900, "horizon_slots": 16, "replan_interval_s": 1, "min_push_interval_s": 0,
                     "verify_after_s": 5},  # longer than the re-push interval of the bug
        "session_defaults": {"energy_kwh": 30, "dwell_h": 6, "guaranteed_kwh": 0},
    }


@contextlib.asynccontextmanager
async def busy_site(tmp_path: Path) -> AsyncIterator[tuple[Api, list[LibStation], LibStation]]:
    site = Site(tmp_path, grid_with_a_coming_contract())
    steady = [LibStation(f"POC-S{i}", periods_per_schedule=(24, 3, None)[i % 3], meter_interval_s=0.3)
              for i in range(6)]
    liar = LibStation("POC-LIAR", obey=False, periods_per_schedule=None, meter_interval_s=0.3)
    churn = [LibStation(f"POC-CHURN-{i}", meter_interval_s=0.3) for i in range(3)]
    async with daemon(site), Api(site) as api:
        try:
            for st in [*steady, liar, *churn]:
                await st.connect(site.ws_url)
            for st in [*steady, liar]:
                await st.start_transaction(1)
            stop = asyncio.Event()
            churning = asyncio.create_task(_churn(churn, stop))
            try:
                yield api, steady, liar
            finally:
                stop.set()
                await churning
        finally:
            for st in [*steady, liar, *churn]:
                await st.stop()


async def _churn(stations: list[LibStation], stop: asyncio.Event) -> None:
    """Sessions come and go on other stations: every change is a reason to re-plan."""
    n = 0
    while not stop.is_set():
        st = stations[n % len(stations)]
        if st.evses[1].transaction_id is None:
            await st.start_transaction(1)
        else:
            await st.end_transaction(1)
        n += 1
        await asyncio.sleep(0.3)


async def test_no_identical_schedule_is_pushed_while_other_groups_replan(tmp_path: Path) -> None:
    async with busy_site(tmp_path) as (api, steady, liar):
        await until(lambda: all(st.tx_pushes() for st in steady), 10, "every steady session planned")
        plans_before = (await api.get("/api/grid"))["plans"]
        await until(lambda: _plans_since(api, plans_before, PLANS), 60, f"{PLANS} more plans")
        plans = (await api.get("/api/grid"))["plans"] - plans_before
        identical = {st.station_id: st.identical_pushes for st in [*steady, liar] if st.identical_pushes}
        assert not identical, f"identical TxProfiles pushed (station: count) over {plans} plans: {identical}"


async def test_overdraw_is_found_although_plans_keep_coming(tmp_path: Path) -> None:
    async with busy_site(tmp_path) as (api, _steady, liar):
        # A limit that leaves the seven cars about 3.5 kW each; the liar draws 11 kW whatever it is
        # told: found and budgeted at its draw.
        status, _ = await api.post("/api/grid/transformers/T1/limit",
                                   {"signal_id": "poc-45", "limit_kw": 45, "source": "operator"})
        assert status == 202
        await until(lambda: _found(api), FIND_S, "over-draw found")
        session = (await api.sessions())[("POC-LIAR", 1)]
        assert session["fixed_kw"] is not None and abs(session["fixed_kw"] - 11.04) < 0.2, session
        assert liar.power_kw() > 11


async def _found(api: Api) -> bool:
    return any(e.get("station_id") == "POC-LIAR" and e.get("finding") == "overdraw"
               for e in await api.events("finding"))


async def _plans_since(api: Api, before: int, more: int) -> bool:
    return (await api.get("/api/grid"))["plans"] >= before + more
