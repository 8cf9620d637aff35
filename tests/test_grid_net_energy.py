"""The grid counts net energy: a V2G car's remaining need and guarantee grow by what it exported,
its dischargeable energy shrinks by it, and a V2G car without a stated minimum gets the
configured one. Driven through the bus like the daemon does (tests/test_grid_controller.py's rig).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csms.domain.events import EvChargingNeeds
from csms.domain.meter import Reading
from csms.grid.config import parse_grid
from csms.grid.model.sessions import Defaults, SessionBook, StationCaps, session_need
from csms.grid.service import Grid
from tests.test_grid_controller import T0, V2G_NEEDS, FakeDaemon, Rig, grid_section


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    await r.ctl.start()
    try:
        yield r
    finally:
        await r.ctl.stop()


def _planner_view(rig: Rig, station_id: str):  # type: ignore[no-untyped-def]
    book = rig.ctl.sessions
    session = book.sessions[(station_id, 1)]
    return session_need(session, book.station(station_id).caps, rig.clock(), book.defaults)


def _view(rig: Rig, station_id: str) -> dict:  # type: ignore[type-arg]
    return next(s for s in rig.ctl.snapshot()["transformers"]["T1"]["sessions"] if s["station_id"] == station_id)


async def test_a_v2g_sessions_remaining_need_grows_by_what_it_exported(rig: Rig) -> None:
    tx = await rig.station("CS-V2G-1", needs=V2G_NEEDS)  # wants 20 kWh, may give 15 kWh, no minimum stated
    rig.transaction("CS-V2G-1", "Updated", tx, charging_state="Charging",
                    reading=Reading(power_w=0.0, energy_wh=1000.0, export_wh=500.0))
    before = _planner_view(rig, "CS-V2G-1")
    assert before.v2g and before.energy_needed_kwh == pytest.approx(20.0)
    assert before.guaranteed_kwh == pytest.approx(5.0)  # session_defaults.v2g_guaranteed_kwh (default)
    assert before.dischargeable_kwh == pytest.approx(15.0) and before.discharged_kwh == 0.0

    # The limit drops below the base load: the car discharges 3 kWh, then imports 1 kWh.
    rig.limit(12.0, "below-base")
    await rig.settle()
    assert rig.commands.last_limit("CS-V2G-1") < 0
    rig.clock.advance(900)
    rig.transaction("CS-V2G-1", "Updated", tx, charging_state="Charging",
                    reading=Reading(power_w=-11000.0, energy_wh=1000.0, export_wh=3500.0))
    after = _planner_view(rig, "CS-V2G-1")
    assert after.energy_needed_kwh == pytest.approx(23.0)  # 20 wanted + 3 given back
    assert after.guaranteed_kwh == pytest.approx(8.0)  # the guarantee is net of discharge too
    assert after.discharged_kwh == pytest.approx(3.0)  # the planner may take out 15 - 3 more
    rig.clock.advance(900)
    rig.transaction("CS-V2G-1", "Updated", tx, charging_state="Charging",
                    reading=Reading(power_w=4000.0, energy_wh=2000.0, export_wh=3500.0))
    view = _view(rig, "CS-V2G-1")
    assert view["imported_kwh"] == pytest.approx(1.0) and view["exported_kwh"] == pytest.approx(3.0)
    assert view["delivered_kwh"] == pytest.approx(-2.0) and view["remaining_kwh"] == pytest.approx(22.0)
    assert view["discharge_left_kwh"] == pytest.approx(12.0)
    assert _planner_view(rig, "CS-V2G-1").energy_needed_kwh == pytest.approx(22.0)

    # An operator's new need keeps what the car already discharged off its budget.
    rig.ctl.set_session_need("CS-V2G-1", 1, energy_kwh=10.0, departure=T0 + timedelta(hours=6))
    need = _planner_view(rig, "CS-V2G-1")
    assert need.energy_needed_kwh == pytest.approx(10.0) and need.discharged_kwh == 0.0
    assert need.dischargeable_kwh == pytest.approx(12.0)
    rig.transaction("CS-V2G-1", "Updated", tx, charging_state="Charging",
                    reading=Reading(power_w=-5000.0, energy_wh=2000.0, export_wh=5500.0))
    need = _planner_view(rig, "CS-V2G-1")
    assert need.energy_needed_kwh == pytest.approx(12.0) and need.discharged_kwh == pytest.approx(2.0)


async def test_a_stated_v2g_minimum_wins_over_the_default(rig: Rig) -> None:
    needs = {**V2G_NEEDS, "customData": {**V2G_NEEDS["customData"], "evMinV2XEnergyRequest": 7000}}
    await rig.station("CS-V2G-1", needs=needs)
    view = _planner_view(rig, "CS-V2G-1")
    assert view.guaranteed_kwh == pytest.approx(7.0) and view.dischargeable_kwh == 0.0


async def test_a_plain_car_without_an_export_register_counts_import_only(rig: Rig) -> None:
    tx = await rig.station("CS-1")
    rig.transaction("CS-1", "Updated", tx, charging_state="Charging", reading=Reading(power_w=11000.0,
                                                                                       energy_wh=4000.0))
    view = _view(rig, "CS-1")
    assert view["exported_kwh"] == 0.0 and view["delivered_kwh"] == pytest.approx(3.0)
    assert _planner_view(rig, "CS-1").energy_needed_kwh == pytest.approx(27.0)


async def test_discharge_is_sized_by_the_phase_limit() -> None:
    """Only the per-phase limit is broken (by the base load: 20 kW is 29 A per phase over 25 A): the
    V2G car discharges, by no more than the phase limit asks for (above the 6 A floor), and the plain
    car pauses; the central system passes the group's phase limit and each EVSE's wiring."""
    r = Rig()
    section = grid_section()
    section["transformers"]["T1"]["phase_limit_a"] = 25.0
    r.grid, r.daemon = parse_grid(section), FakeDaemon()  # a fresh metrics registry for the new grid
    r.ctl = Grid(r.grid, r.daemon, r.clock)
    r.book = r.ctl.limit_book
    await r.ctl.start()
    try:
        await r.station("CS-V2G-1", needs=V2G_NEEDS)
        await r.station("CS-2")
        r.ctl.controller.request("phase limit")
        await r.settle()
        v2g = r.commands.last_limit("CS-V2G-1")
        assert v2g == -6.0, v2g  # 29 A of base load per phase, 25 A allowed: the 6 A floor
        assert r.commands.last_limit("CS-2") == 0
    finally:
        await r.ctl.stop()


@st.composite
def _live_readings(draw: st.DrawFn) -> list[Reading]:
    """A meter importing and exporting in random steps, read each minute (some readings carry only
    one register); the first reading (the transaction's start) carries both."""
    imp, exp = float(draw(st.integers(0, 10**6))), float(draw(st.integers(0, 10**5)))
    out = []
    for k in range(draw(st.integers(1, 15))):
        if k:
            step = float(draw(st.integers(0, 3000)))
            if draw(st.booleans()):
                imp += step
            else:
                exp += step
        carry = "both" if k == 0 else draw(st.sampled_from(["both", "import", "export"]))
        stamp = (T0 + timedelta(minutes=k)).isoformat().replace("+00:00", "Z")
        out.append(Reading(power_w=None, energy_wh=imp if carry != "export" else None,
                           export_wh=exp if carry != "import" else None, timestamp=stamp))
    return out


@settings(max_examples=150, deadline=None)
@given(_live_readings(), st.randoms(use_true_random=False))
def test_remaining_need_is_net_of_the_registers_whatever_the_arrival_order(readings: list[Reading],
                                                                           rnd: Any) -> None:
    """After the start, readings arrive reordered and some twice (offline queues, retransmissions):
    a late reading never rolls a register back, so the remaining need is the stated need minus the
    import and plus the export between the first and the newest reading."""
    book = SessionBook(Defaults(energy_kwh=50.0, guaranteed_kwh=10.0))
    session = book.adopt("CS", 1, "TX", T0)
    later = readings[1:] + [r for r in readings[1:] if rnd.random() < 0.3]
    rnd.shuffle(later)
    for r in [readings[0], *later]:
        book.reading(session, r, T0)
    imp = [r.energy_wh for r in readings if r.energy_wh is not None]
    exp = [r.export_wh for r in readings if r.export_wh is not None]
    net_kwh = ((imp[-1] - imp[0]) - (exp[-1] - exp[0])) / 1000.0
    need = session_need(session, StationCaps(), T0, book.defaults)
    assert need.energy_needed_kwh == pytest.approx(max(0.0, 50.0 - net_kwh), abs=1e-9)
    assert need.guaranteed_kwh == pytest.approx(min(max(0.0, 10.0 - net_kwh), need.energy_needed_kwh), abs=1e-9)
    assert session.delivered_kwh == pytest.approx(net_kwh, abs=1e-9)


async def test_a_car_restating_its_budget_under_an_operators_need_is_taken_at_its_word(rig: Rig) -> None:
    tx = await rig.station("CS-V2G-1", needs=V2G_NEEDS)
    rig.transaction("CS-V2G-1", "Updated", tx, reading=Reading(energy_wh=1000.0, export_wh=0.0))
    rig.ctl.set_session_need("CS-V2G-1", 1, energy_kwh=10.0)
    rig.transaction("CS-V2G-1", "Updated", tx, reading=Reading(energy_wh=1000.0, export_wh=4000.0))
    assert _planner_view(rig, "CS-V2G-1").dischargeable_kwh - _planner_view(rig, "CS-V2G-1").discharged_kwh \
        == pytest.approx(11.0)
    restated = {**V2G_NEEDS, "customData": {**V2G_NEEDS["customData"], "evMinV2XEnergyRequest": -6000}}
    rig.publish(EvChargingNeeds(station_id="CS-V2G-1", evse_id=1, needs=restated))
    view = _planner_view(rig, "CS-V2G-1")
    assert view.dischargeable_kwh - view.discharged_kwh == pytest.approx(6.0)  # the car's word, nothing counted twice
    assert view.energy_needed_kwh == pytest.approx(14.0)  # still the operator's 10 kWh, net of the 4 given
