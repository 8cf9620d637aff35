"""profiles.flex_offer: the fleet's flexibility per ISP, the offer, the order's limits and delivery."""

from __future__ import annotations

import pytest

from csms.configcheck import Issues
from csms.grid.sources.uftp.config import uftp_section
from csms.grid.sources.uftp.isp import IspError, isp_seconds
from profiles.flex_offer import (
    DrawingSession,
    Isp,
    IspFlex,
    Requested,
    average_kw,
    delivered_w,
    fleet_flexibility,
    offer_isps,
    offer_price,
    order_limits_kw,
    settles,
)
from profiles.model import SessionNeed

KW = 16 * 3 * 230 / 1000.0  # 11.04 kW at 16 A on three phases
HOUR = 3600.0


def car(sid: str, *, energy: float = 40.0, guaranteed: float = 0.0, departure_h: float = 8.0, draw: float | None = KW,
        can_pause: bool = True, v2g: bool = False, fixed: float | None = None) -> DrawingSession:
    need = SessionNeed(session_id=sid, max_current_a=16.0, energy_needed_kwh=energy, guaranteed_kwh=guaranteed,
                       departure_s=departure_h * HOUR, can_pause=can_pause, v2g=v2g,
                       max_discharge_kw=KW if v2g else 0.0, dischargeable_kwh=30.0 if v2g else 0.0, fixed_kw=fixed)
    return DrawingSession(need, draw)


def isps(first_s: float, count: int, length_s: float = 900.0, start_number: int = 69) -> list[Isp]:
    return [Isp(start_number + k, first_s + k * length_s, first_s + (k + 1) * length_s) for k in range(count)]


def test_flexible_cars_can_go_to_zero_and_the_base_load_stays() -> None:
    flex = fleet_flexibility([car("a"), car("b")], isps(600, 2), [30.0, 30.0])
    assert [f.baseline_kw for f in flex] == [pytest.approx(30 + 2 * KW, abs=1e-3)] * 2
    assert [f.floor_kw for f in flex] == [30.0, 30.0]
    assert all(f.down_kw == pytest.approx(2 * KW, abs=1e-3) for f in flex)


def test_a_guarantee_that_needs_the_window_keeps_load_in_it() -> None:
    # 10 kWh guaranteed, departure in 1 h, the window is the middle 30 minutes: outside it 30 minutes
    # at 11.04 kW bring 5.52 kWh, so 4.48 kWh must come inside (8.96 kW on average).
    window = isps(15 * 60, 2)
    flex = fleet_flexibility([car("a", guaranteed=10.0, departure_h=1.0)], window, [0.0, 0.0])
    assert sum(f.floor_kw for f in flex) * 0.25 == pytest.approx(10.0 - KW * 0.5, abs=1e-3)
    # Enough time outside the window: nothing is needed inside it.
    loose = fleet_flexibility([car("a", guaranteed=10.0, departure_h=8.0)], window, [0.0, 0.0])
    assert [f.floor_kw for f in loose] == [0.0, 0.0]


def test_a_car_that_must_not_pause_keeps_its_minimum_and_a_fixed_one_everything() -> None:
    flex = fleet_flexibility([car("a", can_pause=False), car("b", fixed=7.0)], isps(0, 1), [0.0])
    assert flex[0].floor_kw == pytest.approx(6 * 3 * 0.23 + 7.0, abs=1e-3)
    assert flex[0].baseline_kw == pytest.approx(KW + 7.0, abs=1e-3)


def test_v2g_exports_only_what_can_be_charged_back_after_the_window() -> None:
    flex = fleet_flexibility([car("a", v2g=True, guaranteed=20.0, departure_h=4.0)], isps(0, 1), [0.0])
    assert flex[0].floor_kw == pytest.approx(-KW, abs=1e-3)  # 3.75 h x 11 kW after the window >> 20 kWh
    tight = fleet_flexibility([car("a", v2g=True, guaranteed=40.0, departure_h=4.0)], isps(0, 1), [0.0])
    # 41.4 kWh possible after the window: only 1.4 kWh may go out in the 15 minutes (5.6 kW)
    assert tight[0].floor_kw == pytest.approx(-(3.75 * KW - 40.0) / 0.25, abs=1e-3)
    full = fleet_flexibility([car("a", v2g=True, guaranteed=3.75 * KW, departure_h=4.0)], isps(0, 1), [0.0])
    assert full[0].floor_kw == pytest.approx(0.0, abs=1e-3)  # no room to take energy back: no export
    short = fleet_flexibility([car("a", v2g=True, guaranteed=45.0, departure_h=4.0)], isps(0, 1), [0.0])
    assert short[0].floor_kw > 0  # the guarantee needs the window itself


def test_a_car_that_will_be_full_or_gone_is_not_in_the_baseline() -> None:
    flex = fleet_flexibility([car("a", energy=2.0), car("b", departure_h=0.1)], isps(900, 1), [0.0])
    assert flex[0].baseline_kw == 0.0


def test_the_offer_gives_what_is_needed_if_we_have_it_partial_otherwise() -> None:
    flex = [IspFlex(69, 60.0, 20.0), IspFlex(70, 60.0, 50.0), IspFlex(71, 60.0, 59.5), IspFlex(72, 60.0, 0.0)]
    requested = [Requested(69, -40_000, -20_000), Requested(70, -40_000, -20_000), Requested(71, -5000, -1000),
                 Requested(72, 1000, 5000)]
    assert offer_isps(requested, flex) == {69: -20_000, 70: -10_000}  # 71: 500 W is below the minimum bid
    assert offer_isps(requested, flex, min_offer_w=0) == {69: -20_000, 70: -10_000, 71: -500}
    assert offer_price({69: -20_000, 70: -10_000}, 0.25, 200.0) == pytest.approx(1.5)


def test_order_limits_and_delivery() -> None:
    assert order_limits_kw({69: 55.2, 70: 10.0}, {69: -20_000, 70: -15_000}, 200.0) == {69: 35.2, 70: 0.0}
    register = [(0.0, 1000.0), (30.0, 1100.0), (60.0, 1200.0)]  # 100 Wh per 30 s = 12 kW
    assert average_kw(register, 0.0, 60.0) == pytest.approx(12.0)
    assert average_kw(register, 15.0, 45.0) == pytest.approx(12.0)
    assert average_kw(register, -60.0, 60.0) == pytest.approx(6.0)  # no readings before: no energy
    assert average_kw([], 0.0, 60.0) is None
    assert delivered_w(55.2, 34.0) == -21_200
    assert settles(-21_200, -20_500, -20_000, 1000, 0.0) and not settles(-21_200, -55_200, -20_000, 1000, 0.1)


def test_isp_duration() -> None:
    assert isp_seconds("PT15M") == 900 and isp_seconds("PT1M") == 60 and isp_seconds("PT1H") == 3600
    for bad in ("P1D", "PT7M", "15", "PT0M"):
        with pytest.raises(IspError):
            isp_seconds(bad)


def test_config_errors_name_the_key() -> None:
    good = {"domain": "agr.example.com", "signing_key": "A" * 86 + "==",
            "participants": [{"domain": "dso.example.com", "endpoint": "http://127.0.0.1:1/x",
                              "public_key": "A" * 43 + "="}],
            "congestion_points": {"ean.871234567890123456": "T1"}}
    issues = Issues("c.yaml")
    cfg = uftp_section(good, {"T1"}, issues)
    assert not issues.items and cfg is not None and cfg.group_of("ean.871234567890123456") == "T1"
    cases = [({"signing_key": "short"}, "grid.uftp.signing_key"),
             ({"congestion_points": {"ean.1": "T9"}}, "grid.uftp.congestion_points.ean.1"),
             ({"participants": [{"domain": "d", "endpoint": "ftp://x", "public_key": "A" * 43 + "="}]},
              "grid.uftp.participants[0].endpoint"),
             ({"version": "2.0"}, "grid.uftp.version"), ({"port": 70000}, "grid.uftp.port"),
             ({"colour": "red"}, "grid.uftp.colour")]
    for change, key in cases:
        issues = Issues("c.yaml")
        uftp_section({**good, **change}, {"T1"}, issues)
        assert key in [i.key for i in issues.items], (change, [(i.key, i.message) for i in issues.items])


@pytest.mark.parametrize("seed", range(8))
def test_the_offer_never_exceeds_what_the_planner_can_keep(seed: int) -> None:
    """Cross-check with bench.study.flex.deliverable_flex, which bisects the planner itself: the
    analytic floor must not promise more (beyond that bisection's 0.5 kW resolution)."""
    import random

    from bench.study.flex import deliverable_flex
    from profiles.model import PlanInput

    rnd = random.Random(seed)
    needs = []
    for i in range(rnd.randint(2, 8)):
        energy = rnd.uniform(5, 40)
        needs.append(SessionNeed(session_id=f"s{i}", max_current_a=16.0, energy_needed_kwh=energy,
                                 guaranteed_kwh=min(energy, rnd.uniform(0, 30)), departure_s=rnd.uniform(1, 8) * HOUR))
    window = (2, 4)
    theirs = deliverable_flex(PlanInput(sessions=needs, limit_kw=[200.0] * 32, base_load_kw=[10.0] * 32), window)
    flex = fleet_flexibility([DrawingSession(n, KW) for n in needs], isps(window[0] * 900.0, 2), [10.0, 10.0])
    assert min(f.down_kw for f in flex) <= theirs.flex_kw + 0.5


def test_a_tight_limit_outside_the_window_keeps_the_guarantees_inside_it() -> None:
    cars = [car(f"c{i}", guaranteed=10.0, departure_h=2.0) for i in range(4)]
    window = isps(1800, 2)  # 00:30-01:00 of a two-hour stay
    loose = fleet_flexibility(cars, window, [5.0, 5.0])
    assert [f.floor_kw for f in loose] == [5.0, 5.0]  # 1.5 h at 11 kW outside: every guarantee fits there
    # The limits leave the cars 10 kW outside the window: 15 kWh of the 40 guaranteed; the other
    # 25 kWh would need 50 kW in the window, more than the 44.16 kW the cars can draw: no flexibility.
    tight = fleet_flexibility(cars, window, [5.0, 5.0], headroom=[(0.0, 7200.0, 10.0)])
    assert all(f.down_kw == pytest.approx(0.0, abs=1e-6) for f in tight)
    # With 20 kW outside: 30 kWh fit there, 10 kWh must come in the window (20 kW on average).
    some = fleet_flexibility(cars, window, [5.0, 5.0], headroom=[(0.0, 7200.0, 20.0)])
    assert [f.floor_kw for f in some] == [pytest.approx(25.0, abs=1e-3)] * 2

    from bench.study.flex import deliverable_flex
    from profiles.model import PlanInput

    needs = [c.need for c in cars]
    limits = [5.0 + 20.0 * 1.04 + 0.5] * 8  # 20 kW of room after the planner's margin (3 % + 0.5 kW)
    limits[2] = limits[3] = 200.0
    theirs = deliverable_flex(PlanInput(sessions=needs, limit_kw=limits, base_load_kw=[5.0] * 8), (2, 4))
    assert min(f.down_kw for f in some) <= theirs.flex_kw + 0.5
