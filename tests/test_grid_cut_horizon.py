"""The immediate cut plans the next CUT_SLOTS slots only: its profiles go out sooner at 10,000 sessions.

An Absolute cut ends with those slots (the refined plan replaces it within seconds; without it the
station falls back to its fail-safe); a Relative cut holds until replaced, so what the pusher
remembers of it covers the planning horizon, as the refined plan it is compared with does.
"""

from __future__ import annotations

from datetime import timedelta

from csms.grid.effects.pusher import as_relative, shape_tx_profile
from csms.grid.model.sessions import StationCaps
from profiles.heuristic import CUT_SLOTS
from profiles.hysteresis import Setpoints
from tests.test_grid_controller import T0, Rig

SLOT_S = 900  # the rig's planning slot
HORIZON = 8  # the rig's horizon_slots


async def test_an_absolute_cut_covers_the_next_slots_and_the_refined_plan_the_horizon() -> None:
    rig = Rig()
    await rig.ctl.start()
    try:
        for i in range(20):
            await rig.station(f"CS-{i}", power_kw=11.0)
        rig.ctl.sessions.stations["CS-0"].caps.relative_tx = False  # takes Absolute profiles only
        before = len(rig.commands.tx_profiles("CS-0"))
        rig.limit(120.0, "drop")
        await rig.settle()
        cut, *refined = [p for _, _, p in rig.commands.tx_profiles("CS-0")[before:]]
        assert cut["chargingProfileKind"] == "Absolute"
        assert cut["chargingSchedule"][0]["duration"] < (CUT_SLOTS + 1) * SLOT_S  # plus the lead for the clock
        assert refined and refined[-1]["chargingSchedule"][0]["duration"] > CUT_SLOTS * SLOT_S
        assert rig.planned_kw() <= 120.0 - 20.0 + 1e-6  # the limit (minus base load) holds
        others = [p for _, _, p in rig.commands.tx_profiles("CS-1")[before:]]
        assert others[0]["chargingProfileKind"] == "Relative"
    finally:
        await rig.ctl.stop()


def test_a_relative_cut_is_remembered_over_the_planning_horizon() -> None:
    short = Setpoints("CS-1", 1, "tx1", T0, float(SLOT_S), (8.0,) * CUT_SLOTS, 3)
    held = as_relative(shape_tx_profile(short, StationCaps()), HORIZON).carried
    assert held.current_a == (8.0,) * HORIZON
    assert held.end == T0 + timedelta(seconds=HORIZON * SLOT_S)
