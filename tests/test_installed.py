"""Installed profiles read back as setpoints (profiles/installed.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from csms.grid.effects.pusher import shape_tx_profile
from csms.grid.model.sessions import StationCaps
from profiles.hysteresis import Setpoints
from profiles.installed import setpoints_from_profile
from profiles.station_clock import anchored, relative

NOW = datetime(2026, 6, 1, 12, 0, 3, tzinfo=UTC)


def plan(values: tuple[float, ...]) -> Setpoints:
    return Setpoints("CS", 1, "TX", NOW.replace(microsecond=0), 900.0, values, 3)


@pytest.mark.parametrize("unit", ["A", "W"])
@pytest.mark.parametrize("values", [(16.0,) * 8, (16.0, 16.0, 8.0, 8.0, 0.0, 0.0, 6.0, 6.0), (10.0, 12.0)])
def test_what_we_push_reads_back_as_what_we_planned(unit: str, values: tuple[float, ...]) -> None:
    caps = StationCaps(rate_units=(unit,), max_stack_level=8, periods_per_schedule=24)
    shaped = shape_tx_profile(plan(values), caps)
    back = setpoints_from_profile(shaped.profile, station_id="CS", evse_id=1, slot_s=900.0, horizon_slots=8,
                                  default_phases=3, now=NOW)
    assert back is not None and back.start == shaped.carried.start
    assert back.current_a == pytest.approx(shaped.carried.current_a, abs=0.05)


def test_an_anchored_profile_reads_back_on_our_clock() -> None:
    caps = StationCaps(rate_units=("A",), max_stack_level=8, periods_per_schedule=24)
    shaped = shape_tx_profile(plan((16.0, 8.0, 8.0)), caps)
    offset = -3600.0 * 24 * 300
    wire = anchored(shaped.profile, offset, lead_s=60)
    back = setpoints_from_profile(wire, station_id="CS", evse_id=1, slot_s=900.0, horizon_slots=8,
                                  default_phases=3, now=NOW, offset_s=offset)
    assert back is not None and back.start == shaped.carried.start and back.current_a == (16.0, 8.0, 8.0)


def test_a_relative_cut_holds_from_now() -> None:
    caps = StationCaps(rate_units=("A",), max_stack_level=8, periods_per_schedule=24)
    cut = relative(shape_tx_profile(plan((6.0, 6.0)), caps).profile)
    back = setpoints_from_profile(cut, station_id="CS", evse_id=1, slot_s=900.0, horizon_slots=4, default_phases=3,
                                  now=NOW + timedelta(minutes=5))
    assert back is not None and back.current_a == (6.0,) * 4 and back.start == (NOW + timedelta(minutes=5)).replace(
        microsecond=0)


@pytest.mark.parametrize("damage", [{"chargingSchedule": []}, {"chargingProfileKind": "Recurring"},
                                    {"transactionId": None}])
def test_what_we_cannot_read_is_unknown(damage: dict[str, object]) -> None:
    caps = StationCaps(rate_units=("A",), max_stack_level=8, periods_per_schedule=24)
    profile = {**shape_tx_profile(plan((6.0,)), caps).profile, **damage}
    assert setpoints_from_profile(profile, station_id="CS", evse_id=1, slot_s=900.0, horizon_slots=8,
                                  default_phases=3, now=NOW) is None


def test_periods_in_force_by_slot_match_the_plain_scan_whatever_their_order() -> None:
    """The one-pass lookup (ascending starts) and the scan for out-of-order reports pick, for every
    slot, the last listed period that has started, as a plain scan of all periods does."""
    import random

    from profiles.installed import _in_force_by_slot

    def plain(periods: list[dict[str, float]], lead: float, slot_s: float, slots: int) -> list[dict[str, float]]:
        out = []
        for k in range(slots):
            chosen = None
            for period in periods:
                if period["startPeriod"] <= lead + k * slot_s + 1e-6:
                    chosen = period
            out.append(chosen if chosen is not None else periods[0])
        return out

    rng = random.Random(7)
    for _ in range(300):
        starts = sorted(rng.sample(range(0, 20_000, 60), rng.randint(1, 24)))
        if rng.random() < 0.3:
            rng.shuffle(starts)
        periods = [{"startPeriod": float(s), "limit": float(i)} for i, s in enumerate(starts)]
        lead, slots = float(rng.choice([0, 30, 899])), rng.randint(1, 96)
        assert _in_force_by_slot(periods, lead, 900.0, slots) == plain(periods, lead, 900.0, slots)
