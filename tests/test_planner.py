"""Planner properties on random instances, against the exact LP optimum where it matters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from profiles.baselines import BASELINES
from profiles.optimum import optimum
from profiles.planner import (
    Plan,
    PlanInput,
    SessionNeed,
    floor_tenth,
    immediate_cut,
    plan,
)
from profiles.units import round_down_one_decimal

SLOT_H = 0.25
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------
# Instance generators
# ---------------------------------------------------------------------------------------------


@st.composite
def sessions(draw, *, n_max: int = 12, allow_nopause: bool = True, allow_v2g: bool = False,
             allow_fixed: bool = False) -> list[SessionNeed]:
    n = draw(st.integers(1, n_max))
    out = []
    for k in range(n):
        phases = draw(st.sampled_from([1, 3]))
        wiring = (draw(st.sampled_from(["L1", "L2", "L3"])),) if phases == 1 else ("L1", "L2", "L3")
        need = draw(st.floats(0.0, 40.0))
        v2g = allow_v2g and draw(st.booleans())
        fixed = draw(st.sampled_from([None, None, None, 3.0, 7.4])) if allow_fixed else None
        out.append(SessionNeed(
            session_id=f"s{k}", phases=phases, phase_wiring=wiring,
            min_current_a=draw(st.sampled_from([6.0, 6.0, 8.0])),
            max_current_a=draw(st.sampled_from([10.0, 16.0, 32.0])),
            energy_needed_kwh=need, guaranteed_kwh=draw(st.floats(0.0, min(need, 6.0))),
            departure_s=draw(st.floats(600.0, 4 * 3600.0)),
            can_pause=(not allow_nopause) or draw(st.integers(0, 4)) > 0,
            v2g=v2g, max_discharge_kw=draw(st.floats(3.0, 11.0)) if v2g else 0.0,
            dischargeable_kwh=draw(st.floats(0.0, 20.0)) if v2g else 0.0,
            fixed_kw=fixed,
        ))
    return out


@st.composite
def plan_inputs(draw, **kw) -> PlanInput:
    ss = draw(sessions(**kw))
    n_slots = draw(st.integers(2, 12))
    peak = sum(s.max_current_a * s.phases * 0.23 for s in ss)
    limit = [draw(st.floats(0.0, max(peak, 1.0))) for _ in range(n_slots)]
    base = [draw(st.floats(0.0, 20.0)) for _ in range(n_slots)]
    limit = [lim + b for lim, b in zip(limit, base)]  # mostly limit >= base
    return PlanInput(sessions=ss, limit_kw=limit, base_load_kw=base)


def _matrix(p: Plan, inp: PlanInput, field: str) -> np.ndarray:
    return np.array([getattr(p.sessions[s.session_id], field) for s in inp.sessions])


def _hours(inp: PlanInput) -> np.ndarray:
    starts = np.arange(len(inp.limit_kw)) * inp.slot_s
    dep = np.array([s.departure_s for s in inp.sessions])
    return np.clip((dep[:, None] - starts) / inp.slot_s, 0, 1) * inp.slot_s / 3600


def _fixed_kw(inp: PlanInput) -> np.ndarray:
    h = _hours(inp)
    kw = np.array([s.fixed_kw or 0.0 for s in inp.sessions])
    return ((h > 0) * kw[:, None]).sum(axis=0)


def _assert_realisable(p: Plan, inp: PlanInput) -> None:
    """Every controllable setpoint is 0 or within [min, max], on the 0.1 A grid."""
    for s in inp.sessions:
        if s.fixed_kw is not None:
            continue
        amps = np.abs(np.array(p.sessions[s.session_id].current_a))
        assert np.all((amps == 0) | ((amps >= np.ceil(s.min_current_a * 10 - 1e-9) / 10 - 1e-9)
                                     & (amps <= s.max_current_a + 1e-9))), (s, amps)
        assert np.allclose(amps, floor_tenth(amps) if amps.size else amps, atol=1e-9) or np.allclose(
            amps * 10, np.round(amps * 10), atol=1e-6), amps


# ---------------------------------------------------------------------------------------------
# Limit, 6 A gap, accounting
# ---------------------------------------------------------------------------------------------


@PROPS
@given(plan_inputs(allow_fixed=True))
def test_never_exceeds_limit_when_feasible_and_no_gap_values(inp: PlanInput) -> None:
    p = plan(inp)
    cap = np.array(inp.limit_kw) - np.array(inp.base_load_kw) - _fixed_kw(inp)
    head = np.array(p.headroom_kw)
    for t in range(len(cap)):
        if cap[t] >= 0:
            assert head[t] >= -1e-6, (t, cap[t], head[t])
            assert t not in p.infeasible_slots
    _assert_realisable(p, inp)
    # Energy accounting: delivered + unmet = need, and every unmet need is explained.
    for s in inp.sessions:
        sp = p.sessions[s.session_id]
        need = max(s.energy_needed_kwh, s.guaranteed_kwh)
        if s.fixed_kw is None:
            assert sp.delivered_kwh + sp.unmet_kwh == pytest.approx(need, abs=1e-6)
        assert sp.unmet_kwh >= 0 and sp.guarantee_unmet_kwh >= 0
        assert sp.guarantee_unmet_kwh <= sp.unmet_kwh + 1e-6 or s.fixed_kw is not None
        if sp.unmet_kwh > 1e-3:
            assert sp.reason


@PROPS
@given(plan_inputs(allow_fixed=True))
def test_immediate_cut_and_baselines_keep_limit_and_gap(inp: PlanInput) -> None:
    cap = np.array(inp.limit_kw) - np.array(inp.base_load_kw) - _fixed_kw(inp)
    for fn in (immediate_cut, BASELINES["equal_share"], BASELINES["fcfs"], BASELINES["edf"], BASELINES["llf"]):
        p = fn(inp)
        head = np.array(p.headroom_kw)
        assert np.all(head[cap >= 0] >= -1e-6), fn.__name__
        _assert_realisable(p, inp)


def test_unmet_need_is_reported_with_reason() -> None:
    too_soon = SessionNeed("soon", energy_needed_kwh=30.0, guaranteed_kwh=10.0, departure_s=1800)
    starved = SessionNeed("starved", energy_needed_kwh=20.0, departure_s=3600)
    inp = PlanInput([too_soon, starved], limit_kw=[22.0] * 4, base_load_kw=[0.0] * 4)
    p = plan(inp)
    soon = p.sessions["soon"]
    # 22 kW for at most half an hour -> at most 11 kWh.
    assert soon.delivered_kwh <= 11.05 and soon.unmet_kwh >= 30 - 11.05
    assert soon.reason == "departure too soon (car max current)"
    assert soon.guarantee_unmet_kwh == pytest.approx(0.0, abs=0.05)  # 10 kWh fit in 30 min
    assert p.sessions["starved"].reason == "limit"
    assert sum(p.total_kw) <= 22.0 * 4 + 1e-6


# ---------------------------------------------------------------------------------------------
# Guaranteed minimum versus the LP
# ---------------------------------------------------------------------------------------------


def _with_margin(inp: PlanInput) -> PlanInput:
    """10 % less capacity and one car minimum less per slot: what rounding to 0.1 A and pausing
    the one car that does not fit at its minimum (0-6 A gap) may cost a realisable plan."""
    base = np.array(inp.base_load_kw)
    floor_kw = max(s.min_current_a * s.phases * 0.23 for s in inp.sessions)
    cap = np.maximum(0.9 * (np.array(inp.limit_kw) - base) - floor_kw, 0.0)
    return PlanInput(inp.sessions, (base + cap).tolist(), inp.base_load_kw, inp.slot_s, inp.phase_limit_a)


def _without_unusable_capacity(inp: PlanInput) -> PlanInput:
    """Capacity below the largest car minimum (e.g. 3 kW with a 4.14 kW minimum) is usable by the
    continuous LP only; drop it so the comparison is about scheduling, not the 0-6 A gap."""
    base = np.array(inp.base_load_kw)
    cap = np.array(inp.limit_kw) - base
    floor_kw = max(s.min_current_a * s.phases * 0.23 for s in inp.sessions)
    return PlanInput(inp.sessions, (base + np.where(cap < floor_kw, 0.0, cap)).tolist(), inp.base_load_kw)


@PROPS
@given(plan_inputs(allow_nopause=False))
def test_guarantees_met_whenever_lp_meets_them_with_margin(inp: PlanInput) -> None:
    """The LP relaxes the 6 A gap and 0.1 A rounding; so the claim is: whenever the LP meets
    every guarantee with a margin for those (`_with_margin`), the planner meets them all."""
    inp = _without_unusable_capacity(inp)
    tight = optimum(_with_margin(inp))
    if any(sp.guarantee_unmet_kwh > 1e-6 for sp in tight.sessions.values()):
        return
    p = plan(inp)
    for sid, sp in p.sessions.items():
        assert sp.guarantee_unmet_kwh <= 0.05, (sid, sp)


# ---------------------------------------------------------------------------------------------
# Cars that do not resume after a pause
# ---------------------------------------------------------------------------------------------


def _off_with_a_tiny_need() -> PlanInput:
    """Found by Hypothesis: ten cars that do not resume, the minimums of those wanting energy
    (6.9 kW) just below the room (7 kW) and one more car needing 0.06 Wh, which the planner
    counts (its tolerance is 1 mWh) and turns off, and the property's check did not."""
    needs = [(1, 6.1e-05), (1, 1.0), (3, 0.0), (1, 1.0), (1, 0.0), (3, 0.0), (3, 0.0), (1, 0.0), (3, 1.0), (1, 0.0)]
    return PlanInput(sessions=[
        SessionNeed(session_id=f"s{i}", phases=phases, phase_wiring=("L1", "L2", "L3")[:phases], min_current_a=6.0,
                    max_current_a=10.0, energy_needed_kwh=kwh, guaranteed_kwh=0.0, departure_s=600.0,
                    can_pause=False)
        for i, (phases, kwh) in enumerate(needs)], limit_kw=[7.0, 0.0], base_load_kw=[0.0, 0.0], slot_s=900.0)


@PROPS
@given(plan_inputs(allow_nopause=True))
@example(_off_with_a_tiny_need())
def test_nopause_cars_kept_at_minimum_until_full_or_off_for_good(inp: PlanInput) -> None:
    """A car that does not resume keeps its minimum while it wants energy; it is planned off
    only in a slot where the minimums of all such cars wanting energy do not fit, and then it
    stays off until departure (it would not charge again), with the slot and reason reported."""
    p = plan(inp)
    amps = _matrix(p, inp, "current_a")
    hours = _hours(inp)
    need = np.array([max(s.energy_needed_kwh, s.guaranteed_kwh) for s in inp.sessions])
    kw = _matrix(p, inp, "power_kw")
    got_before = np.cumsum(kw * hours, axis=1) - kw * hours
    wants = (hours > 0) & (got_before < need[:, None] - 1e-3)
    min_kw = np.array([s.min_current_a * s.phases * 0.23 for s in inp.sessions])
    cap = np.array(inp.limit_kw) - np.array(inp.base_load_kw) - _fixed_kw(inp)
    for r, s in enumerate(inp.sessions):
        if s.can_pause or s.fixed_kw is not None:
            continue
        sp = p.sessions[s.session_id]
        off = sp.off_from_slot
        for t in range(len(cap)):
            if off is not None and t >= off:
                assert amps[r, t] == 0, (t, s)
            elif wants[r, t]:
                assert amps[r, t] >= s.min_current_a - 1e-9, (t, s)
        if off is not None:
            # The car turned off counts among those wanting energy even when what it still needs is
            # below this test's 1 Wh tolerance (the planner's own is 1 mWh): its minimum was in the sum.
            wanting = wants[:, off] | (np.arange(len(inp.sessions)) == r)
            floors = wanting & np.array([not x.can_pause and x.fixed_kw is None for x in inp.sessions])
            assert float(min_kw[floors].sum()) > cap[off] - 1e-6, (off, s)
            assert "does not resume" in (sp.reason or "") or sp.unmet_kwh <= 1e-3


# ---------------------------------------------------------------------------------------------
# V2G below base load
# ---------------------------------------------------------------------------------------------


@PROPS
@given(sessions(allow_v2g=True, allow_nopause=False), st.floats(1.0, 15.0), st.integers(2, 8))
def test_v2g_discharges_within_limits_when_limit_below_base(ss: list[SessionNeed], deficit: float,
                                                             n_slots: int) -> None:
    base = [30.0] * n_slots
    limit = [30.0 - deficit if t % 2 == 0 else 60.0 for t in range(n_slots)]
    inp = PlanInput(ss, limit, base)
    p = plan(inp)
    for s in ss:
        sp = p.sessions[s.session_id]
        kw = np.array(sp.power_kw)
        if not s.v2g:
            assert np.all(kw >= 0)
            assert all(kw[t] == 0 for t in range(0, n_slots, 2)), "non-V2G cars pause below base"
            continue
        hours = _hours(PlanInput([s], limit, base))[0]
        assert np.all(-kw <= s.max_discharge_kw + 1e-6)
        assert float(np.dot(np.minimum(kw, 0), hours)) >= -s.dischargeable_kwh / s.efficiency - 1e-6
    # A slot over the limit is reported, and only when the V2G cars could not cover the deficit.
    head = np.array(p.headroom_kw)
    assert p.infeasible_slots == tuple(np.flatnonzero(head < -1e-6).tolist())
    # Slot 0 (a deficit slot): what the V2G cars can give there is known up front.
    h0 = _hours(inp)[:, 0]
    could_give = 0.0
    for s, h in zip(ss, h0):
        if s.v2g and h > 0:
            kpa = s.phases * 0.23
            amps = floor_tenth(min(s.max_current_a, min(s.max_discharge_kw, s.dischargeable_kwh * s.efficiency / h) / kpa))
            could_give += float(amps) * kpa if amps >= s.min_current_a else 0.0
    if could_give >= deficit + 1e-6:
        assert 0 not in p.infeasible_slots, (could_give, deficit)
    else:
        assert 0 in p.infeasible_slots
    # With ample V2G capacity the limit always holds.
    big = [SessionNeed(f"v{k}", v2g=True, max_discharge_kw=11.0, dischargeable_kwh=40.0,
                       departure_s=n_slots * 900.0, energy_needed_kwh=5.0) for k in range(3)]
    ample = plan(PlanInput(big, limit, base))
    assert min(ample.headroom_kw) >= -1e-6 and ample.infeasible_slots == ()


# ---------------------------------------------------------------------------------------------
# Per-phase limit
# ---------------------------------------------------------------------------------------------


@PROPS
@given(sessions(n_max=10), st.floats(10.0, 80.0), st.integers(2, 6))
def test_per_phase_limit_respected(ss: list[SessionNeed], phase_limit: float, n_slots: int) -> None:
    base = [3.0] * n_slots
    inp = PlanInput(ss, [1000.0] * n_slots, base, phase_limit_a=phase_limit,
                    base_load_phase_split=(0.5, 0.3, 0.2))
    p = plan(inp)
    amps = _matrix(p, inp, "current_a")
    for t in range(n_slots):
        for ph, share in zip(("L1", "L2", "L3"), (0.5, 0.3, 0.2)):
            on = np.array([ph in s.phase_wiring for s in ss])
            total = share * base[t] * 1000 / 230 + float(amps[on, t].sum())
            assert total <= phase_limit + 1e-6, (t, ph, total)


# ---------------------------------------------------------------------------------------------
# Gap to the LP optimum on congested instances
# ---------------------------------------------------------------------------------------------


def _congested(rng: np.random.Generator, n: int, n_slots: int) -> PlanInput:
    ss = []
    for k in range(n):
        phases = int(rng.choice([1, 3]))
        ss.append(SessionNeed(
            f"s{k}", phases=phases,
            phase_wiring=(("L1", "L2", "L3")[rng.integers(3)],) if phases == 1 else ("L1", "L2", "L3"),
            max_current_a=float(rng.choice([10, 16, 32])), energy_needed_kwh=float(rng.uniform(2, 40)),
            guaranteed_kwh=float(rng.uniform(0, 5)),
            departure_s=float(rng.uniform(0.5, n_slots * SLOT_H + 1) * 3600),
        ))
    peak = sum(s.max_current_a * s.phases * 0.23 for s in ss)
    # Congested (demand well above capacity) but room for at least 4 cars at 6 A on 3 phases.
    limit = np.maximum(peak * rng.uniform(0.1, 0.5) * rng.uniform(0.5, 1.5, n_slots), 4 * 4.14)
    return PlanInput(ss, limit.tolist(), [0.0] * n_slots)


#: Measured over these 40 instances: mean 98.8 %, worst 97.0 % of the LP optimum's energy.
GAP_MEAN = 0.98
GAP_WORST = 0.96


def test_delivered_energy_close_to_lp_optimum_on_congested_instances() -> None:
    rng = np.random.default_rng(20240601)
    ratios = []
    for _ in range(40):
        inp = _congested(rng, int(rng.integers(5, 60)), 16)
        ours = sum(sp.delivered_kwh for sp in plan(inp).sessions.values())
        best = sum(sp.delivered_kwh for sp in optimum(inp).sessions.values())
        ratios.append(ours / best)
    assert np.mean(ratios) >= GAP_MEAN, np.mean(ratios)
    assert np.min(ratios) >= GAP_WORST, np.min(ratios)


def test_planner_beats_simple_heuristics_on_congested_instances() -> None:
    rng = np.random.default_rng(7)
    totals = {"plan": 0.0, **{k: 0.0 for k in ("equal_share", "fcfs", "edf", "llf")}}
    for _ in range(10):
        inp = _congested(rng, 40, 16)
        totals["plan"] += sum(sp.delivered_kwh for sp in plan(inp).sessions.values())
        for name in ("equal_share", "fcfs", "edf", "llf"):
            totals[name] += sum(sp.delivered_kwh for sp in BASELINES[name](inp).sessions.values())
    for name in ("equal_share", "fcfs", "edf", "llf"):
        assert totals["plan"] >= totals[name] - 1e-6, (name, totals)


def test_uncontrolled_ignores_the_limit() -> None:
    ss = [SessionNeed(f"s{k}", energy_needed_kwh=30.0) for k in range(3)]
    p = BASELINES["uncontrolled"](PlanInput(ss, [22.0] * 4, [0.0] * 4))
    assert p.total_kw[0] == pytest.approx(3 * 32 * 3 * 0.23)
    assert p.infeasible_slots == (0, 1, 2, 3)


# ---------------------------------------------------------------------------------------------
# Deterministic behaviour
# ---------------------------------------------------------------------------------------------


def test_immediate_cut_scales_proportionally_and_pauses_most_laxity_first() -> None:
    cars = [SessionNeed(f"c{k}", energy_needed_kwh=40.0, departure_s=8 * 3600) for k in range(4)]
    p = immediate_cut(PlanInput(cars, [22.08], [0.0]))
    # 22.08 kW over four 22 kW cars: a quarter each, 8 A per phase.
    assert [p.sessions[f"c{k}"].current_a[0] for k in range(4)] == [8.0] * 4
    assert p.headroom_kw[0] >= 0

    urgent = SessionNeed("urgent", energy_needed_kwh=20.0, departure_s=3600)
    relaxed = SessionNeed("relaxed", energy_needed_kwh=5.0, departure_s=8 * 3600)
    stuck = SessionNeed("stuck", energy_needed_kwh=20.0, departure_s=8 * 3600, can_pause=False)
    inp = PlanInput([relaxed, urgent, stuck], limit_kw=[10.0], base_load_kw=[1.0])
    p = immediate_cut(inp)
    cur = {sid: sp.current_a[0] for sid, sp in p.sessions.items()}
    # 9 kW: room for two cars at 6 A (4.14 kW each); the most relaxed one pauses.
    assert cur["relaxed"] == 0.0
    assert cur["stuck"] >= 6.0 and cur["urgent"] >= 6.0
    assert cur["stuck"] + cur["urgent"] == pytest.approx(round_down_one_decimal(9.0 / 0.69 / 2) * 2, abs=0.11)
    assert p.headroom_kw[0] >= 0


def test_fair_share_for_identical_cars() -> None:
    cars = [SessionNeed(f"c{k}", energy_needed_kwh=60.0, departure_s=8 * 3600) for k in range(4)]
    p = plan(PlanInput(cars, [44.16] * 8, [0.0] * 8))
    first = {sp.current_a[0] for sp in p.sessions.values()}
    assert first == {16.0}  # 44.16 kW shared by four: 16 A each, no car singled out


def test_guaranteed_energy_comes_before_comfort() -> None:
    eager = SessionNeed("eager", energy_needed_kwh=40.0, departure_s=4 * 3600)
    minimum = SessionNeed("minimum", energy_needed_kwh=10.0, guaranteed_kwh=10.0, departure_s=4 * 3600)
    p = plan(PlanInput([eager, minimum], [11.04] * 16, [0.0] * 16))
    assert p.sessions["minimum"].guarantee_unmet_kwh == pytest.approx(0.0, abs=0.05)
    assert p.sessions["eager"].unmet_kwh > 0


def test_floor_tenth_matches_units_rounding() -> None:
    values = np.array([2.3, 6.0, 6.05, 7.99, 0.1, 31.99999, -1.05, 15.7])
    assert floor_tenth(values).tolist() == [round_down_one_decimal(v) for v in values]


# ---------------------------------------------------------------------------------------------
# Bad input and speed
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"phases": 4}, "phases"),
    ({"phases": 3, "phase_wiring": ("L1",)}, "phase_wiring"),
    ({"phase_wiring": ("L4",)}, "phase_wiring"),
    ({"min_current_a": 20.0, "max_current_a": 10.0}, "min_current_a"),
    ({"energy_needed_kwh": -1.0}, "energy_needed_kwh"),
    ({"efficiency": 0.0}, "efficiency"),
    ({"departure_s": float("nan")}, "departure_s"),
    ({"session_id": ""}, "session_id"),
])
def test_bad_session_rejected_with_specific_error(kwargs: dict, match: str) -> None:
    args = {"session_id": "x", **kwargs}
    with pytest.raises(ValueError, match=match):
        SessionNeed(**args)


@pytest.mark.parametrize("kwargs, match", [
    ({"limit_kw": [1.0, 2.0], "base_load_kw": [0.0]}, "one value per slot"),
    ({"limit_kw": [], "base_load_kw": []}, "non-empty"),
    ({"limit_kw": [float("inf")], "base_load_kw": [0.0]}, "finite"),
    ({"slot_s": 0.0}, "slot_s"),
    ({"phase_limit_a": -5.0}, "phase_limit_a"),
    ({"base_load_phase_split": (0.5, 0.5, 0.5)}, "sum to 1"),
])
def test_bad_plan_input_rejected_with_specific_error(kwargs: dict, match: str) -> None:
    args = {"sessions": [SessionNeed("a")], "limit_kw": [10.0], "base_load_kw": [0.0], **kwargs}
    with pytest.raises(ValueError, match=match):
        PlanInput(**args)


def test_duplicate_session_ids_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        PlanInput([SessionNeed("a"), SessionNeed("a")], [1.0], [0.0])
