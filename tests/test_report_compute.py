"""The report's figures (csms/report/compute.py), from hand-made history points."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from csms.report.compute import (
    SessionOutcome,
    count_into,
    outcome_of,
    reaction_windows,
    settle,
    summarize,
    tally,
)

T0 = datetime(2026, 11, 30, 17, 0, tzinfo=UTC).timestamp()  # an interval boundary


def pts(*rows: tuple[float, float | None, float | None]) -> list[dict[str, float | None]]:
    """(seconds after T0, load, limit) at 60 s resolution."""
    return [{"t": T0 + s, "load_kw": load, "limit_kw": limit, "peak_kw": None} for s, load, limit in rows]


def test_energy_mean_peak_and_strictest_limit_per_interval() -> None:
    points = pts(*((60 * i, 100.0, 150.0) for i in range(15)), *((900 + 60 * i, 40.0, None) for i in range(5)))
    first, second = settle(points, 60, T0, T0 + 1800, reaction_s=0)
    assert first.energy_kwh == pytest.approx(25.0) and first.mean_kw == pytest.approx(100.0)
    assert first.limit_kw == 150 and first.peak_kw == 100 and first.covered_s == 900
    assert second.energy_kwh == pytest.approx(40 * 5 / 60) and second.limit_kw is None
    assert second.mean_kw == pytest.approx(40.0)  # over the part with data, not the whole interval
    assert first.above_kwh == 0 and second.above_kwh == 0


def test_energy_above_the_limit_counts_only_after_the_reaction_window() -> None:
    # 150 kW allowed, then from minute 5 only 100 kW; the load takes 3 minutes to come down.
    points = pts(*((60 * i, 120.0, 150.0) for i in range(5)),
                 (300, 120.0, 100.0), (360, 120.0, 100.0), (420, 110.0, 100.0),
                 *((480 + 60 * i, 90.0, 100.0) for i in range(7)))
    assert reaction_windows(points, 120) == [(T0, T0 + 120), (T0 + 300, T0 + 420)]
    [iv] = settle(points, 60, T0, T0 + 900, reaction_s=120)
    assert iv.above_kwh == pytest.approx((20 + 20 + 10) / 60)
    assert iv.above_after_reaction_kwh == pytest.approx(10 / 60)  # minute 7: after the two-minute window
    [strict] = settle(points, 60, T0, T0 + 900, reaction_s=0)
    assert strict.above_after_reaction_kwh == pytest.approx(strict.above_kwh)


def test_a_rising_limit_opens_no_window_and_points_outside_are_ignored() -> None:
    points = pts((-60, 500.0, 10.0), (0, 50.0, 40.0), (60, 50.0, 60.0), (120, 70.0, 60.0), (900, 80.0, 60.0))
    assert reaction_windows(points, 60) == [(T0 - 60, T0)]  # the first limit seen; rises open none
    [iv] = settle(points, 60, T0, T0 + 900, reaction_s=60)
    assert iv.above_kwh == pytest.approx(20 / 60)  # minutes 0 and 2 (the point before T0 is not counted)
    assert iv.above_after_reaction_kwh == pytest.approx(20 / 60)
    assert iv.energy_kwh == pytest.approx(170 / 60)


def test_counts_land_in_their_interval() -> None:
    intervals = settle([], 60, T0, T0 + 2700, reaction_s=0)
    assert len(intervals) == 3 and all(i.mean_kw is None for i in intervals)
    count_into(intervals, [T0 - 1, T0, T0 + 899, T0 + 900, T0 + 2700], "profiles")
    assert [i.profiles for i in intervals] == [2, 1, 0]
    assert tally(["Accepted", "Rejected", "Accepted", "CallTimeout"]) == [
        ("Accepted", 2), ("CallTimeout", 1), ("Rejected", 1)]


def test_sessions_against_need_and_guarantee() -> None:
    start = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)

    def served(delivered: float, need: float | None, guaranteed: float | None, hours: float) -> SessionOutcome:
        return SessionOutcome("CS", 1, "tx", start, start + timedelta(hours=hours), start + timedelta(hours=8),
                              delivered, need, guaranteed, "api")

    outcomes = [served(20, 20, 5, 9), served(6, 20, 5, 2), served(3, 20, 5, 9), served(4, None, None, 9),
                served(1, 20, 5, 2)]
    assert [o.guarantee_met for o in outcomes] == [True, True, False, None, None]  # the last left early, short
    s = summarize(outcomes)
    assert (s.served, s.need_met, s.guarantee_met, s.guarantee_judged, s.left_early) == (5, 1, 2, 3, 2)
    assert s.guarantee_missed == [outcomes[2]] and s.delivered_kwh == 34
    doc = {"station_id": "CS-1", "evse_id": 1, "transaction_id": "t1", "started_at": start.isoformat(),
           "ended_at": (start + timedelta(hours=1)).isoformat(), "delivered_kwh": 4.5, "need_kwh": 20,
           "guaranteed_kwh": 5, "departure": None, "need_source": "default"}
    o = outcome_of(doc)
    assert o is not None and o.guarantee_met is False and not o.left_early  # no departure known: judged at the end
    assert outcome_of({**doc, "started_at": "yesterday"}) is None
    assert outcome_of({"station_id": "x"}) is None
