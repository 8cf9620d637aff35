"""How one planned schedule goes on the wire per version: OCPP 2.1 periods carry an operationMode
(discharge as CentralSetpoint with a negative setpoint in W and a dischargeLimit), OCPP 2.0.1 keeps
the negative-limit convention for station models flagged ``v2g`` only, and every profile is valid
against its version's official schema."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from csms.grid.effects.pusher import shape_tx_profile
from csms.grid.effects.setup import can_discharge
from csms.grid.model.sessions import StationCaps
from csms.protocol import schemas
from profiles.hysteresis import Setpoints
from profiles.installed import setpoints_from_profile

PLAN = Setpoints("CS", 1, "tx-1", datetime(2026, 1, 1, 17, tzinfo=UTC), 900.0, (16.0, -10.0, -10.0, 0.0, 8.0), 3)


def periods(caps: StationCaps) -> list[dict[str, object]]:
    shaped = shape_tx_profile(PLAN, caps)
    schema = "v21" if caps.operation_modes else "v201"
    schemas.validate(schema, "SetChargingProfile", "Request", {"evseId": 1, "chargingProfile": shaped.profile})
    assert shaped.profile["chargingSchedule"][0]["chargingRateUnit"] == caps.tx_unit
    return list(shaped.profile["chargingSchedule"][0]["chargingSchedulePeriod"])


def test_21_v2x_station_gets_central_setpoints_in_watts() -> None:
    caps = StationCaps(rate_units=("A", "W"), periods_per_schedule=24, v2g=True, operation_modes=True)
    got = periods(caps)
    assert [p["operationMode"] for p in got] == ["ChargingOnly", "CentralSetpoint", "ChargingOnly", "ChargingOnly"]
    assert got[0]["limit"] == 16 * 3 * 230.0
    discharge = got[1]
    assert discharge["setpoint"] == -10 * 3 * 230.0 and discharge["dischargeLimit"] == discharge["setpoint"]
    assert discharge["limit"] == 0.0 and discharge["startPeriod"] == 900
    assert got[2]["limit"] == 0.0 and "setpoint" not in got[2]  # a pause is ChargingOnly at 0


@pytest.mark.parametrize("v2g", [False, True])
def test_21_station_that_cannot_discharge_never_gets_a_setpoint(v2g: bool) -> None:
    caps = StationCaps(rate_units=("A", "W"), periods_per_schedule=24, v2g=False, operation_modes=True)
    got = periods(caps)
    assert all(p["operationMode"] == "ChargingOnly" and "setpoint" not in p and p["limit"] >= 0 for p in got)
    assert caps.tx_unit == "A"


def test_21_v2x_station_in_amps_only_gets_setpoints_in_amps() -> None:
    caps = StationCaps(rate_units=("A",), periods_per_schedule=24, v2g=True, operation_modes=True)
    got = periods(caps)
    assert got[1]["operationMode"] == "CentralSetpoint" and got[1]["setpoint"] == -10.0


def test_201_negative_limit_only_for_models_flagged_v2g() -> None:
    flagged = periods(StationCaps(rate_units=("A",), periods_per_schedule=24, v2g=True))
    assert [p["limit"] for p in flagged] == [16.0, -10.0, 0.0, 8.0]
    assert all("operationMode" not in p for p in flagged)
    unknown = periods(StationCaps(rate_units=("A",), periods_per_schedule=24))  # the default: no V2G
    assert [p["limit"] for p in unknown] == [16.0, 0.0, 8.0]


def _result(name: str, value: str) -> dict[str, object]:
    return {"attributeStatus": "Accepted", "component": {"name": "V2XChargingCtrlr"}, "variable": {"name": name},
            "attributeValue": value}


def test_a_21_station_can_discharge_when_its_device_model_says_so() -> None:
    modes, bpt = "ChargingOnly,CentralSetpoint,Idle", "AC_single_phase,AC_three_phase,AC_BPT"
    assert can_discharge([_result("SupportedOperationModes", modes), _result("SupportedEnergyTransferModes", bpt)])
    assert not can_discharge([_result("SupportedOperationModes", "ChargingOnly,Idle"),
                              _result("SupportedEnergyTransferModes", bpt)])
    assert not can_discharge([_result("SupportedOperationModes", modes),
                              _result("SupportedEnergyTransferModes", "AC_three_phase")])
    assert not can_discharge([])  # says nothing: no discharge


def test_an_installed_21_schedule_reads_back_by_its_setpoints() -> None:
    """After a reconnect the station's own TxProfile (GetChargingProfiles) becomes what it has installed."""
    caps = StationCaps(rate_units=("A", "W"), periods_per_schedule=24, v2g=True, operation_modes=True)
    shaped = shape_tx_profile(PLAN, caps)
    read = setpoints_from_profile(shaped.profile, station_id="CS", evse_id=1, slot_s=900.0, horizon_slots=5,
                                  default_phases=3, now=PLAN.start)
    assert read is not None
    assert [round(a, 1) for a in read.current_a] == [16.0, -10.0, -10.0, 0.0, 8.0]
