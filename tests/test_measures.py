"""Grid-operator and driver measures (profiles/measures.py): from energy, per settlement interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiles.measures import (
    SessionOutcome,
    driver_measures,
    grid_measures,
    intervals,
    limit_energy,
    register_at,
)

T0 = datetime(2025, 1, 15, 16, 0, tzinfo=UTC)


def register_from_power(segments: list[tuple[float, float]], extra: list[float] = ()) -> list[tuple[datetime, float]]:
    """A register for constant-power segments (seconds, kW), read at every boundary plus ``extra`` instants."""
    bounds, energy, t = [(T0, 0.0)], 0.0, 0.0
    for seconds, kw in segments:
        t += seconds
        energy += kw * seconds / 3600.0
        bounds.append((T0 + timedelta(seconds=t), energy))
    points = dict(bounds)
    for s in extra:
        at = T0 + timedelta(seconds=s)
        if at < bounds[-1][0]:
            points[at] = register_at(bounds, at)
    return sorted(points.items())


def test_an_hour_ten_kw_over_is_ten_kwh_in_four_intervals() -> None:
    register = register_from_power([(3600, 100.0)])
    m = grid_measures(register, [(T0, 90.0)], T0, T0 + timedelta(hours=1), reaction_s=60)
    assert [round(i.over_kwh, 9) for i in m.settlement] == [2.5] * 4
    assert m.over_kwh == pytest.approx(10.0) and m.intervals_over == 4
    assert m.worst_interval_over_kw == pytest.approx(10.0)
    assert m.minutes_over == 60 and m.over_kwh_minutes == pytest.approx(10.0)


def test_a_short_spike_inside_the_reaction_window_counts_per_interval_but_not_per_minute() -> None:
    # 50 kW under 60 kW; the limit drops to 40 kW at +15 min and the load follows 30 s later (the
    # reaction); a 30 s spike of 100 kW comes 5 minutes after.
    register = register_from_power([(900, 50.0), (30, 50.0), (270, 40.0), (30, 100.0), (570, 40.0)])
    limit = [(T0, 60.0), (T0 + timedelta(minutes=15), 40.0)]
    m = grid_measures(register, limit, T0, T0 + timedelta(minutes=30), reaction_s=60)
    assert m.settlement[0].over_kwh == 0.0
    assert m.settlement[1].over_kwh == pytest.approx(10 * 30 / 3600 + 60 * 30 / 3600)
    assert m.minutes_over == 1  # only the spike's minute: the reaction window is excused
    assert m.over_kwh_minutes == pytest.approx(60 * 30 / 3600)
    assert m.worst_interval_over_kw == pytest.approx(m.settlement[1].over_kwh / 0.25)


def test_a_limit_that_changes_inside_an_interval_is_integrated() -> None:
    limit = [(T0, 100.0), (T0 + timedelta(minutes=7, seconds=30), 50.0)]
    assert limit_energy(limit, T0, T0 + timedelta(minutes=15)) == pytest.approx(18.75)
    assert limit_energy(limit, T0 - timedelta(minutes=15), T0) == pytest.approx(25.0)  # first value before


def test_only_whole_intervals_are_settled() -> None:
    register = register_from_power([(1000, 10.0)])
    assert len(intervals(register, [(T0, 5.0)], T0, T0 + timedelta(seconds=1000))) == 1


@settings(max_examples=60, deadline=None)
@given(segments=st.lists(st.tuples(st.integers(1, 1800), st.floats(0, 300)), min_size=1, max_size=8),
       extra=st.lists(st.floats(0, 14400), max_size=30), limit_kw=st.floats(0, 300))
def test_figures_do_not_depend_on_when_the_register_was_read(segments: list[tuple[int, float]], extra: list[float],
                                                             limit_kw: float) -> None:
    coarse = register_from_power(segments)
    fine = register_from_power(segments, extra)
    end = coarse[-1][0]
    a = grid_measures(coarse, [(T0, limit_kw)], T0, end, reaction_s=60)
    b = grid_measures(fine, [(T0, limit_kw)], T0, end, reaction_s=60)
    assert a.over_kwh == pytest.approx(b.over_kwh, abs=1e-9)
    assert a.over_kwh_minutes == pytest.approx(b.over_kwh_minutes, abs=1e-9)


def test_drivers_are_measured_at_departure_battery_and_grid_side_apart() -> None:
    m = driver_measures([
        SessionOutcome(need_kwh=20, guaranteed_kwh=5, battery_kwh=20, grid_import_kwh=22.5, grid_export_kwh=0,
                       departed=True),
        SessionOutcome(need_kwh=10, guaranteed_kwh=5, battery_kwh=3, grid_import_kwh=6, grid_export_kwh=2.5,
                       departed=True),
        SessionOutcome(need_kwh=30, guaranteed_kwh=5, battery_kwh=1, grid_import_kwh=1.2, grid_export_kwh=0,
                       departed=False)])
    assert (m.sessions, m.departed, m.plugged_in_at_end) == (3, 2, 1)
    assert (m.need_kwh, m.battery_kwh, m.grid_import_kwh, m.grid_export_kwh) == (30, 23, 28.5, 2.5)
    assert (m.fully_served, m.below_guarantee) == (1, 1)
    assert m.as_dict()["plugged_in_at_end"] == 1
