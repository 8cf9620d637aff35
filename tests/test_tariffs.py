"""Tariff plans and session cost (csms.tariffs): parsing with precise errors, and exact figures."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from csms.domain.tariffs import Reading, TariffError, parse_plan, parse_tariffs, session_cost, tariff_message

T0 = datetime(2025, 3, 3, 14, 0, tzinfo=timezone.utc)
STANDARD = {"energy_per_kwh": 0.30, "time_per_hour": 1.20, "idle_per_hour": 6.00, "session_fee": 0.50}


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def cost(plan: dict, readings: list[Reading], final: bool = True):
    return session_cost(parse_plan("p", plan), readings, currency="EUR", final=final)


def test_energy_time_idle_and_fee_add_up() -> None:
    readings = [Reading(at(0), 1000, "Charging"), Reading(at(30), 6000, "Charging"),
                Reading(at(60), 11000, "SuspendedEV"), Reading(at(90), 11000, "Idle")]
    c = cost(STANDARD, readings)
    assert (c.energy, c.time, c.idle, c.fee, c.total) == (Decimal("3.00"), Decimal("1.20"), Decimal("3.00"),
                                                          Decimal("0.50"), Decimal("7.70"))
    assert c.to_json() == {"total": 7.7, "currency": "EUR", "tariff": "p", "final": True, "energy": 3.0,
                           "time": 1.2, "idle": 3.0, "fee": 0.5}
    assert cost(STANDARD, readings[:2], final=False).total == Decimal("2.60")


def test_readings_in_any_order_give_the_same_cost() -> None:
    readings = [Reading(at(90), 11000, "Idle"), Reading(at(0), 1000, "Charging"),
                Reading(at(60), 11000, "SuspendedEV"), Reading(at(30), 6000, "Charging")]
    assert cost(STANDARD, readings).total == Decimal("7.70")


def test_a_grid_pause_costs_nothing_and_idle_before_charging_is_free() -> None:
    readings = [Reading(at(-20), 0, "EVConnected"), Reading(at(0), 0, "Charging"),
                Reading(at(30), 3000, "SuspendedEVSE"), Reading(at(60), 3000, "Charging"),
                Reading(at(90), 6000, "Idle")]
    c = cost(STANDARD, readings)
    assert (c.idle, c.time, c.total) == (Decimal("0.00"), Decimal("1.20"), Decimal("3.50"))


def test_idle_grace() -> None:
    readings = [Reading(at(0), 0, "Charging"), Reading(at(10), 1000, "SuspendedEV"), Reading(at(70), 1000, "Idle")]
    assert cost({"idle_per_hour": 6, "idle_grace_min": 15}, readings).idle == Decimal("4.50")


def test_time_of_day_splits_energy_linearly_across_the_boundary() -> None:
    plan = {"energy_per_kwh": 0.25, "time_of_day": [{"start": "17:00", "end": "20:00", "energy_per_kwh": 0.40}]}
    readings = [Reading(at(150), 0, "Charging"), Reading(at(210), 4000, "Idle")]
    assert cost(plan, readings).total == Decimal("1.30")
    overnight = {"energy_per_kwh": 0.30, "timezone": "Europe/Amsterdam",
                 "time_of_day": [{"start": "23:00", "end": "07:00", "energy_per_kwh": 0.10}]}
    night = datetime(2025, 3, 3, 23, 30, tzinfo=timezone.utc)  # 00:30 in Amsterdam
    assert cost(overnight, [Reading(night, 0), Reading(night + timedelta(hours=1), 10000)]).total == Decimal("1.00")


def test_a_register_that_goes_back_adds_no_negative_energy() -> None:
    readings = [Reading(at(0), 5000, "Charging"), Reading(at(10), 100, "Charging"), Reading(at(20), 1100, "Charging")]
    assert cost({"energy_per_kwh": 1}, readings).energy == Decimal("1.00")


def test_section_parsing_and_plan_choice() -> None:
    tariffs = parse_tariffs({"currency": "EUR", "default": "std", "plans": {
        "std": STANDARD, "fleet": {"energy_per_kwh": 0.2, "groups": ["F"]}}})
    assert tariffs.plan_for("F").name == "fleet" and tariffs.plan_for("X").name == "std"
    assert tariffs.plan_for(None).name == "std"
    assert parse_tariffs({"plans": {"a": {}}}).plan_for(None) is None


@pytest.mark.parametrize("section, field", [
    ({"plans": {"a": {"energy_per_kwh": -1}}}, "tariffs.plans.a.energy_per_kwh"),
    ({"plans": {"a": {"energy_per_kwh": "cheap"}}}, "tariffs.plans.a.energy_per_kwh"),
    ({"plans": {"a": {"bogus": 1}}}, "tariffs.plans.a.bogus"),
    ({"plans": {"a": {"timezone": "Mars/Olympus"}}}, "tariffs.plans.a.timezone"),
    ({"plans": {"a": {"time_of_day": [{"start": "25:00", "end": "01:00", "energy_per_kwh": 1}]}}},
     "tariffs.plans.a.time_of_day[0].start"),
    ({"plans": {"a": {"groups": ["G"]}, "b": {"groups": ["G"]}}}, "tariffs.plans.b.groups"),
    ({"default": "nope", "plans": {}}, "tariffs.default"),
    ({"currency": "euro"}, "tariffs.currency"),
    ({"cost_update_interval_s": -5}, "tariffs.cost_update_interval_s"),
    ({"surprise": 1}, "tariffs.surprise"),
])
def test_bad_sections_name_the_key(section: dict, field: str) -> None:
    with pytest.raises(TariffError) as err:
        parse_tariffs(section)
    assert err.value.field == field


def test_the_message_shows_every_component() -> None:
    plan = parse_plan("p", {**STANDARD, "idle_grace_min": 15,
                            "time_of_day": [{"start": "17:00", "end": "20:00", "energy_per_kwh": 0.4}]})
    assert tariff_message(plan, "EUR") == ("0.30 EUR/kWh + 1.20 EUR/h charging + 6.00 EUR/h idle after 15 min + "
                                           "0.50 EUR per session; 17:00-20:00 0.40 EUR/kWh")
