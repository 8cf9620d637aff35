"""End to end through the daemon process: a car that does not wake up after a pause (a station built
from the `ocpp` package) is detected, learnt under its idToken, and after a restart of the daemon
its next session, on another station, is planned without a pause: under a limit with room for one
car at its minimum, it keeps charging and a car with no history (and a tighter need) is paused.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.grid_outside import Api, Site, daemon
from tests.ocpp_station import LibStation
from tests.waiting import until


def grid() -> dict[str, Any]:
    return {
        "transformers": {"T1": {"capacity_kw": 200, "members": [{"station": "RES-*"}]}},
        "planning": {"slot_s": 900, "horizon_slots": 8, "replan_interval_s": 1, "min_push_interval_s": 0,
                     "verify_after_s": 2, "resume_timeout_s": 3},
        "session_defaults": {"energy_kwh": 40, "dwell_h": 8, "guaranteed_kwh": 0},
    }


def _draws(st: LibStation) -> float:
    st.tick()
    return st.power_kw()


async def _session(api: Api, station_id: str) -> dict[str, Any]:
    return (await api.sessions()).get((station_id, 1), {})


async def _limit(api: Api, kw: float, signal_id: str) -> None:
    status, body = await api.post("/api/grid/transformers/T1/limit",
                                  {"signal_id": signal_id, "limit_kw": kw, "source": "operator"})
    assert status == 202, body


async def test_a_car_learnt_not_to_resume_is_not_paused_after_a_daemon_restart(tmp_path: Path) -> None:
    site = Site(tmp_path, grid())
    try:
        async with Api(site) as api:
            # 1. CAR-X does not wake up after a pause; CAR-B does.
            a, b = LibStation("RES-A", meter_interval_s=0.3), LibStation("RES-B", meter_interval_s=0.3)
            try:
                async with daemon(site) as running:
                    for st in (a, b):
                        await st.connect(site.ws_url)
                    await a.start_transaction(1, id_token="CAR-X", resumes=False)
                    await b.start_transaction(1, id_token="CAR-B")
                    await until(lambda: _known(api, ("RES-A", "RES-B")), 15, "both sessions known")
                    await until(lambda: _measured(api, ("RES-A", "RES-B")), 10, "both drawing, as the grid sees it")
                    await _limit(api, 2, "pause-all")  # no room for any car's 6 A: both pause
                    await until(lambda: _draws(a) == 0 and _draws(b) == 0, 10, "both cars paused")
                    await until(lambda: _idle(api, ("RES-A", "RES-B")), 10, "the grid saw both stop")
                    await _limit(api, 100, "recover")
                    await until(lambda: _draws(b) > 0, 10, "CAR-B charges again")
                    assert _draws(a) == 0
                    await until(lambda: _no_resume(api, "RES-A", "known"), 15, "CAR-X found not to resume")
                    assert (await _session(api, "RES-B"))["no_resume"] == "no"
                    await a.end_transaction(1)
                    await b.end_transaction(1)
                    assert await running.stop(signal.SIGTERM) == 0, running.text()[-3000:]
            finally:
                for st in (a, b):
                    await st.stop()

            # 2. The next evening, a restarted daemon: CAR-X on another station, plenty of time;
            #    CAR-D, no history, much to charge soon (the car a planner would rather keep).
            c, d = LibStation("RES-C", meter_interval_s=0.3), LibStation("RES-D", meter_interval_s=0.3)
            try:
                async with daemon(site):
                    for st in (c, d):
                        await st.connect(site.ws_url)
                    departure = datetime.now(UTC)
                    await c.start_transaction(1, id_token="CAR-X")
                    await c.send_needs(1, 5000, departure + timedelta(hours=8))
                    await d.start_transaction(1, id_token="CAR-D")
                    await d.send_needs(1, 40000, departure + timedelta(hours=3))
                    await until(lambda: _known(api, ("RES-C", "RES-D")), 15, "both sessions known")
                    await until(lambda: _no_resume(api, "RES-C", "known"), 10, "CAR-X judged on what was learnt")
                    await _limit(api, 6, "one-car")  # room for one car at 6 A (4.1 kW)
                    await until(lambda: _draws(d) == 0 and _draws(c) > 0, 10, "CAR-D paused, CAR-X kept charging")
                    view = await _session(api, "RES-C")
                    assert "token:CAR-X" in view["no_resume_reason"] and view["planned_off_from"] is None
                    limits = [p.profile["charging_schedule"][0]["charging_schedule_period"] for p in c.tx_pushes()]
                    for periods in limits:  # no plan for it ever paused it to resume later
                        values = [p["limit"] for p in periods]
                        assert not any(v == 0 and any(w > 0 for w in values[i + 1:]) for i, v in enumerate(values))
                    assert (await _session(api, "RES-D"))["no_resume"] == "no"
            finally:
                for st in (c, d):
                    await st.stop()
    finally:
        await site.cleanup()


async def _known(api: Api, stations: tuple[str, ...]) -> bool:
    sessions = await api.sessions()
    return all((sid, 1) in sessions for sid in stations)


async def _measured(api: Api, stations: tuple[str, ...]) -> bool:
    sessions = await api.sessions()
    return all((sessions.get((sid, 1), {}).get("actual_kw") or 0) > 1 for sid in stations)


async def _idle(api: Api, stations: tuple[str, ...]) -> bool:
    sessions = await api.sessions()
    return all((sessions.get((sid, 1), {}).get("actual_kw") or 0) < 0.1 for sid in stations)


async def _no_resume(api: Api, station_id: str, level: str) -> bool:
    return (await _session(api, station_id)).get("no_resume") == level
