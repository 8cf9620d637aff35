"""Net energy end to end through the daemon: a station (the `ocpp` package's 2.0.1 ChargePoint) sends
both registers; the transaction's record, the operator API and the grid's remaining need count
import minus export, also after the daemon was killed and started again on the same store.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.v201 import call

from tests.grid_outside import Api, Site, daemon
from tests.ocpp_station import LibStation, iso
from tests.waiting import until


def grid() -> dict[str, Any]:
    return {
        "transformers": {"T1": {"capacity_kw": 200, "members": [{"station": "NET-*"}]}},
        "planning": {"slot_s": 900, "horizon_slots": 8, "replan_interval_s": 1, "min_push_interval_s": 0},
        "session_defaults": {"energy_kwh": 40, "dwell_h": 8, "guaranteed_kwh": 0},
        "station_models": [{"pattern": "NET-*", "v2g": True}],
    }


async def _registers(st: LibStation, import_wh: float, export_wh: float) -> None:
    evse = st.evses[1]
    await st._call(call.TransactionEvent(
        event_type="Updated", timestamp=iso(st.now()), trigger_reason="MeterValuePeriodic", seq_no=st._seq(evse),
        transaction_info={"transaction_id": evse.transaction_id, "charging_state": "Charging"},
        meter_value=[{"timestamp": iso(st.now()), "sampled_value": [
            {"measurand": "Energy.Active.Import.Register", "value": import_wh, "unit_of_measure": {"unit": "Wh"}},
            {"measurand": "Energy.Active.Export.Register", "value": export_wh / 1000.0,
             "unit_of_measure": {"unit": "kWh"}}]}]))


async def _view(api: Api) -> dict[str, Any]:
    return (await api.sessions()).get(("NET-1", 1), {})


async def _exported(api: Api, kwh: float) -> bool:
    return (await _view(api)).get("exported_kwh") == pytest.approx(kwh)


async def test_net_energy_from_both_registers_through_the_daemon_and_a_restart(tmp_path: Path) -> None:
    site = Site(tmp_path, grid())
    st = LibStation("NET-1", meter_interval_s=3600)  # only the events below carry meter values
    try:
        async with Api(site) as api:
            async with daemon(site) as running:
                await st.connect(site.ws_url)
                tx = await st.start_transaction(1)  # import register 0 Wh
                await st._call(call.NotifyEVChargingNeeds(evse_id=1, charging_needs={
                    "requested_energy_transfer": "AC_three_phase",
                    "departure_time": iso(datetime.now(UTC) + timedelta(hours=6)),
                    "ac_charging_parameters": {"energy_amount": 20000, "ev_min_current": 6, "ev_max_current": 16,
                                               "ev_max_voltage": 400},
                    "custom_data": {"vendor_id": "org.netbewust.v2x", "evMaxDischargePower": 11000,
                                    "evMinV2XEnergyRequest": -15000, "evMaxV2XEnergyRequest": 20000}}))
                await _registers(st, 2000, 0)
                await until(lambda: _exported(api, 0.0), 10, "the session and its registers known")
                view = await _view(api)
                assert view["remaining_kwh"] == pytest.approx(18.0) and view["guaranteed_kwh"] == pytest.approx(5.0)
                await _registers(st, 2000, 3000)  # the car gave 3 kWh back
                await until(lambda: _exported(api, 3.0), 10, "the export seen by the grid")
                view = await _view(api)
                assert view["remaining_kwh"] == pytest.approx(21.0) and view["delivered_kwh"] == pytest.approx(-1.0)
                record = await api.get(f"/api/transactions/NET-1/{tx}")
                assert record["export_wh"] == pytest.approx(3000.0) and record["net_energy_wh"] == pytest.approx(-1000)
                await running.stop(signal.SIGKILL)
            await st.wait_gone()
            async with daemon(site):
                view = await _view(api)  # rebuilt from the store before the station is back
                assert view["exported_kwh"] == pytest.approx(3.0) and view["remaining_kwh"] == pytest.approx(21.0)
    finally:
        await st.stop()
        await site.cleanup()
