"""Issue 11: guarantees first, cars that do not resume, net V2G energy, phase-sized discharge.

Property tests (Hypothesis) on small random instances; example counts stay modest because the
machine is shared. Speed is measured in bench/, never here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import profiles.planner as planner_mod
from profiles.arrays import deficit_slots, prepare
from profiles.baselines import BASELINES
from profiles.lp import LPError, _earlier_cells, solve
from profiles.netenergy import StatedNeed, net_kwh, session_need_energy
from profiles.optimum import optimum
from profiles.planner import (
    KNOWN,
    RESUMES,
    SUSPECTED,
    Plan,
    PlanInput,
    SessionNeed,
    heuristic_plan,
    immediate_cut,
    plan,
)
from profiles.refine import realisable_bounds

PROPS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PHASES = ("L1", "L2", "L3")


# ---------------------------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------------------------


@st.composite
def needs(draw, *, n_max: int = 10, v2g: bool = False, stiff: bool = True, unknown_wiring: bool = False,
          fixed: bool = False) -> list[SessionNeed]:
    out = []
    for k in range(draw(st.integers(1, n_max))):
        phases = draw(st.sampled_from([1, 3]))
        if phases == 3:
            wiring: tuple[str, ...] = PHASES
        elif unknown_wiring and draw(st.booleans()):
            wiring = PHASES  # a 1-phase car on an unknown transformer phase
        else:
            wiring = (draw(st.sampled_from(PHASES)),)
        need = draw(st.floats(0.0, 30.0))
        is_v2g = v2g and draw(st.booleans())
        out.append(SessionNeed(
            f"s{k}", phases=phases, phase_wiring=wiring, min_current_a=draw(st.sampled_from([6.0, 6.0, 8.0])),
            max_current_a=draw(st.sampled_from([10.0, 16.0, 32.0])), energy_needed_kwh=need,
            guaranteed_kwh=draw(st.floats(0.0, min(need, 8.0))), departure_s=draw(st.floats(600.0, 3 * 3600.0)),
            no_resume=draw(st.sampled_from([RESUMES, RESUMES, RESUMES, SUSPECTED, KNOWN])) if stiff else RESUMES,
            v2g=is_v2g, max_discharge_kw=draw(st.floats(2.0, 11.0)) if is_v2g else 0.0,
            dischargeable_kwh=draw(st.floats(0.0, 20.0)) if is_v2g else 0.0,
            discharged_kwh=draw(st.floats(0.0, 3.0)) if is_v2g else 0.0,
            efficiency=draw(st.sampled_from([1.0, 0.9])),
            fixed_kw=draw(st.sampled_from([None, None, None, None, 3.0])) if fixed else None,
        ))
    return out


@st.composite
def inputs(draw, *, deficit: bool = False, phase_limit: bool = False, **kw) -> PlanInput:
    ss = draw(needs(**kw))
    n_slots = draw(st.integers(2, 10))
    peak = sum(s.max_current_a * s.phases * 0.23 for s in ss)
    base = [draw(st.floats(5.0, 30.0)) for _ in range(n_slots)]
    room = [draw(st.floats(0.0, max(peak, 1.0))) for _ in range(n_slots)]
    if deficit:
        room = [r if draw(st.integers(0, 2)) else -draw(st.floats(0.5, 12.0)) for r in room]
    limit = [b + r for b, r in zip(base, room)]
    split = (1 / 3, 1 / 3, 1 / 3)
    plim = None
    if phase_limit:
        split = (0.5, 0.3, 0.2)
        plim = draw(st.floats(0.5, 1.5)) * max(base) * 0.5 * 1000 / 230 + draw(st.floats(5.0, 60.0))
    return PlanInput(ss, limit, base, phase_limit_a=plim, base_load_phase_split=split)


def _hours(inp: PlanInput, s: SessionNeed) -> np.ndarray:
    starts = np.arange(len(inp.limit_kw)) * inp.slot_s
    return np.clip((s.departure_s - starts) / inp.slot_s, 0, 1) * inp.slot_s / 3600


def _fixed_kw(inp: PlanInput) -> np.ndarray:
    return sum(((_hours(inp, s) > 0) * (s.fixed_kw or 0.0) for s in inp.sessions), np.zeros(len(inp.limit_kw)))


def _phase_amps(p: Plan, inp: PlanInput) -> np.ndarray:
    """Amps per transformer phase and slot: base load, then every car (discharge relieves only a
    known phase; charging loads every listed one)."""
    split = np.asarray(inp.base_load_phase_split)
    drawn = split[:, None] * np.asarray(inp.base_load_kw)[None, :] * 1000 / 230
    for s in inp.sessions:
        amps = np.asarray(p.sessions[s.session_id].current_a, dtype=float)
        on = np.array([ph in s.phase_wiring for ph in PHASES], dtype=float)
        exact = len(s.phase_wiring) == s.phases
        drawn = drawn + on[:, None] * np.where(amps > 0, amps, amps if exact else 0.0)[None, :]
    return drawn


def _realisable_setpoints(p: Plan, inp: PlanInput) -> None:
    for s in inp.sessions:
        if s.fixed_kw is not None:
            continue
        amps = np.abs(np.asarray(p.sessions[s.session_id].current_a))
        lo = np.ceil(s.min_current_a * 10 - 1e-9) / 10
        assert np.all((amps == 0) | ((amps >= lo - 1e-9) & (amps <= s.max_current_a + 1e-9))), (s, amps)
        assert np.allclose(amps * 10, np.round(amps * 10), atol=1e-6), amps


def _resumed(p: Plan, inp: PlanInput) -> list[str]:
    """Cars that do not resume, planned at 0 A while wanting energy and given current later."""
    out = []
    for s in inp.sessions:
        if s.pausable or s.fixed_kw is not None:
            continue
        sp = p.sessions[s.session_id]
        need = max(s.energy_needed_kwh, s.guaranteed_kwh)
        kpa = s.phases * 0.23
        net, paused = 0.0, False
        for a, h in zip(sp.current_a, _hours(inp, s)):
            if h <= 0:
                break
            if a == 0 and need - net > 1e-6:
                paused = True
            elif a != 0 and paused:
                out.append(s.session_id)
                break
            net += min(need - net, a * kpa * s.efficiency * h) if a > 0 else -(-a * kpa * h / s.efficiency)
    return out


ALL_POLICIES = {"plan": plan, "heuristic": heuristic_plan, "cut": immediate_cut, **{
    k: v for k, v in BASELINES.items() if k != "uncontrolled"}}


# ---------------------------------------------------------------------------------------------
# Limits, phase limits, the 0-6 A gap
# ---------------------------------------------------------------------------------------------


@PROPS
@given(inputs(deficit=True, phase_limit=True, v2g=True, unknown_wiring=True, fixed=True))
def test_limits_and_phase_limits_hold_unless_only_base_load_breaks_them(inp: PlanInput) -> None:
    """A slot is reported infeasible exactly when the plan is over the kW or a phase limit, and
    that only happens where base load and fixed sessions alone break a limit (so only
    discharge could help, and the V2G cars could not give enough)."""
    p = plan(inp)
    _realisable_setpoints(p, inp)
    over = np.asarray(p.headroom_kw) < -1e-6
    alone = np.asarray(inp.limit_kw) - np.asarray(inp.base_load_kw) - _fixed_kw(inp) < -1e-9
    if inp.phase_limit_a is not None:
        over |= np.any(_phase_amps(p, inp) > inp.phase_limit_a + 1e-6, axis=0)
        fixed = {s.session_id for s in inp.sessions if s.fixed_kw is not None}
        fixed_only = dataclasses.replace(p, sessions={sid: sp if sid in fixed else dataclasses.replace(
            sp, current_a=(0.0,) * len(sp.current_a)) for sid, sp in p.sessions.items()})
        alone |= np.any(_phase_amps(fixed_only, inp) > inp.phase_limit_a + 1e-9, axis=0)
    assert set(np.flatnonzero(over).tolist()) == set(p.infeasible_slots)
    assert not np.any(over & ~alone), (np.flatnonzero(over), np.flatnonzero(alone))


@PROPS
@given(inputs(v2g=True, phase_limit=True, unknown_wiring=True, fixed=True))
def test_every_policy_keeps_limits_and_the_gap_rule(inp: PlanInput) -> None:
    cap = np.asarray(inp.limit_kw) - np.asarray(inp.base_load_kw) - _fixed_kw(inp)
    for name, fn in ALL_POLICIES.items():
        p = fn(inp)
        _realisable_setpoints(p, inp)
        head = np.asarray(p.headroom_kw)
        assert np.all(head[cap >= 0] >= -1e-6), name
        if inp.phase_limit_a is not None:
            phase = _phase_amps(p, inp)
            ok = np.all(phase <= inp.phase_limit_a + 1e-6, axis=0)
            assert all(ok[t] or t in p.infeasible_slots for t in range(len(cap))), name


# ---------------------------------------------------------------------------------------------
# Cars that do not resume
# ---------------------------------------------------------------------------------------------


@PROPS
@given(inputs(deficit=True, phase_limit=True, v2g=True, fixed=True))
def test_no_car_that_does_not_resume_is_paused_then_resumed(inp: PlanInput) -> None:
    for name, fn in ALL_POLICIES.items():
        p = fn(inp)
        assert _resumed(p, inp) == [], name
        for s in inp.sessions:
            sp = p.sessions[s.session_id]
            if sp.off_from_slot is not None:
                assert not s.pausable
                assert all(a == 0 for a in sp.current_a[sp.off_from_slot:]), (name, sp)
                if sp.unmet_kwh > 1e-3:
                    assert sp.reason and "resume" in sp.reason, (name, sp)


def test_car_that_does_not_resume_is_planned_off_until_departure_and_reported() -> None:
    known = SessionNeed("known", energy_needed_kwh=30, departure_s=4 * 3600, no_resume=KNOWN)
    suspected = SessionNeed("suspected", energy_needed_kwh=30, departure_s=4 * 3600, no_resume=SUSPECTED)
    keen = SessionNeed("keen", energy_needed_kwh=5, guaranteed_kwh=5, departure_s=4 * 3600, no_resume=KNOWN)
    # Slot 1 has room for one minimum (4.14 kW) only: the car with most guaranteed energy left keeps it.
    inp = PlanInput([known, suspected, keen], [30.0, 5.0, 30.0, 30.0], [0.0] * 4)
    for fn in (plan, heuristic_plan, immediate_cut):
        p = fn(inp)
        assert p.sessions["keen"].current_a[1] >= 6.0 and p.sessions["keen"].off_from_slot is None
        for sid in ("known", "suspected"):
            sp = p.sessions[sid]
            assert sp.off_from_slot == 1 and sp.current_a[1:] == (0.0, 0.0, 0.0), (fn, sp)
            assert "until departure" in sp.reason
        assert "does not resume" in p.sessions["known"].reason
        assert "may not resume" in p.sessions["suspected"].reason
        assert _resumed(p, inp) == []


def test_v2g_keeps_a_car_that_does_not_resume_going_below_the_base_load() -> None:
    stiff = SessionNeed("stiff", energy_needed_kwh=20, departure_s=4 * 3600, no_resume=KNOWN)
    v2g = SessionNeed("v2g", energy_needed_kwh=5, departure_s=8 * 3600, v2g=True, max_discharge_kw=11.0,
                      dischargeable_kwh=30.0)
    inp = PlanInput([stiff, v2g], [10.0, 5.0, 5.0, 30.0], [8.0] * 4)  # 3 kW below base in slots 1-2
    for fn in (plan, heuristic_plan, immediate_cut):
        p = fn(inp)
        assert p.sessions["stiff"].off_from_slot is None and min(p.sessions["stiff"].current_a) >= 6.0
        assert p.sessions["v2g"].current_a[1] < 0 and p.infeasible_slots == ()
        assert min(p.headroom_kw) >= -1e-6


# ---------------------------------------------------------------------------------------------
# Guarantees first
# ---------------------------------------------------------------------------------------------


def _with_margin(inp: PlanInput) -> PlanInput:
    """10 % less room and one car's minimum less per slot: what 0.1 A steps and pausing the one
    car that does not fit at its minimum (0-6 A gap) may cost a realisable plan."""
    base = np.asarray(inp.base_load_kw)
    floor_kw = max(s.min_current_a * s.phases * 0.23 for s in inp.sessions)
    room = np.maximum(0.9 * (np.asarray(inp.limit_kw) - base) - floor_kw, 0.0)
    return dataclasses.replace(inp, limit_kw=(base + room).tolist())


def _without_unusable_room(inp: PlanInput) -> PlanInput:
    """Room below the largest car minimum is usable by the continuous LP only (the 6 A floor)."""
    base = np.asarray(inp.base_load_kw)
    room = np.asarray(inp.limit_kw) - base
    floor_kw = max(s.min_current_a * s.phases * 0.23 for s in inp.sessions)
    return dataclasses.replace(inp, limit_kw=(base + np.where(room < floor_kw, 0.0, room)).tolist())


def _lp_meets_every_guarantee(inp: PlanInput) -> bool:
    prep = prepare(inp)
    sol = solve(prep, realisable_bounds(prep))
    return bool(np.all(sol.guaranteed >= prep.guar - 1e-6)) and float(sol.slack.max(initial=0.0)) <= 1e-6


@st.composite
def roomy_inputs(draw) -> PlanInput:
    """Congested for energy, but mostly with room for the guarantees (so few are filtered)."""
    ss = draw(needs(n_max=8))
    n_slots = draw(st.integers(2, 10))
    peak = sum(s.max_current_a * s.phases * 0.23 for s in ss)
    base = [draw(st.floats(5.0, 30.0)) for _ in range(n_slots)]
    limit = [b + draw(st.floats(0.3, 1.0)) * peak for b in base]
    if not draw(st.booleans()):
        return PlanInput(ss, limit, base)
    plim = 0.5 * max(base) * 1000 / 230 + draw(st.floats(0.3, 1.0)) * peak * 1000 / 230 / 3
    return PlanInput(ss, limit, base, phase_limit_a=plim, base_load_phase_split=(0.5, 0.3, 0.2))


@settings(PROPS, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(roomy_inputs())
def test_no_guarantee_missed_when_the_guarantee_first_lp_meets_them_all(inp: PlanInput) -> None:
    """Whenever the guarantee-first LP of the realisable problem (cars that do not resume held
    at their minimum, as the planner must) meets every guarantee with a margin for the 6 A floor
    and 0.1 A steps, the plan misses none."""
    inp = _without_unusable_room(inp)
    assume(_lp_meets_every_guarantee(_with_margin(inp)))
    p = plan(inp)
    for sid, sp in p.sessions.items():
        assert sp.guarantee_unmet_kwh <= 0.05, (sid, sp, p.method)


@st.composite
def roomy_v2g_inputs(draw) -> PlanInput:
    """Like `roomy_inputs`, with V2G cars and a window where the limit is below the base load
    (their discharge must cover it): the cars that give energy back must still get their
    guaranteed (net) minimum where the LP shows it can be done."""
    ss = draw(needs(n_max=8, v2g=True))
    assume(any(s.v2g and s.dischargeable_kwh > 1.0 for s in ss))
    n_slots = draw(st.integers(4, 12))
    peak = sum(s.max_current_a * s.phases * 0.23 for s in ss)
    give = sum(min(s.max_discharge_kw, s.max_current_a * s.phases * 0.23) for s in ss if s.v2g)
    base = [draw(st.floats(5.0, 30.0)) for _ in range(n_slots)]
    room = [draw(st.floats(0.1, 0.6)) * peak for _ in range(n_slots)]
    start = draw(st.integers(0, n_slots - 2))
    for t in range(start, min(n_slots, start + draw(st.integers(1, 3)))):
        room[t] = -draw(st.floats(0.1, 0.9)) * give
    return PlanInput(ss, [b + r for b, r in zip(base, room)], base)


def _with_deficit_margin(inp: PlanInput) -> PlanInput:
    """`_with_margin` where there is room; 10 % more to cover where the limit is below the base load."""
    base = np.asarray(inp.base_load_kw)
    room = np.asarray(inp.limit_kw) - base
    floor_kw = max(s.min_current_a * s.phases * 0.23 for s in inp.sessions)
    room = np.where(room < 0, 1.1 * room, np.maximum(0.9 * room - floor_kw, 0.0))
    return dataclasses.replace(inp, limit_kw=(base + room).tolist())


@settings(PROPS, max_examples=80, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(roomy_v2g_inputs())
def test_no_guarantee_missed_with_v2g_below_the_base_load_when_the_lp_meets_them_all(inp: PlanInput) -> None:
    """V2G cars that discharge to keep a limit below the base load (rounded up to their minimum,
    0.1 A steps) still end with their net guarantee whenever the guarantee-first LP of the
    realisable problem meets every guarantee with a margin; limits and setpoints stay valid."""
    inp = _without_unusable_room(inp)
    try:
        assume(_lp_meets_every_guarantee(_with_deficit_margin(inp)))
    except LPError:  # the margin instance itself (not the plan's) may defeat HiGHS: no reference
        assume(False)
    p = plan(inp)
    for sid, sp in p.sessions.items():
        assert sp.guarantee_unmet_kwh <= 0.05, (sid, sp, p.method)
    assert not p.infeasible_slots
    _realisable_setpoints(p, inp)
    assert not _resumed(p, inp)


@pytest.mark.parametrize("number", [15, 27])
def test_no_guarantee_missed_on_the_bench_v2g_instances_the_lp_meets(number: int) -> None:
    """The bench's congested V2G instances 15 and 27 (130 and 228 sessions), where the
    realisable guarantee-first LP meets every guarantee: before the guarantee repair
    (`profiles.repair`) the plan missed 5 and 3 of them (V2G cars that gave a little more than
    the LP in the deficit, then found no room to charge it back)."""
    from bench import planning_cases as pc

    rng = np.random.default_rng(11)
    for k in range(number):
        inp = pc.instance(rng, pc.FAMILIES[k % len(pc.FAMILIES)], sizes=(30, 400))
    prep = prepare(inp)
    sol = solve(prep, realisable_bounds(prep))
    assert np.all(sol.guaranteed >= prep.guar - 0.01) and float(sol.slack.max()) <= 1e-6
    p = plan(inp, method="lp")
    short = {sid: round(sp.guarantee_unmet_kwh, 3) for sid, sp in p.sessions.items() if sp.guarantee_unmet_kwh > 0.05}
    assert not short, (short, p.method)
    assert not p.infeasible_slots
    _realisable_setpoints(p, inp)
    assert not _resumed(p, inp)


def test_shortfall_is_shared_by_share_of_guarantee() -> None:
    """Room for 10 kWh, two identical cars guaranteed 10 kWh each: the total shortfall (10 kWh)
    is the least possible, and shared so neither misses a larger part of its guarantee."""
    cars = [SessionNeed(f"c{k}", energy_needed_kwh=10, guaranteed_kwh=10, departure_s=3600) for k in range(2)]
    inp = PlanInput(cars, [10.0] * 4, [0.0] * 4)
    lp = optimum(inp)
    assert [round(lp.sessions[c.session_id].guarantee_unmet_kwh, 3) for c in cars] == [5.0, 5.0]
    p = plan(inp)
    short = [p.sessions[c.session_id].guarantee_unmet_kwh for c in cars]
    assert sum(short) == pytest.approx(10.0, abs=0.3) and max(short) <= 5.0 + 0.7, short


@settings(PROPS, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.one_of(inputs(v2g=True, phase_limit=True), inputs(v2g=True, deficit=True, stiff=False)))
def test_optimum_bounds_every_plan_in_the_same_order(inp: PlanInput) -> None:
    """The relaxed LP misses no more guaranteed energy than any realisable plan, and when it
    misses as little, it delivers at least as much (lexicographic: guarantees, then energy).
    One exception is outside the LP by design: a planner may discharge V2G cars to keep a car
    that does not resume at its minimum (the LP, with no resume rule, pauses it instead); such
    plans are left out here."""
    lp = optimum(inp)
    assume(not lp.infeasible_slots)
    deficit = deficit_slots(prepare(inp))
    for fn in (plan, heuristic_plan):
        p = fn(inp)
        assume(not p.infeasible_slots)
        out = np.array([np.asarray(sp.current_a) < 0 for sp in p.sessions.values()]).any(axis=0)
        kept = np.array([np.asarray(p.sessions[x.session_id].current_a) > 0 for x in inp.sessions
                         if not x.pausable and x.fixed_kw is None] or [np.zeros(len(inp.limit_kw), dtype=bool)])
        assume(not np.any(out & ~deficit) and not np.any(out & kept.any(axis=0)))
        assert lp.guarantee_unmet_kwh <= p.guarantee_unmet_kwh + 1e-4, fn
        if abs(lp.guarantee_unmet_kwh - p.guarantee_unmet_kwh) <= 1e-4:
            assert lp.delivered_kwh >= p.delivered_kwh - 1e-4, fn


# ---------------------------------------------------------------------------------------------
# Net energy
# ---------------------------------------------------------------------------------------------


@PROPS
@given(inputs(v2g=True, deficit=True, fixed=True))
def test_net_energy_accounting_in_the_plan(inp: PlanInput) -> None:
    """Delivered = charged - discharged (battery side, the car stops when full); discharge stays
    within the budget left above the minimum state of charge; need and guarantee are net."""
    for fn in (plan, heuristic_plan, immediate_cut):
        p = fn(inp)
        for s in inp.sessions:
            if s.fixed_kw is not None:
                continue
            sp = p.sessions[s.session_id]
            need = max(s.energy_needed_kwh, s.guaranteed_kwh)
            kpa = s.phases * 0.23
            net = out = 0.0
            for a, h in zip(sp.current_a, _hours(inp, s)):
                if a > 0:
                    net += min(need - net, a * kpa * s.efficiency * h)
                elif a < 0:
                    out += -a * kpa * h / s.efficiency
                    net -= -a * kpa * h / s.efficiency
            budget = max(0.0, s.dischargeable_kwh - s.discharged_kwh / s.efficiency) if s.v2g else 0.0
            assert out <= budget + 1e-6, (fn, s, out)
            assert sp.discharged_kwh == pytest.approx(out, abs=1e-6)
            assert sp.delivered_kwh == pytest.approx(net, abs=1e-6), (fn, s)
            assert sp.unmet_kwh == pytest.approx(max(0.0, need - net), abs=1e-6)
            assert sp.guarantee_unmet_kwh == pytest.approx(max(0.0, s.guaranteed_kwh - net), abs=1e-6)


@PROPS
@given(st.floats(0.0, 40.0), st.one_of(st.none(), st.floats(0.0, 15.0)), st.floats(0.0, 30.0),
       st.sampled_from([1.0, 0.9]), st.lists(st.floats(-16.0, 16.0), min_size=1, max_size=6))
def test_net_energy_from_registers_matches_the_plan(energy: float, guarantee: float | None, dischargeable: float,
                                                    eff: float, setpoints: list[float]) -> None:
    """Executing setpoints moves the meter registers; the energy fields rebuilt from the
    registers (profiles.netenergy) are what the plan's own net accounting says is left."""
    stated = StatedNeed(energy, guarantee, dischargeable)
    imported = exported = 0.0
    fields = session_need_energy(stated, imported, exported, default_guaranteed_kwh=5.0, efficiency=eff)
    for amps in setpoints:
        need = SessionNeed("v", energy_needed_kwh=fields.energy_needed_kwh, guaranteed_kwh=fields.guaranteed_kwh,
                           v2g=True, max_discharge_kw=11.0, dischargeable_kwh=fields.dischargeable_kwh,
                           discharged_kwh=fields.discharged_kwh, efficiency=eff, departure_s=3600.0)
        budget = need.dischargeable_kwh - need.discharged_kwh / eff
        kwh = abs(amps) * 0.69 * 0.25  # meter side, one 15-minute slot
        if amps > 0:
            kwh = min(kwh, max(need.energy_needed_kwh, need.guaranteed_kwh) / eff)
            imported += kwh
        elif amps < 0:
            kwh = min(kwh, max(0.0, budget) * eff)
            exported += kwh
        after = session_need_energy(stated, imported, exported, default_guaranteed_kwh=5.0, efficiency=eff)
        moved = kwh * eff if amps > 0 else -kwh / eff
        assert after.energy_needed_kwh == pytest.approx(max(0.0, max(energy, 0.0) - net_kwh(imported, exported, eff)))
        assert after.guaranteed_kwh == pytest.approx(
            max(0.0, (5.0 if guarantee is None else guarantee) - net_kwh(imported, exported, eff)))
        before = energy - net_kwh(imported - (kwh if amps > 0 else 0.0), exported - (kwh if amps < 0 else 0.0), eff)
        if before >= 0 and before - moved >= 0:  # the plan's step, as the registers count it
            assert after.energy_needed_kwh == pytest.approx(fields.energy_needed_kwh - moved, abs=1e-9)
        assert after.dischargeable_kwh - after.discharged_kwh / eff >= -1e-9  # never below the minimum SoC
        fields = after


def test_v2g_car_gets_a_net_guarantee_and_recharges_what_it_gave() -> None:
    """A V2G car that must discharge in slot 0 is charged back afterwards so it leaves with its
    guarantee net of what it gave."""
    v2g = SessionNeed("v2g", energy_needed_kwh=5, guaranteed_kwh=5, departure_s=4 * 3600, v2g=True,
                      max_discharge_kw=7.0, dischargeable_kwh=10.0)
    inp = PlanInput([v2g], [15.0] + [40.0] * 15, [20.0] * 16)
    for fn in (plan, heuristic_plan):
        p = fn(inp)
        sp = p.sessions["v2g"]
        assert sp.current_a[0] < 0 and sp.discharged_kwh > 1.0
        assert sp.guarantee_unmet_kwh <= 1e-6 and sp.delivered_kwh == pytest.approx(5.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Discharge sized by per-phase limits
# ---------------------------------------------------------------------------------------------


def test_discharge_relieves_the_overloaded_phase() -> None:
    """L1 is over its limit from base load alone: only discharge on L1 (a 1-phase car wired to
    L1, or a 3-phase car) helps; a 1-phase car of unknown phase is not counted on."""
    on_l1 = SessionNeed("on_l1", phases=1, phase_wiring=("L1",), energy_needed_kwh=2, departure_s=4 * 3600,
                        v2g=True, max_discharge_kw=7.0, dischargeable_kwh=20.0)
    on_l2 = SessionNeed("on_l2", phases=1, phase_wiring=("L2",), energy_needed_kwh=2, departure_s=4 * 3600,
                        v2g=True, max_discharge_kw=7.0, dischargeable_kwh=20.0)
    unknown = SessionNeed("unknown", phases=1, phase_wiring=PHASES, energy_needed_kwh=2, departure_s=4 * 3600,
                          v2g=True, max_discharge_kw=7.0, dischargeable_kwh=20.0)
    base = [69.0] * 4  # L1 carries 0.5 x 300 A = 150 A
    inp = PlanInput([on_l1, on_l2, unknown], [500.0] * 4, base, phase_limit_a=140.0,
                    base_load_phase_split=(0.5, 0.3, 0.2))
    for fn in (plan, heuristic_plan, immediate_cut):
        p = fn(inp)
        assert p.infeasible_slots == ()
        assert all(a <= -10.0 for a in p.sessions["on_l1"].current_a), fn
        assert all(a >= 0 for a in p.sessions["on_l2"].current_a + p.sessions["unknown"].current_a), fn
        assert np.all(_phase_amps(p, inp) <= 140.0 + 1e-6)


# ---------------------------------------------------------------------------------------------
# Which planner ran, inputs, internals
# ---------------------------------------------------------------------------------------------


def _failing_lp(*args: object, **kwargs: object) -> None:
    raise LPError("time limit reached")


def test_plan_says_which_planner_made_it(monkeypatch: pytest.MonkeyPatch) -> None:
    cars = [SessionNeed(f"c{k}", energy_needed_kwh=30, guaranteed_kwh=3, departure_s=3 * 3600,
                        max_current_a=float(16 + 16 * (k % 2))) for k in range(8)]
    inp = PlanInput(cars, [30.0] * 12, [0.0] * 12)
    p = plan(inp)
    assert p.method in ("lp schedule", "lp totals", "heuristic") and p.note
    assert plan(inp, method="heuristic").method == "heuristic"
    easy = plan(PlanInput(cars, [1000.0] * 12, [0.0] * 12))
    assert easy.method == "heuristic" and "nothing for the LP to gain" in easy.note
    monkeypatch.setattr(planner_mod, "lp_plans", _failing_lp)
    fallback = plan(inp)
    assert fallback.method == "heuristic" and "LP not used (LPError: time limit" in fallback.note
    assert fallback.sessions == heuristic_plan(inp).sessions
    monkeypatch.setattr(planner_mod, "MAX_LP_CELLS", 10)
    big = plan(inp)
    assert big.method == "heuristic" and "LP limit" in big.note
    with pytest.raises(ValueError, match="method"):
        plan(inp, method="magic")


@pytest.mark.parametrize("kwargs, match", [
    ({"no_resume": "maybe"}, "no_resume"),
    ({"discharged_kwh": -1.0}, "discharged_kwh"),
    ({"discharged_kwh": float("nan")}, "discharged_kwh"),
])
def test_bad_new_inputs_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SessionNeed("x", **kwargs)


def test_bad_register_values_rejected() -> None:
    with pytest.raises(ValueError, match="exported_kwh"):
        session_need_energy(StatedNeed(10.0), 1.0, -2.0, default_guaranteed_kwh=5.0)
    with pytest.raises(ValueError, match="efficiency"):
        session_need_energy(StatedNeed(10.0), 1.0, 0.0, default_guaranteed_kwh=5.0, efficiency=1.5)


def test_controller_style_needs_without_new_fields_still_plan() -> None:
    """The central system builds SessionNeed without running __post_init__ and without the new
    fields: their defaults apply."""
    need = object.__new__(SessionNeed)
    fields = {f.name: getattr(SessionNeed("x", energy_needed_kwh=10), f.name) for f in dataclasses.fields(SessionNeed)}
    for name in ("no_resume", "discharged_kwh"):
        del fields[name]
    need.__dict__.update(fields)
    p = plan(PlanInput([need], [5.0, 5.0], [0.0, 0.0]))
    assert p.sessions["x"].current_a[0] >= 6.0


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 7)), min_size=1, max_size=30, unique=True),
       st.lists(st.tuples(st.integers(0, 4), st.integers(0, 8)), min_size=1, max_size=10))
@settings(max_examples=40, deadline=None)
def test_earlier_cells_matches_brute_force(cells: list[tuple[int, int]], queries: list[tuple[int, int]]) -> None:
    cells = sorted(cells)
    ci, ct = np.array([c[0] for c in cells]), np.array([c[1] for c in cells])
    qi, qt = np.array([q[0] for q in queries]), np.array([q[1] for q in queries])
    k, j = _earlier_cells(ci, ct, qi, qt, 8)
    got = sorted(zip(k.tolist(), j.tolist()))
    want = sorted((a, b) for a in range(len(queries)) for b in range(len(cells))
                  if ci[b] == qi[a] and ct[b] < qt[a])
    assert got == want


# ---------------------------------------------------------------------------------------------
# A car that does not resume and is already off: no current, no room kept for its minimum
# ---------------------------------------------------------------------------------------------


def test_car_already_off_gets_no_room_and_one_never_paused_keeps_charging() -> None:
    """9 kW of room: a car held at its minimum (4.14 kW) leaves 4.86 kW to the other; a car that
    is off until departure (paused earlier, does not resume) must leave all 9 kW to it."""
    stuck = SessionNeed("stuck", energy_needed_kwh=30, guaranteed_kwh=5, departure_s=4 * 3600, no_resume=KNOWN,
                        off_until_departure=True)
    going = SessionNeed("going", energy_needed_kwh=30, guaranteed_kwh=5, departure_s=4 * 3600, no_resume=KNOWN)
    other = SessionNeed("other", energy_needed_kwh=40, departure_s=4 * 3600)
    inp = PlanInput([stuck, going, other], [9.0 + 4.14] * 4, [0.0] * 4)
    for fn in (plan, heuristic_plan, immediate_cut):
        p = fn(inp)
        sp = p.sessions["stuck"]
        assert sp.current_a == (0.0,) * 4 and sp.off_from_slot == 0, (fn, sp)
        assert sp.reason is not None and "paused earlier" in sp.reason and "does not resume" in sp.reason
        assert sp.guarantee_unmet_kwh == pytest.approx(5.0)
        assert all(a >= 6.0 for a in p.sessions["going"].current_a), (fn, p.sessions["going"])
        assert p.sessions["going"].off_from_slot is None
        # Everything the limit leaves goes to the two cars that can charge (0.1 A steps aside).
        assert p.headroom_kw[0] < 0.3 * 0.69 + 1e-9, (fn, p.headroom_kw)


def test_off_until_departure_only_for_a_car_that_does_not_resume() -> None:
    with pytest.raises(ValueError, match="off_until_departure"):
        SessionNeed("x", energy_needed_kwh=5, off_until_departure=True)
    SessionNeed("y", energy_needed_kwh=5, can_pause=False, off_until_departure=True)  # can_pause=False is "known"


def _carry(inp: PlanInput, p: Plan) -> PlanInput:
    """The next re-plan, one slot later, as the central system builds it: energy served in slot 0
    taken off each need, and a car that does not resume that was given 0 A while wanting energy
    (or was off already) marked off until departure."""
    out = []
    for s in inp.sessions:
        if s.departure_s <= inp.slot_s:
            continue
        sp = p.sessions[s.session_id]
        a = sp.current_a[0]
        got = max(a, 0.0) * s.phases * 0.23 * s.efficiency * inp.slot_s / 3600 if s.fixed_kw is None else 0.0
        need = max(0.0, s.energy_needed_kwh - got)
        off = s.off_until_departure or (not s.pausable and s.fixed_kw is None and a == 0
                                        and max(s.energy_needed_kwh, s.guaranteed_kwh) > 1e-6)
        out.append(dataclasses.replace(
            s, energy_needed_kwh=need, guaranteed_kwh=min(need, max(0.0, s.guaranteed_kwh - got)),
            departure_s=s.departure_s - inp.slot_s, v2g=False, max_discharge_kw=0.0, dischargeable_kwh=0.0,
            discharged_kwh=0.0, off_until_departure=off))
    return PlanInput(out, list(inp.limit_kw[1:]) + [inp.limit_kw[-1]], list(inp.base_load_kw[1:]) +
                     [inp.base_load_kw[-1]], inp.slot_s, inp.phase_limit_a, inp.base_load_phase_split)


@PROPS
@given(inputs(phase_limit=True), st.integers(2, 4))
def test_no_car_that_does_not_resume_is_paused_then_resumed_across_replans(inp: PlanInput, steps: int) -> None:
    """Rolling re-plans: a car that does not resume, once given 0 A while it wants energy, is never
    given current again by a later plan (it would not take it), and no room is kept for it."""
    for fn in (plan, heuristic_plan, immediate_cut):
        cur = inp
        paused: set[str] = set()
        for _ in range(steps):
            if not cur.sessions:
                break
            p = fn(cur)
            for s in cur.sessions:
                sp = p.sessions[s.session_id]
                if s.session_id in paused:
                    assert s.off_until_departure and all(a == 0 for a in sp.current_a), (fn, s, sp)
                    assert sp.off_from_slot == 0 and sp.reason is not None and "until departure" in sp.reason
                elif not s.pausable and s.fixed_kw is None and sp.current_a[0] == 0 \
                        and max(s.energy_needed_kwh, s.guaranteed_kwh) > 1e-6:
                    paused.add(s.session_id)
            cur = _carry(cur, p)


def _plan_of(unmet: list[float], energy: float) -> Plan:
    from profiles.model import SessionPlan
    rows = {f"s{k}": SessionPlan(f"s{k}", (0.0,), (0.0,), energy / len(unmet), u, u, None)
            for k, u in enumerate(unmet)}
    return Plan(sessions=rows, total_kw=(0.0,), headroom_kw=(0.0,), infeasible_slots=())


def test_rounding_noise_in_guarantees_does_not_outweigh_energy() -> None:
    """Forty cars 2 Wh short of their guarantee (0.1 A rounding) is no real miss: the plan with
    200 kWh more wins; a real miss (one car 0.2 kWh short) still comes first."""
    noisy, exact = _plan_of([0.002] * 40, 1200.0), _plan_of([0.0] * 40, 1000.0)
    assert planner_mod.better(noisy, exact) and not planner_mod.better(exact, noisy)
    short = _plan_of([0.2] + [0.0] * 39, 1200.0)
    assert planner_mod.better(exact, short) and not planner_mod.better(short, exact)
