"""Simulated OCPP 2.1 stations and V2X: the version layer on a manual clock, then over the wire
against a central system built from the `ocpp` package's own v21 ChargePoint (tests/sim_csms.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from ocpp.v21 import call

from simulators.clock import Clock, ManualClock
from simulators.ev import EV
from simulators.models import EVModel, StationModel
from simulators.station import SimStation
from simulators.station_core import StationCore
from tests.sim_csms import Csms, station_running
from tests.waiting import until

T0 = datetime(2025, 1, 6, 17, 0, tzinfo=UTC)
V2X_CAR = EVModel(max_current_a=16, iso15118=True, bidirectional=True, max_discharge_w=7000, min_discharge_w=1380,
                  battery_kwh=60)
PLAIN_CAR = EVModel(max_current_a=16, iso15118=True, battery_kwh=60)


def model21(**kw: Any) -> StationModel:
    return StationModel(**{"ocpp_version": "2.1", "v2g": True, "max_current_a": 16, "authorize": False,
                           "meter_interval_s": 60, **kw})


def make(model: StationModel | None = None) -> tuple[StationCore, ManualClock]:
    clock = ManualClock(T0)
    core = StationCore("CS21", model or model21(), clock)
    core.set_online(True)
    return core, clock


def ev(model: EVModel = V2X_CAR, soc: float = 0.6) -> EV:
    return EV(model=model, soc=soc, target_soc=0.9, min_soc=0.3, energy_need_kwh=18)


def setpoint(tx_id: str | None, periods: list[dict], *, unit: str = "W", pid: int = 1,
             purpose: str = "TxProfile") -> dict:
    profile: dict[str, Any] = {"id": pid, "stackLevel": 1, "chargingProfilePurpose": purpose,
                               "chargingProfileKind": "Relative",
                               "chargingSchedule": [{"id": 1, "chargingRateUnit": unit,
                                                     "chargingSchedulePeriod": periods}]}
    if tx_id is not None:
        profile["transactionId"] = tx_id
    return profile


def discharge(value_w: float, **extra: Any) -> list[dict]:
    return [{"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": value_w, **extra}]


def install(core: StationCore, profile: dict, evse_id: int = 1) -> dict:
    return core.handle("SetChargingProfile", {"evseId": evse_id, "chargingProfile": profile})


def run(core: StationCore, clock: ManualClock, seconds: float) -> None:
    clock.advance(seconds)
    core.advance(clock.now())


# ------------------------------------------------------------------------------------------ version layer


def test_central_setpoint_discharges_within_the_bounds_and_stops_at_the_minimum_soc() -> None:
    core, clock = make()
    car = ev()
    core.plug_in(1, car)
    answer = install(core, setpoint(core.transaction_id(1), discharge(-5000.0, dischargeLimit=-6900.0,
                                                                        limit=11000.0)))
    assert answer == {"status": "Accepted"}
    assert core.power_w[1] == pytest.approx(-5000.0)
    assert core.evses[1].operation_mode == "CentralSetpoint"
    install(core, setpoint(core.transaction_id(1), discharge(-9000.0, dischargeLimit=-4140.0)))
    assert core.power_w[1] == pytest.approx(-4140.0)  # dischargeLimit bounds the setpoint
    install(core, setpoint(core.transaction_id(1), discharge(-20000.0)))
    assert core.power_w[1] == pytest.approx(-7000.0)  # and the car its own discharge power
    run(core, clock, 8 * 3600)
    assert car.soc == pytest.approx(0.3) and core.power_w[1] == 0
    assert core.evses[1].import_wh == 0 and core.evses[1].export_wh > 0


def test_a_car_without_v2x_never_discharges_and_positive_setpoints_charge() -> None:
    core, clock = make()
    core.plug_in(1, ev(PLAIN_CAR))
    assert install(core, setpoint(core.transaction_id(1), discharge(-5000.0)))["status"] == "Accepted"
    run(core, clock, 600)
    assert core.power_w[1] == 0 and core.evses[1].export_wh == 0
    assert core.charging_state(1) == "SuspendedEV"
    install(core, setpoint(core.transaction_id(1), discharge(6900.0)))
    assert core.power_w[1] == pytest.approx(6900.0)


def test_charging_only_idle_and_what_a_station_refuses() -> None:
    core, _ = make()
    core.plug_in(1, ev())
    tx = core.transaction_id(1)
    assert install(core, setpoint(tx, [{"startPeriod": 0, "operationMode": "ChargingOnly", "limit": 4140.0}])) == {
        "status": "Accepted"}
    assert core.power_w[1] == pytest.approx(4140.0)
    install(core, setpoint(tx, [{"startPeriod": 0, "operationMode": "Idle"}]))
    assert core.power_w[1] == 0 and core.charging_state(1) == "SuspendedEVSE"
    refused = install(core, setpoint(tx, [{"startPeriod": 0, "operationMode": "ExternalSetpoint", "setpoint": 1.0}]))
    assert refused["statusInfo"]["additionalInfo"] == "UnsupportedOperationMode"
    refused = install(core, setpoint(tx, [{"startPeriod": 0, "operationMode": "CentralSetpoint"}]))
    assert refused["statusInfo"]["additionalInfo"] == "MissingSetpoint"
    refused = install(core, setpoint(tx, discharge(-1000.0, limit=-100.0)))
    assert refused["statusInfo"]["additionalInfo"] == "NegativeLimit"

    one_way, _ = make(model21(v2g=False))
    one_way.plug_in(1, ev())
    refused = install(one_way, setpoint(one_way.transaction_id(1), discharge(-5000.0)))
    assert refused["statusInfo"]["additionalInfo"] == "DischargeNotSupported"
    assert install(one_way, setpoint(one_way.transaction_id(1), discharge(4140.0)))["status"] == "Accepted"
    assert one_way.power_w[1] == pytest.approx(4140.0)


def test_allowed_energy_transfer_without_bpt_stops_the_discharge() -> None:
    core, _ = make()
    core.plug_in(1, ev())
    tx = core.transaction_id(1)
    install(core, setpoint(tx, discharge(-5000.0)))
    assert core.handle("NotifyAllowedEnergyTransfer", {"transactionId": tx,
                                                       "allowedEnergyTransfer": ["AC_three_phase"]}) == {
        "status": "Accepted"}
    assert core.power_w[1] == 0
    core.handle("NotifyAllowedEnergyTransfer", {"transactionId": tx, "allowedEnergyTransfer": ["AC_BPT"]})
    assert core.power_w[1] == pytest.approx(-5000.0)
    assert core.handle("NotifyAllowedEnergyTransfer", {"transactionId": "nope", "allowedEnergyTransfer": ["DC"]})[
        "status"] == "Rejected"


def test_charging_needs_carry_the_v2x_parameters_of_the_car() -> None:
    core, _ = make()
    core.plug_in(1, ev())
    needs = next(o.payload for o in core.outbox if o.action == "NotifyEVChargingNeeds")["chargingNeeds"]
    assert needs["requestedEnergyTransfer"] == "AC_BPT" and "AC_BPT" in needs["availableEnergyTransfer"]
    assert (needs["controlMode"], needs["mobilityNeedsMode"]) == ("DynamicControl", "EVCC_SECC")
    v2x = needs["v2xChargingParameters"]
    assert v2x["maxDischargePower"] == 7000 and v2x["minDischargePower"] == 1380
    assert v2x["maxChargePower"] == pytest.approx(16 * 3 * 230) and v2x["minChargePower"] == pytest.approx(6 * 690)
    assert v2x["evMinV2XEnergyRequest"] == -18000  # (0.3 - 0.6) x 60 kWh: may give 18 kWh
    assert v2x["evMaxV2XEnergyRequest"] == 18000 and v2x["targetSoC"] == 90
    assert "customData" not in needs  # 2.1 has the fields; the 2.0.1 customData convention is not used

    plain, _ = make(model21(v2g=False))
    plain.plug_in(1, ev())
    needs = next(o.payload for o in plain.outbox if o.action == "NotifyEVChargingNeeds")["chargingNeeds"]
    assert needs["requestedEnergyTransfer"] == "AC_three_phase" and "v2xChargingParameters" not in needs


# ------------------------------------------------------------------------------------------ over the wire


def station(csms: Csms, station_id: str, **model_kw: Any) -> SimStation:
    model = model21(**{"meter_interval_s": 0.5, "tick_s": 0.1, "message_attempt_interval_s": 0.1, "authorize": True,
                       **model_kw})
    return SimStation(station_id, csms.url, model, clock=Clock(), call_timeout_s=2.0, reconnect_base_s=0.05,
                      validate=True)


def registers(csms: Csms, station_id: str) -> list[tuple[float, float, float]]:
    """(import Wh, export Wh, export W) of every metered TransactionEvent, in order."""
    out = []
    for event in csms.of("TransactionEvent", station_id):
        for sample in event.get("meterValue", []):
            values = {v["measurand"]: v["value"] for v in sample["sampledValue"]}
            out.append((values["Energy.Active.Import.Register"], values["Energy.Active.Export.Register"],
                        values["Power.Active.Export"]))
    return out


async def test_v2x_car_obeys_a_central_setpoint_discharge_over_the_wire() -> None:
    csms = Csms()
    async with csms.running(), station_running(station(csms, "V2X-1")) as st:
        st.plug_in(1, ev())
        needs = (await until(lambda: csms.of("NotifyEVChargingNeeds"), 5, "charging needs"))[0]["chargingNeeds"]
        assert needs["v2xChargingParameters"]["evMinV2XEnergyRequest"] == -18000
        tx_id = await until(lambda: st.core.transaction_id(1), 5, "transaction")
        await until(lambda: st.core.charging_state(1) == "Charging", 5, "charging")
        profile = setpoint(tx_id, discharge(-5000.0, dischargeLimit=-7000.0, limit=11000.0))
        assert (await csms.call("V2X-1", call.SetChargingProfile(evse_id=1, charging_profile=profile))).status == \
            "Accepted"
        mode = await until(lambda: [e for e in csms.of("TransactionEvent")
                                    if e["triggerReason"] == "OperationModeChanged"], 5, "OperationModeChanged")
        assert mode[0]["transactionInfo"]["operationMode"] == "CentralSetpoint"
        mark = len(registers(csms, "V2X-1"))
        await until(lambda: len(registers(csms, "V2X-1")) >= mark + 3, 5, "three samples while discharging")
        after = registers(csms, "V2X-1")[mark:]
        imports, exports, export_w = zip(*after)
        assert exports[-1] > exports[0] and export_w[-1] == pytest.approx(5000.0)  # the export register rises
        assert imports[-1] == imports[0]  # and the import register does not
        composite = await csms.call("V2X-1", call.GetCompositeSchedule(duration=300, evse_id=1,
                                                                       charging_rate_unit="W"))
        period = composite.schedule["charging_schedule_period"][0]
        assert (period["operation_mode"], period["setpoint"], period["discharge_limit"]) == (
            "CentralSetpoint", -5000.0, -7000.0)
        assert st.stats.errors == {}


async def test_a_car_without_v2x_on_a_21_station_never_discharges_over_the_wire() -> None:
    csms = Csms()
    async with csms.running(), station_running(station(csms, "V2X-2")) as st:
        st.plug_in(1, ev(PLAIN_CAR))
        needs = (await until(lambda: csms.of("NotifyEVChargingNeeds"), 5, "charging needs"))[0]["chargingNeeds"]
        assert needs["requestedEnergyTransfer"] == "AC_three_phase"
        tx_id = await until(lambda: st.core.transaction_id(1), 5, "transaction")
        profile = setpoint(tx_id, discharge(-5000.0, dischargeLimit=-7000.0))
        assert (await csms.call("V2X-2", call.SetChargingProfile(evse_id=1, charging_profile=profile))).status == \
            "Accepted"
        mark = len(registers(csms, "V2X-2"))
        await until(lambda: len(registers(csms, "V2X-2")) >= mark + 3, 5, "three samples")
        assert all(export == 0 and power == 0 for _, export, power in registers(csms, "V2X-2"))
        assert st.core.evses[1].export_wh == 0 and st.power_w[1] == 0
