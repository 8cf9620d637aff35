"""Simulated OCPP 1.6J stations: the version layer on a manual clock, then over the wire against a
central system built from the `ocpp` package's own v16 ChargePoint (tests/sim_csms.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ocpp.v16 import call

from simulators.clock import Clock, ManualClock
from simulators.ev import EV
from simulators.meter import iso
from simulators.models import EVModel, StationModel
from simulators.security import SecuritySettings
from simulators.station import SimStation
from simulators.station_core import StationCore
from tests.sim_csms import Csms, station_running
from tests.waiting import until

T0 = datetime(2025, 1, 6, 17, 0, tzinfo=UTC)


def model16(**kw: Any) -> StationModel:
    return StationModel(**{"ocpp_version": "1.6", "meter_interval_s": 60, **kw})


def make(model: StationModel | None = None) -> tuple[StationCore, ManualClock]:
    clock = ManualClock(T0)
    core = StationCore("CS16", model or model16(), clock)
    core.set_online(True)
    return core, clock


def car(**kw: Any) -> EV:
    return EV(model=EVModel(**{"max_current_a": 32.0, **kw}), soc=0.2)


ANSWERS: dict[str, Any] = {
    "Authorize": {"idTagInfo": {"status": "Accepted"}},
    "StartTransaction": {"transactionId": 42, "idTagInfo": {"status": "Accepted"}},
}


def exchange(core: StationCore, answers: dict[str, Any] | None = None) -> list[tuple[str, dict]]:
    """Send the whole outbox as the network layer would (prepare, answer, on_result); returns what went out."""
    answers = {**ANSWERS, **(answers or {})}
    sent: list[tuple[str, dict]] = []
    while core.outbox:
        item = core.outbox.popleft()
        payload = item.prepare(item.payload) if item.prepare else item.payload
        if payload is None:
            continue
        sent.append((item.action, payload))
        if item.on_result is not None:
            item.on_result(answers.get(item.action, {}))
    return sent


def of(sent: list[tuple[str, dict]], action: str) -> list[dict]:
    return [p for a, p in sent if a == action]


def value(sample: dict, measurand: str) -> float:
    return next(float(v["value"]) for v in sample["sampledValue"] if v["measurand"] == measurand)


def profile16(purpose: str, limit: float, *, pid: int = 1, stack: int = 0, kind: str = "Relative",
              unit: str = "A", periods: list[dict] | None = None, **extra: Any) -> dict:
    schedule: dict[str, Any] = {"chargingRateUnit": unit,
                                "chargingSchedulePeriod": periods or [{"startPeriod": 0, "limit": limit}]}
    if kind != "Relative":
        schedule["startSchedule"] = iso(T0)
    return {"chargingProfileId": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
            "chargingProfileKind": kind, "chargingSchedule": schedule, **extra}


def set_profile(core: StationCore, connector: int, profile: dict) -> str:
    return core.handle("SetChargingProfile", {"connectorId": connector, "csChargingProfiles": profile})["status"]


def charging(core: StationCore, ev: EV | None = None) -> list[tuple[str, dict]]:
    """Plug in, authorize, start: the StartTransaction answer gives transaction id 42."""
    core.plug_in(1, ev or car())
    return exchange(core)


# ------------------------------------------------------------------------------------------ version layer


def test_transaction_has_the_central_systems_integer_id_from_start_to_stop() -> None:
    core, clock = make()
    sent = charging(core)
    assert [a for a, _ in sent][:3] == ["StatusNotification", "Authorize", "StartTransaction"]
    assert of(sent, "StatusNotification")[0]["status"] == "Preparing"
    start = of(sent, "StartTransaction")[0]
    assert start == {"connectorId": 1, "idTag": "SIMTOKEN", "meterStart": 0, "timestamp": iso(T0)}
    assert core.dialect.transaction_id(1) == 42
    assert of(sent, "StatusNotification")[-1]["status"] == "Charging"
    clock.advance(120)
    core.advance(clock.now())
    sent = exchange(core)
    meters = of(sent, "MeterValues")
    assert len(meters) == 2 and all(m["transactionId"] == 42 and m["connectorId"] == 1 for m in meters)
    assert value(meters[-1]["meterValue"][0], "Power.Active.Import") == pytest.approx(32 * 3 * 230)
    assert all(isinstance(v["value"], str) for v in meters[0]["meterValue"][0]["sampledValue"])
    core.unplug(1)
    sent = exchange(core)
    stop = of(sent, "StopTransaction")[0]
    assert stop["transactionId"] == 42 and stop["reason"] == "EVDisconnected"
    assert stop["meterStop"] == round(core.evses[1].import_wh) > 0
    begin, end = stop["transactionData"]
    assert begin["sampledValue"][0]["context"] == "Transaction.Begin"
    assert end["sampledValue"][0]["context"] == "Transaction.End"
    assert value(end, "Energy.Active.Import.Register") == pytest.approx(core.evses[1].import_wh, abs=0.01)
    assert [s["status"] for s in of(sent, "StatusNotification")] == ["Finishing", "Available"]


def test_start_transaction_refused_by_the_central_system_stops_it_deauthorized() -> None:
    core, _ = make()
    core.plug_in(1, car())
    sent = exchange(core, {"StartTransaction": {"transactionId": 9, "idTagInfo": {"status": "Invalid"}}})
    stop = of(sent, "StopTransaction")[0]
    assert stop["transactionId"] == 9 and stop["reason"] == "DeAuthorized"
    assert core.power_w[1] == 0 and core.evses[1].tx is None


def test_tx_profile_binds_to_the_running_transaction_and_is_obeyed() -> None:
    core, _ = make()
    assert set_profile(core, 1, profile16("TxProfile", 10)) == "Rejected"  # no transaction yet
    charging(core)
    assert set_profile(core, 1, profile16("TxProfile", 10, transactionId=41)) == "Rejected"  # not ours
    assert set_profile(core, 0, profile16("TxProfile", 10)) == "Rejected"  # needs a connector
    assert set_profile(core, 1, profile16("TxProfile", 10, transactionId=42)) == "Accepted"
    assert core.power_w[1] == pytest.approx(10 * 3 * 230)
    assert set_profile(core, 1, profile16("TxProfile", 13, pid=2, stack=2)) == "Accepted"  # id optional in 1.6
    assert core.power_w[1] == pytest.approx(13 * 3 * 230)
    core.unplug(1)
    assert len(core.profiles) == 0  # TxProfiles die with their transaction


def test_tx_default_charge_point_max_stack_levels_validity_and_watts() -> None:
    core, clock = make()
    assert set_profile(core, 0, profile16("TxDefaultProfile", 16)) == "Accepted"
    charging(core)
    assert core.power_w[1] == pytest.approx(16 * 3 * 230)
    higher = profile16("TxDefaultProfile", 6900.0, pid=2, stack=1, unit="W", kind="Absolute",
                       validTo=iso(T0 + timedelta(seconds=300)))
    assert set_profile(core, 0, higher) == "Accepted"
    assert core.power_w[1] == pytest.approx(6900)
    cap = profile16("ChargePointMaxProfile", 8, pid=3, kind="Absolute")
    assert set_profile(core, 1, cap) == "Rejected"  # connector 0 only
    assert set_profile(core, 0, cap) == "Accepted"
    assert core.power_w[1] == pytest.approx(8 * 3 * 230)
    answer = core.handle("GetCompositeSchedule", {"connectorId": 1, "duration": 600, "chargingRateUnit": "A"})
    assert answer["status"] == "Accepted" and answer["connectorId"] == 1
    assert [(p["startPeriod"], p["limit"]) for p in answer["chargingSchedule"]["chargingSchedulePeriod"]] == [(0, 8.0)]
    assert core.handle("ClearChargingProfile", {"chargingProfilePurpose": "ChargePointMaxProfile"}) == {
        "status": "Accepted"}
    clock.advance(301)  # the W profile's validTo passed: back to the 16 A stack level 0
    core.advance(clock.now())
    assert core.power_w[1] == pytest.approx(16 * 3 * 230)
    assert core.handle("ClearChargingProfile", {"id": 99}) == {"status": "Unknown"}


def test_recurring_daily_cap_repeats_each_day() -> None:
    core, clock = make()
    evening = profile16("ChargePointMaxProfile", 0, kind="Recurring", recurrencyKind="Daily",
                        periods=[{"startPeriod": 0, "limit": 10.0}, {"startPeriod": 3600, "limit": 32.0}])
    assert set_profile(core, 0, evening) == "Accepted"
    charging(core, EV(model=EVModel(max_current_a=32, battery_kwh=500), soc=0.1))
    assert core.power_w[1] == pytest.approx(10 * 3 * 230)
    clock.advance(3600)
    core.advance(clock.now())
    assert core.power_w[1] == pytest.approx(32 * 3 * 230)
    clock.advance(23 * 3600)
    core.advance(clock.now())
    assert core.power_w[1] == pytest.approx(10 * 3 * 230)


def test_same_stack_level_and_purpose_replaces_and_installed_profiles_are_bounded() -> None:
    core, _ = make(model16(max_profiles_installed=2))
    assert set_profile(core, 0, profile16("TxDefaultProfile", 16, pid=1)) == "Accepted"
    assert set_profile(core, 0, profile16("TxDefaultProfile", 12, pid=2)) == "Accepted"  # 2.0.1 would refuse
    assert [p.profile["id"] for p in core.profiles.installed] == [2]
    assert set_profile(core, 0, profile16("TxDefaultProfile", 10, pid=3, stack=1)) == "Accepted"
    assert set_profile(core, 0, profile16("TxDefaultProfile", 10, pid=4, stack=2)) == "Rejected"  # third one
    assert set_profile(core, 0, profile16("TxDefaultProfile", 9, pid=3, stack=1)) == "Accepted"  # a replacement


def test_station_model_limits_and_discharge_are_refused() -> None:
    core, _ = make(model16(rate_units=("A",), max_stack_level=3, periods_per_schedule=2, v2g=True))
    assert set_profile(core, 0, profile16("TxDefaultProfile", 7000, unit="W")) == "Rejected"
    assert set_profile(core, 0, profile16("TxDefaultProfile", 10, stack=4)) == "Rejected"
    three = [{"startPeriod": 0, "limit": 6.0}, {"startPeriod": 60, "limit": 7.0}, {"startPeriod": 120, "limit": 8.0}]
    assert set_profile(core, 0, profile16("TxDefaultProfile", 0, periods=three)) == "Rejected"
    assert set_profile(core, 0, profile16("TxDefaultProfile", -10)) == "Rejected"  # 1.6 cannot discharge
    assert core.handle("GetCompositeSchedule", {"connectorId": 1, "duration": 60, "chargingRateUnit": "W"}) == {
        "status": "Rejected"}


def test_get_and_change_configuration_follow_the_station_model() -> None:
    core, _ = make(model16(rate_units=("A",), max_stack_level=3, periods_per_schedule=12, max_profiles_installed=5,
                           security=SecuritySettings(1, password="a-sixteen-char-pw")))
    keys = {k["key"]: k for k in core.handle("GetConfiguration", {})["configurationKey"]}
    assert keys["ChargingScheduleAllowedChargingRateUnit"] == {
        "key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Current"}
    assert (keys["ChargeProfileMaxStackLevel"]["value"], keys["ChargingScheduleMaxPeriods"]["value"],
            keys["MaxChargingProfilesInstalled"]["value"], keys["SecurityProfile"]["value"]) == ("3", "12", "5", "1")
    assert "AuthorizationKey" not in keys  # write-only
    asked = core.handle("GetConfiguration", {"key": ["HeartbeatInterval", "Nope"]})
    assert [k["key"] for k in asked["configurationKey"]] == ["HeartbeatInterval"] and asked["unknownKey"] == ["Nope"]
    change = [("MeterValueSampleInterval", "30", "Accepted"), ("MeterValueSampleInterval", "soon", "Rejected"),
              ("ChargeProfileMaxStackLevel", "9", "Rejected"), ("Nope", "1", "NotSupported"),
              ("AuthorizationKey", "short", "Rejected"), ("AuthorizationKey", "a-brand-new-password-42", "Accepted")]
    for key, new, status in change:
        assert core.handle("ChangeConfiguration", {"key": key, "value": new}) == {"status": status}, key
    assert core.meter_interval_s == 30.0


def test_offline_start_is_queued_and_later_messages_get_the_id_given_on_replay() -> None:
    core, clock = make(model16(authorize=False))
    core.set_online(False)
    core.plug_in(1, car())
    clock.advance(180)
    core.advance(clock.now())
    core.unplug(1)
    assert [o.action for o in core.outbox] == ["StartTransaction", "MeterValues", "MeterValues", "MeterValues",
                                               "StopTransaction"]
    core.set_online(True)
    sent = exchange(core, {"StartTransaction": {"transactionId": 7, "idTagInfo": {"status": "Accepted"}}})
    assert {p.get("transactionId") for a, p in sent if a != "StartTransaction"} == {7}


# ------------------------------------------------------------------------------------------ over the wire


def station(csms: Csms, station_id: str = "CS16", **model_kw: Any) -> SimStation:
    model = model16(**{"meter_interval_s": 0.5, "tick_s": 0.1, "message_attempt_interval_s": 0.1, **model_kw})
    return SimStation(station_id, csms.url, model, clock=Clock(), call_timeout_s=2.0, reconnect_base_s=0.05,
                      reconnect_max_s=0.2, validate=True)


def power_after(csms: Csms, index: int) -> list[float]:
    return [value(m["meterValue"][0], "Power.Active.Import") for m in csms.of("MeterValues")[index:]]


async def test_boot_transaction_meter_values_and_smart_charging_against_an_ocpp16_central_system() -> None:
    csms = Csms()
    async with csms.running(), station_running(station(csms)) as st:
        assert csms.of("BootNotification")[0]["chargePointModel"] == "generic-ac22"
        st.plug_in(1, car())
        start = await until(lambda: csms.of("StartTransaction"), 5, "StartTransaction")
        assert start[0]["idTag"] == "SIMTOKEN" and csms.of("Authorize") == [{"idTag": "SIMTOKEN"}]
        tx_id = await until(lambda: st.core.dialect.transaction_id(1), 5, "the central system's transaction id")
        assert isinstance(tx_id, int)
        await until(lambda: csms.of("MeterValues"), 5, "MeterValues")
        assert all(m["transactionId"] == tx_id for m in csms.of("MeterValues"))

        tx = {"chargingProfileId": 1, "transactionId": tx_id, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
              "chargingProfileKind": "Relative",
              "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0,
                                                                                        "limit": 10.0}]}}
        assert (await csms.call("CS16", call.SetChargingProfile(connector_id=1, cs_charging_profiles=tx))).status == \
            "Accepted"
        mark = len(csms.of("MeterValues"))
        await until(lambda: 6900 in power_after(csms, mark), 3, "metered power follows the 10 A TxProfile")

        cap = {"chargingProfileId": 2, "stackLevel": 0, "chargingProfilePurpose": "ChargePointMaxProfile",
               "chargingProfileKind": "Absolute", "chargingSchedule": {
                   "chargingRateUnit": "W", "startSchedule": iso(datetime.now(UTC) - timedelta(minutes=1)),
                   "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 4140.0}]}}
        assert (await csms.call("CS16", call.SetChargingProfile(connector_id=0, cs_charging_profiles=cap))).status == \
            "Accepted"
        mark = len(csms.of("MeterValues"))
        await until(lambda: 4140 in power_after(csms, mark), 3, "metered power follows the ChargePointMax cap")
        composite = await csms.call("CS16", call.GetCompositeSchedule(connector_id=1, duration=300,
                                                                      charging_rate_unit="W"))
        assert composite.status == "Accepted"
        assert [float(p["limit"]) for p in composite.charging_schedule["charging_schedule_period"]] == [4140.0]

        stopped = await csms.call("CS16", call.RemoteStopTransaction(transaction_id=tx_id))
        assert stopped.status == "Accepted"
        stop = (await until(lambda: csms.of("StopTransaction"), 5, "StopTransaction"))[0]
        assert stop["transactionId"] == tx_id and stop["reason"] == "Remote" and len(stop["transactionData"]) == 2
        statuses = await until(lambda: [s["status"] for s in csms.of("StatusNotification") if s["connectorId"] == 1
                                        ][:4] == ["Available", "Preparing", "Charging", "Finishing"], 5,
                               "StatusNotifications Available, Preparing, Charging, Finishing")
        assert statuses
        assert st.stats.errors == {}


async def test_offline_transaction_is_replayed_with_the_id_given_after_reconnect() -> None:
    csms = Csms()
    async with csms.running(), station_running(station(csms, authorize=False)) as st:
        csms.accepting = False
        await csms.disconnect("CS16")
        await until(lambda: not st.accepted.is_set() and st.reconnects >= 1, 5, "station offline")
        st.plug_in(1, car())
        await until(lambda: sum(o.action == "MeterValues" for o in st.core.outbox) >= 2, 5, "samples queued")
        assert not csms.of("StartTransaction")
        csms.accepting = True
        await until(lambda: len(csms.of("MeterValues")) >= 2, 10, "replay")
        tx_id = csms.of("StartTransaction") and st.core.dialect.transaction_id(1)
        assert tx_id and all(m["transactionId"] == tx_id for m in csms.of("MeterValues"))
        first = [a for _, a, _ in csms.messages if a in ("StartTransaction", "MeterValues")]
        assert first[0] == "StartTransaction"


async def test_remote_start_trigger_reset_and_security_events() -> None:
    csms = Csms()
    secure = SecuritySettings(1, password="sixteen-chars-pw-1")
    async with csms.running(), station_running(station(csms, security=secure)) as st:
        events = await until(lambda: csms.of("SecurityEventNotification"), 5, "start-up security event")
        assert [e["type"] for e in events] == ["StartupOfTheDevice"]
        started = await csms.call("CS16", call.RemoteStartTransaction(id_tag="REMOTE-1", connector_id=1))
        assert started.status == "Accepted"
        start = (await until(lambda: csms.of("StartTransaction"), 5, "StartTransaction"))[0]
        assert start["idTag"] == "REMOTE-1"
        tx_id = await until(lambda: st.core.dialect.transaction_id(1), 5, "transaction id")
        triggered = await csms.call("CS16", call.TriggerMessage(requested_message="MeterValues", connector_id=1))
        assert triggered.status == "Accepted"
        await until(lambda: [m for m in csms.of("MeterValues")
                             if m["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"], 5, "triggered sample")
        assert (await csms.call("CS16", call.TriggerMessage(requested_message="DiagnosticsStatusNotification"))
                ).status == "NotImplemented"
        assert (await csms.call("CS16", call.Reset(type="Hard"))).status == "Accepted"
        stop = (await until(lambda: csms.of("StopTransaction"), 5, "StopTransaction"))[0]
        assert stop["transactionId"] == tx_id and stop["reason"] == "HardReset"
        await until(lambda: len(csms.of("BootNotification")) == 2, 5, "reboot")
        await until(lambda: len(csms.of("SecurityEventNotification")) == 2, 5, "reset security event")
        assert csms.of("SecurityEventNotification")[1]["type"] == "ResetOrReboot"
        with pytest.raises(Exception) as err:
            await csms.call("CS16", call.UnlockConnector(connector_id=1))
        assert "NotImplemented" in type(err.value).__name__


async def test_authorization_key_rotation_reconnects_with_the_new_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="simulators.ocpp")
    csms = Csms()
    secure = SecuritySettings(1, password="sixteen-chars-pw-1")
    async with csms.running(), station_running(station(csms, security=secure)) as st:
        answer = await csms.call("CS16", call.ChangeConfiguration(key="AuthorizationKey",
                                                                  value="a-brand-new-password-42"))
        assert answer.status == "Accepted"
        await until(lambda: st.stats.connects == 2 and st.accepted.is_set(), 5, "reconnect")
        assert st.credentials is not None and st.credentials.password == "a-brand-new-password-42"
    frames = [r.getMessage() for r in caplog.records if "AuthorizationKey" in r.getMessage()]
    assert frames and not any("a-brand-new-password-42" in frame for frame in frames)  # -v never shows it
