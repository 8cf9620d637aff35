"""Station core without a network: state machine, energy and smart charging on a manual clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from simulators.clock import ManualClock
from simulators.ev import EV, EVSession
from simulators.meter import iso
from simulators.models import EVModel, StationModel
from simulators.station_core import StationCore

T0 = datetime(2025, 1, 6, 17, 0, tzinfo=timezone.utc)


def make(model: StationModel | None = None, **kw) -> tuple[StationCore, ManualClock]:
    clock = ManualClock(T0)
    core = StationCore("CS1", model or StationModel(authorize=False, meter_interval_s=60), clock, **kw)
    core.set_online(True)
    return core, clock


def ev(**kw) -> EV:
    return EV(model=EVModel(**{"max_current_a": 32.0, **kw}), soc=0.2, target_soc=1.0)


def tx_events(core: StationCore) -> list[dict]:
    return [o.payload for o in core.outbox if o.action == "TransactionEvent"]


def tx_profile(core: StationCore, limit: float, *, unit: str = "A", stack: int = 1, pid: int = 10,
               periods: list[dict] | None = None) -> dict:
    return {"id": pid, "stackLevel": stack, "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative", "transactionId": core.transaction_id(1),
            "chargingSchedule": [{"id": 1, "chargingRateUnit": unit,
                                  "chargingSchedulePeriod": periods or [{"startPeriod": 0, "limit": limit}]}]}


def test_plug_in_starts_transaction_and_charges_at_station_max() -> None:
    core, clock = make()
    core.plug_in(1, ev())
    assert core.charging_state(1) == "Charging"
    assert core.power_w[1] == pytest.approx(32 * 3 * 230)
    clock.advance(3600)
    core.advance(clock.now())
    assert core.evses[1].import_wh == pytest.approx(32 * 3 * 230, rel=1e-6)
    events = tx_events(core)
    assert [e["eventType"] for e in events[:2]] == ["Started", "Updated"]
    assert [e["seqNo"] for e in events] == list(range(len(events)))
    assert events[0]["transactionInfo"]["chargingState"] == "EVConnected"
    assert events[1]["transactionInfo"]["chargingState"] == "Charging"
    periodic = [e for e in events if e["triggerReason"] == "MeterValuePeriodic"]
    assert len(periodic) == 60  # one per simulated minute, stepped exactly


def test_lower_limit_lowers_power_and_zero_suspends_then_resumes() -> None:
    core, clock = make()
    core.plug_in(1, ev())
    assert core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, 10)}) == {
        "status": "Accepted"}
    assert core.power_w[1] == pytest.approx(10 * 3 * 230)
    core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, 0)})
    assert core.power_w[1] == 0 and core.charging_state(1) == "SuspendedEVSE"
    core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, 16)})
    assert core.charging_state(1) == "Charging" and core.power_w[1] == pytest.approx(16 * 3 * 230)


def test_limit_below_six_amps_means_no_charging() -> None:
    core, _ = make()
    core.plug_in(1, ev())
    core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, 5.9)})
    assert core.power_w[1] == 0 and core.charging_state(1) == "SuspendedEVSE"


def test_no_resume_ev_stays_suspended_ev() -> None:
    core, _ = make()
    core.plug_in(1, ev(resumes_after_pause=False))
    core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, 0)})
    core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, 16)})
    assert core.power_w[1] == 0 and core.charging_state(1) == "SuspendedEV"


def test_charger_that_ignores_resumed_limit_stays_suspended_evse() -> None:
    core, _ = make(StationModel(authorize=False, ignores_resumed_limit=True))
    core.plug_in(1, ev())
    core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, 0)})
    core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, 16)})
    assert core.power_w[1] == 0 and core.charging_state(1) == "SuspendedEVSE"


def test_period_boundary_is_applied_to_the_second() -> None:
    core, clock = make()
    core.plug_in(1, ev())
    periods = [{"startPeriod": 0, "limit": 16}, {"startPeriod": 600, "limit": 8}]
    core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, 0, periods=periods)})
    clock.advance(1200)
    core.advance(clock.now())
    expected = (16 * 600 + 8 * 600) * 3 * 230 / 3600
    assert core.evses[1].import_wh == pytest.approx(expected, rel=1e-6)


def test_watt_profile_on_amp_only_station_is_rejected_with_reason() -> None:
    core, _ = make(StationModel(authorize=False, rate_units=("A",)))
    core.plug_in(1, ev())
    answer = core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, 7000, unit="W")})
    assert answer == {"status": "Rejected",
                      "statusInfo": {"reasonCode": "UnsupportedRateUnit", "additionalInfo": "UnitNotAllowed"}}


@pytest.mark.parametrize("mutate, reason", [
    (lambda p: p["chargingSchedule"][0]["chargingSchedulePeriod"].__setitem__(0, {"startPeriod": 5, "limit": 6}),
     "FirstStartPeriodNotZero"),
    (lambda p: p.__setitem__("stackLevel", 99), "StackLevelTooHigh"),
    (lambda p: p.__setitem__("transactionId", "other"), "TransactionIdMismatch"),
])
def test_bad_profiles_rejected(mutate, reason) -> None:
    core, _ = make()
    core.plug_in(1, ev())
    profile = tx_profile(core, 10)
    mutate(profile)
    answer = core.handle_set_charging_profile({"evseId": 1, "chargingProfile": profile})
    assert answer["status"] == "Rejected" and answer["statusInfo"]["additionalInfo"] == reason
    assert len(answer["statusInfo"]["reasonCode"]) <= 20


def test_tx_profile_without_transaction_and_duplicate_stack_level_rejected() -> None:
    core, _ = make()
    no_tx = {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
             "transactionId": "x", "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                                                         "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6}]}]}
    assert core.handle_set_charging_profile({"evseId": 1, "chargingProfile": no_tx})["status"] == "Rejected"
    core.plug_in(1, ev())
    assert core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, 10, pid=1)})[
        "status"] == "Accepted"
    dup = core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, 12, pid=2)})
    assert dup["statusInfo"] == {"reasonCode": "DuplicateProfile", "additionalInfo": "DuplicateStackLevel"}


def test_negative_limit_only_for_v2g_models_and_discharge_respects_min_soc() -> None:
    car = EV(model=EVModel(bidirectional=True, max_discharge_w=3 * 230 * 10, max_current_a=16), soc=0.5,
             min_soc=0.45)
    core, _ = make()
    core.plug_in(1, EV(model=car.model, soc=0.5))
    rejected = core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, -10)})
    assert rejected["statusInfo"]["additionalInfo"] == "DischargeNotSupported"

    core, clock = make(StationModel(authorize=False, v2g=True))
    core.plug_in(1, car)
    assert core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, -16)})[
        "status"] == "Accepted"
    assert core.power_w[1] == pytest.approx(-10 * 3 * 230)  # capped by the car's discharge power
    clock.advance(6 * 3600)
    core.advance(clock.now())
    assert car.soc == pytest.approx(0.45)
    assert core.power_w[1] == 0
    names = {v["measurand"] for e in tx_events(core) for m in e.get("meterValue", []) for v in m["sampledValue"]}
    assert {"Power.Active.Export", "Energy.Active.Export.Register", "Current.Export"} <= names


def test_composite_schedule_reports_stacked_profiles() -> None:
    core, _ = make()
    core.plug_in(1, ev())
    station_max = {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "ChargingStationMaxProfile",
                   "chargingProfileKind": "Absolute",
                   "chargingSchedule": [{"id": 1, "chargingRateUnit": "A", "startSchedule": iso(T0),
                                         "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 20}]}]}
    assert core.handle_set_charging_profile({"evseId": 0, "chargingProfile": station_max})["status"] == "Accepted"
    periods = [{"startPeriod": 0, "limit": 25}, {"startPeriod": 300, "limit": 10}]
    core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, 0, periods=periods)})
    answer = core.handle_get_composite_schedule({"evseId": 1, "duration": 600, "chargingRateUnit": "A"})
    assert answer["status"] == "Accepted"
    assert [(p["startPeriod"], p["limit"]) for p in answer["schedule"]["chargingSchedulePeriod"]] == [
        (0, 20.0), (300, 10.0)]


def test_tx_default_fallback_when_tx_profile_expires() -> None:
    core, clock = make()
    default = {"id": 5, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
               "chargingProfileKind": "Absolute",
               "chargingSchedule": [{"id": 1, "chargingRateUnit": "A", "startSchedule": iso(T0),
                                     "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 8}]}]}
    core.handle_set_charging_profile({"evseId": 0, "chargingProfile": default})
    core.plug_in(1, ev())
    assert core.power_w[1] == pytest.approx(8 * 3 * 230)
    profile = tx_profile(core, 20)
    profile["validTo"] = iso(T0 + timedelta(seconds=120))
    core.handle_set_charging_profile({"evseId": 1, "chargingProfile": profile})
    assert core.power_w[1] == pytest.approx(20 * 3 * 230)
    clock.advance(121)
    core.advance(clock.now())
    assert core.power_w[1] == pytest.approx(8 * 3 * 230)


def test_ev_full_goes_suspended_ev_and_departure_ends_transaction() -> None:
    core, clock = make()
    car = EVModel(battery_kwh=10, max_current_a=16, taper_start_soc=1.0)
    session = EVSession(evse_id=1, arrival=T0 + timedelta(minutes=1), departure=T0 + timedelta(hours=5), ev=car,
                        soc_start=0.5, energy_need_kwh=2.0)
    core, clock = make(sessions=[session])
    clock.advance(3 * 3600)
    core.advance(clock.now())
    assert core.charging_state(1) == "SuspendedEV"
    assert core.evses[1].import_wh == pytest.approx(2000 / car.efficiency, rel=1e-6)
    clock.advance(3 * 3600)
    core.advance(clock.now())
    ended = [e for e in tx_events(core) if e["eventType"] == "Ended"]
    assert ended and ended[0]["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert core.evses[1].ev is None


def test_offline_events_are_flagged_and_kept() -> None:
    core, clock = make()
    core.set_online(False)
    core.plug_in(1, ev())
    clock.advance(120)
    core.advance(clock.now())
    events = tx_events(core)
    assert events and all(e["offline"] is True for e in events)
    assert all(o.transactional for o in core.outbox)


def test_device_model_get_set() -> None:
    core, _ = make(StationModel(rate_units=("W",), max_stack_level=3))
    got = core.handle_get_variables({"getVariableData": [
        {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "RateUnit"}},
        {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "ProfileStackLevel"}},
        {"component": {"name": "Nope"}, "variable": {"name": "X"}}]})["getVariableResult"]
    assert [g.get("attributeValue") for g in got] == ["W", "3", None]
    assert got[2]["attributeStatus"] == "UnknownComponent"
    result = core.handle_set_variables({"setVariableData": [
        {"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"}, "attributeValue": "5"},
        {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "RateUnit"}, "attributeValue": "A"}]})
    assert [r["attributeStatus"] for r in result["setVariableResult"]] == ["Accepted", "Rejected"]
    assert core.meter_interval_s == 5.0


def test_apply_delay_postpones_the_new_limit() -> None:
    core, clock = make(StationModel(authorize=False, profile_apply_delay_s=30))
    core.plug_in(1, ev())
    core.handle_set_charging_profile({"evseId": 1, "chargingProfile": tx_profile(core, 10)})
    assert core.power_w[1] == pytest.approx(32 * 3 * 230)
    clock.advance(30)
    core.advance(clock.now())
    assert core.power_w[1] == pytest.approx(10 * 3 * 230)
