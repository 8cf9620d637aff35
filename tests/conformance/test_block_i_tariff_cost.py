"""Block I, Tariff and cost (issue 17 item 4).

Tariff plans (energy, charging time, idle fee, session fee, time-of-day energy prices, per
id-token group) come from the config and the API. Covers I01 (the driver's tariff in the
Authorize answer's personalMessage), TC_I_01 / I02.FR.01 (running cost: CostUpdated while
charging), TC_I_02 / I03 (the final totalCost in the TransactionEvent Ended answer; 0.00 for a
free session, nothing when no tariff applies), and the cost kept with the transaction in the API.
A grid pause (SuspendedEVSE) is never billed as idle time.

The clock of a session is the station's (the event timestamps), so the figures are exact.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from tests.conformance.station import Rig, Station, rig, ts

T0 = datetime(2025, 3, 3, 14, 0, tzinfo=timezone.utc)
TARIFFS = {
    "currency": "EUR", "default": "standard", "cost_update_interval_s": 0,
    "plans": {
        "standard": {"energy_per_kwh": 0.30, "time_per_hour": 1.20, "idle_per_hour": 6.00, "idle_grace_min": 0,
                     "session_fee": 0.50},
        "fleet": {"energy_per_kwh": 0.20, "groups": ["I-FLEET"]},
        "free": {"energy_per_kwh": 0.0, "groups": ["I-FREE"]},
        "peak": {"energy_per_kwh": 0.25, "groups": ["I-PEAK"], "timezone": "UTC",
                 "time_of_day": [{"start": "17:00", "end": "20:00", "energy_per_kwh": 0.40}]},
    },
}


def card(token: str) -> dict:
    return {"idToken": token, "type": "ISO14443"}


async def _session(st: Station, tx: str, token: str, steps: list[tuple[float, float, str]],
                   end: tuple[float, float]) -> dict:
    """Started at the first step, Updated at the others, Ended at ``end``; returns the Ended answer."""
    (m0, wh0, state0), *rest = steps
    await st.transaction("Started", tx, id_token=card(token), energy_wh=wh0, charging_state=state0, at=ts(m0, T0))
    for minutes, wh, state in rest:
        await st.transaction("Updated", tx, trigger="MeterValuePeriodic", energy_wh=wh, charging_state=state,
                             at=ts(minutes, T0))
    return await st.transaction("Ended", tx, trigger="EVCommunicationLost", energy_wh=end[1], at=ts(end[0], T0),
                                charging_state="Idle", info={"stoppedReason": "EVDisconnected"})


async def _tokens(r: Rig) -> None:
    await r.id_token("I-PLAIN")
    await r.id_token("I-F", group_id="I-FLEET")
    await r.id_token("I-0", group_id="I-FREE")
    await r.id_token("I-P", group_id="I-PEAK")


async def test_i02_i03_running_cost_while_charging_and_the_final_total(tmp_path: Path) -> None:
    async with rig(tmp_path, tariffs=TARIFFS) as r, r.station("I-1") as st:
        await _tokens(r)
        await st.transaction("Started", "I-TX", id_token=card("I-PLAIN"), energy_wh=1000, charging_state="Charging",
                             at=ts(0, T0))
        await st.transaction("Updated", "I-TX", trigger="MeterValuePeriodic", energy_wh=6000,
                             charging_state="Charging", at=ts(30, T0))
        # 5 kWh x 0.30 + 0.5 h charging x 1.20 + session fee 0.50
        assert await st.expect("CostUpdated") == {"transactionId": "I-TX", "totalCost": 2.6}  # I02.FR.01
        await st.transaction("Updated", "I-TX", trigger="ChargingStateChanged", energy_wh=11000,
                             charging_state="SuspendedEV", at=ts(60, T0))
        assert await st.expect("CostUpdated") == {"transactionId": "I-TX", "totalCost": 4.7}
        ended = await st.transaction("Ended", "I-TX", trigger="EVCommunicationLost", energy_wh=11000,
                                     charging_state="Idle", at=ts(90, T0), info={"stoppedReason": "EVDisconnected"})
        # + 0.5 h idle (SuspendedEV after charging) x 6.00
        assert ended["totalCost"] == 7.7  # I03
        cost = (await r.get("/api/transactions/I-1/I-TX"))["cost"]
        assert cost == {"total": 7.7, "currency": "EUR", "tariff": "standard", "final": True,
                        "energy": 3.0, "time": 1.2, "idle": 3.0, "fee": 0.5}
        assert len(st.calls("CostUpdated")) == 2  # none after the end


async def test_i03_group_plans_free_sessions_and_time_of_day_prices(tmp_path: Path) -> None:
    async with rig(tmp_path, tariffs=TARIFFS) as r, r.station("I-2") as st:
        await _tokens(r)
        fleet = await _session(st, "I-TXF", "I-F", [(0, 0, "Charging")], (60, 10000))
        assert fleet["totalCost"] == 2.0
        free = await _session(st, "I-TX0", "I-0", [(0, 0, "Charging")], (60, 10000))
        assert free["totalCost"] == 0.0  # a free session says 0.00 (an omitted totalCost means "not free")
        # 16:30-17:30, 4 kWh evenly: 2 kWh at 0.25 before 17:00 and 2 kWh at 0.40 after.
        peak = await _session(st, "I-TXP", "I-P", [(150, 0, "Charging")], (210, 4000))
        assert peak["totalCost"] == 1.3
        assert (await r.get("/api/transactions/I-2/I-TXP"))["cost"]["tariff"] == "peak"


async def test_i03_a_grid_pause_is_not_billed_as_idle_time(tmp_path: Path) -> None:
    async with rig(tmp_path, tariffs=TARIFFS) as r, r.station("I-3") as st:
        await _tokens(r)
        ended = await _session(st, "I-TXG", "I-PLAIN", [(0, 0, "Charging"), (30, 3000, "SuspendedEVSE"),
                                                        (60, 3000, "Charging")], (90, 6000))
        # 6 kWh x 0.30 + 1 h charging x 1.20 + 0.50; the 30 min SuspendedEVSE cost nothing
        assert ended["totalCost"] == 3.5


async def test_i03_no_tariff_no_total_cost(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("I-4") as st:
        await r.id_token("I-PLAIN")
        ended = await _session(st, "I-TXN", "I-PLAIN", [(0, 0, "Charging")], (60, 10000))
        assert "totalCost" not in ended
        assert st.calls("CostUpdated") == []
        assert (await r.get("/api/transactions/I-4/I-TXN")).get("cost") is None


async def test_i01_the_driver_sees_the_tariff_when_authorizing(tmp_path: Path) -> None:
    async with rig(tmp_path, tariffs=TARIFFS) as r, r.station("I-5") as st:
        await _tokens(r)
        info = (await st.send("Authorize", {"idToken": card("I-PLAIN")}))["idTokenInfo"]
        assert info["personalMessage"]["format"] == "UTF8"
        assert "0.30 EUR/kWh" in info["personalMessage"]["content"]
        info = (await st.send("Authorize", {"idToken": card("I-F")}))["idTokenInfo"]
        assert "0.20 EUR/kWh" in info["personalMessage"]["content"]


async def test_i_tariff_plans_are_managed_through_the_api(tmp_path: Path) -> None:
    async with rig(tmp_path, tariffs=TARIFFS) as r, r.station("I-6") as st:
        await r.id_token("I-N", group_id="I-NIGHT")
        created = await r.post("/api/tariffs", {"name": "night", "energy_per_kwh": 0.10, "groups": ["I-NIGHT"]},
                               status=201)
        assert created["name"] == "night"
        plans = (await r.get("/api/tariffs"))["plans"]
        assert {"standard", "fleet", "night"} <= set(plans) and plans["night"]["energy_per_kwh"] == 0.10
        ended = await _session(st, "I-TXN", "I-N", [(0, 0, "Charging")], (60, 10000))
        assert ended["totalCost"] == 1.0
        code, body = await r.api.post("/api/tariffs", {"name": "bad", "energy_per_kwh": -1})
        assert code == 422 and body["field"] == "energy_per_kwh"
        await r.delete("/api/tariffs/night")
        assert "night" not in (await r.get("/api/tariffs"))["plans"]
