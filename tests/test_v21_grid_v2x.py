"""Grid control of OCPP 2.1 stations built from the `ocpp` package's own v21 ChargePoint, over a real
websocket to the real daemon.

A limit below the non-EV load: the 2.1 car with V2X gets a TxProfile whose period in force is
``CentralSetpoint`` with a negative setpoint in W and a ``dischargeLimit``, discharges, and the
verifier finds nothing wrong with it; the 2.1 car without V2X, on the very same kind of
bidirectional station, only ever gets ``ChargingOnly`` periods (it is paused, never discharged); a
V2X car on a station that offers AC_BPT but takes no CentralSetpoint is allowed to charge only
(NotifyAllowedEnergyTransfer) and never gets a setpoint.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_fixture import running_daemon
from tests.ocpp_station21 import Car, Station21
from tests.waiting import until

pytestmark = pytest.mark.timeout(90)

BASE_KW = 20.0
GRID: dict[str, Any] = {
    "transformers": {"T1": {"capacity_kw": 200, "members": [{"station": "G21-*"}],
                            "base_load": {"kind": "profile", "profile": [["00:00", BASE_KW]], "timezone": "UTC"}}},
    "planning": {"slot_s": 900, "horizon_slots": 8, "replan_interval_s": 1, "min_push_interval_s": 0,
                 "verify_after_s": 1},
    "session_defaults": {"energy_kwh": 30, "dwell_h": 8, "guaranteed_kwh": 0},
}


def tx_pushes(st: Station21) -> list[dict[str, Any]]:
    return [p for p in st.pushes if p["charging_profile_purpose"] == "TxProfile"]


def first_period(profile: dict[str, Any]) -> dict[str, Any]:
    return dict(profile["charging_schedule"][0]["charging_schedule_period"][0])


async def test_limit_below_base_load_discharges_the_v2x_car_only(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, grid=GRID, api={"enabled": False}) as d:
        grid = d.daemon.grid
        assert grid is not None
        v2x = Station21("G21-V2X", v2x=True, car=Car(v2x=True, max_discharge_w=7000.0))
        plain = Station21("G21-PLAIN", v2x=True, car=Car(v2x=False))  # a bidirectional station, a car that is not
        # AC_BPT but no CentralSetpoint: its discharge would be outside our control, so the car may charge only.
        local = Station21("G21-LOCAL", bpt_only=True, car=Car(v2x=True))
        stations = [v2x, plain, local]
        try:
            for st in stations:
                await st.connect(d.ws_url)
                assert st.subprotocol == "ocpp2.1"
                await st.boot()
            book = grid.sessions
            await until(lambda: all(book.station(s.station_id).ready for s in stations), 15, "stations set up")
            caps = book.station("G21-V2X").caps
            assert caps.operation_modes and caps.v2g and caps.tx_unit == "W"
            for st in stations:
                await st.start()
            await until(lambda: len(book) == 3, 10, "every session known")
            assert book.sessions[("G21-V2X", 1)].need is not None and book.sessions[("G21-V2X", 1)].need.v2g
            assert book.sessions[("G21-PLAIN", 1)].need is not None and not book.sessions[("G21-PLAIN", 1)].need.v2g

            assert not book.station("G21-LOCAL").caps.v2g
            await until(lambda: local.allowed_transfers, 10, "the bidirectional request answered")
            assert local.allowed_transfers == [["AC_three_phase"]] and not v2x.allowed_transfers
            assert not plain.allowed_transfers

            await grid.limits.submit("T1", {"signal_id": "below-base", "limit_kw": 10.0, "source": "operator"})

            def discharging() -> bool:
                found = v2x.period_in_force()
                return found is not None and found[0].get("operation_mode") == "CentralSetpoint"
            await until(discharging, 15, "a CentralSetpoint discharge for the V2X car")
            period, unit = v2x.period_in_force() or ({}, "")
            assert unit == "W"
            assert period["setpoint"] < 0 and period["discharge_limit"] <= 0
            assert period["setpoint"] >= period["discharge_limit"] and period["setpoint"] >= -7000.0
            assert period.get("limit", 0) == 0

            # The car follows it; what the station reports is checked against the setpoint, and holds.
            for _ in range(4):
                await asyncio.gather(*(st.meter(1.0) for st in stations))
                await asyncio.sleep(0.3)
            assert v2x.power_w() < 0 and v2x.export_wh > 0
            session = book.sessions[("G21-V2X", 1)]
            await until(lambda: session.power_kw is not None and session.power_kw < 0, 5, "discharge metered")
            assert session.setpoint_kw is not None and session.setpoint_kw < 0
            assert session.fixed_kw is None, session.fixed_reason  # no finding: it does what it was told
            assert session.push_status == "Accepted"

            # The car without V2X: paused by ChargingOnly periods, never a setpoint, never discharging.
            await until(lambda: plain.power_w() == 0.0, 10, "the plain car paused")
            for profile in tx_pushes(plain):
                for p in profile["charging_schedule"][0]["charging_schedule_period"]:
                    assert p.get("operation_mode") == "ChargingOnly" and "setpoint" not in p and p["limit"] >= 0
            assert tx_pushes(plain) and plain.export_wh == 0.0
            for profile in tx_pushes(local):
                assert all("setpoint" not in p for p in profile["charging_schedule"][0]["charging_schedule_period"])
            # The V2X car's charging periods (if any) are ChargingOnly too: one convention per version.
            modes = {p.get("operation_mode") for profile in tx_pushes(v2x)
                     for p in profile["charging_schedule"][0]["charging_schedule_period"]}
            assert modes <= {"ChargingOnly", "CentralSetpoint"} and None not in modes

            # The limit back above the load: the V2X car charges again (ChargingOnly), no discharge left.
            await grid.limits.submit("T1", {"signal_id": "room-again", "limit_kw": 100.0, "source": "operator"})

            def charging_again() -> bool:
                found = v2x.period_in_force()
                return found is not None and found[0].get("operation_mode") == "ChargingOnly" and found[0]["limit"] > 0
            await until(charging_again, 15, "the V2X car charging again")
            assert v2x.power_w() > 0 and plain.power_w() > 0
        finally:
            await asyncio.gather(*(st.close() for st in stations))
