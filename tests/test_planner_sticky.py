"""Consecutive heuristic plans pause the cars the stations already pause (PlanInput.installed_a)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from profiles.heuristic import heuristic_plan
from profiles.hysteresis import Setpoints
from profiles.planner import GUARANTEE_NOISE_KWH, Plan, PlanInput, SessionNeed

SLOTS = 24
SLOT_S = 900.0
KW_PER_A = 3 * 230 / 1000.0


def _cars(seed: int) -> list[SessionNeed]:
    rng = random.Random(seed)
    return [SessionNeed(session_id=f"s{i}", min_current_a=6, max_current_a=16, energy_needed_kwh=rng.uniform(10, 40),
                        guaranteed_kwh=3, departure_s=rng.uniform(4, 10) * 3600) for i in range(14)]


def _one_slot_later(cars: list[SessionNeed], p: Plan) -> list[SessionNeed]:
    """The cars after following slot 0 of ``p`` for a whole slot."""
    out = []
    for s in cars:
        kwh = p.sessions[s.session_id].current_a[0] * KW_PER_A * SLOT_S / 3600 * s.efficiency
        out.append(replace(s, energy_needed_kwh=max(0.0, s.energy_needed_kwh - kwh),
                           guaranteed_kwh=max(0.0, s.guaranteed_kwh - kwh), departure_s=s.departure_s - SLOT_S))
    return out


def _pauses_where_installed_charges(installed: dict[str, tuple[float, ...]], p: Plan) -> int:
    """Later slots (2 on) where the plan pauses a car its station is set to charge: each one a
    profile to send, or headroom the kept schedules take from the others."""
    return sum(have[t] > 0 and row.current_a[t] == 0
               for sid, row in p.sessions.items() for t, have in ((t, installed[sid]) for t in range(2, SLOTS - 1)))


def _replans(seed: int, sticky: bool) -> tuple[int, float, float]:
    """Six plans a slot apart, the cars following each: later-slot pauses where the previous plan
    charges, energy planned, and guaranteed energy missed (summed over the plans)."""
    limit, base = [30.0] * SLOTS, [0.0] * SLOTS
    cars, installed = _cars(seed), None
    moves, kwh, missed = 0, 0.0, 0.0
    for _ in range(6):
        p = heuristic_plan(PlanInput(sessions=cars, limit_kw=limit, base_load_kw=base,
                                     installed_a=installed if sticky else None))
        assert not p.infeasible_slots
        if installed is not None:
            moves += _pauses_where_installed_charges(installed, p)
            kwh += p.delivered_kwh
            missed += p.guarantee_unmet_kwh
        installed = {sid: tuple(row.current_a[1:]) for sid, row in p.sessions.items()}
        cars = _one_slot_later(cars, p)
    return moves, kwh, missed


def test_replans_pause_the_cars_the_stations_already_pause_in_later_slots() -> None:
    """Under a binding limit only some cars fit at their minimum in each slot; which ones pause is
    decided by laxities that drift from plan to plan. With the installed schedules known, the next
    plan keeps to them for comfort energy, at no cost in guarantees and hardly any in energy."""
    plain = [_replans(seed, sticky=False) for seed in range(4)]
    sticky = [_replans(seed, sticky=True) for seed in range(4)]
    plain_moves, sticky_moves = sum(m for m, _, _ in plain), sum(m for m, _, _ in sticky)
    assert sticky_moves <= 0.6 * plain_moves, (sticky_moves, plain_moves)
    assert sum(k for _, k, _ in sticky) >= 0.999 * sum(k for _, k, _ in plain)
    assert sum(g for _, _, g in sticky) <= sum(g for _, _, g in plain) + GUARANTEE_NOISE_KWH


def test_what_an_installed_schedule_draws_on_the_slots_of_a_later_plan() -> None:
    t0 = datetime(2026, 12, 1, 18, 0, tzinfo=timezone.utc)
    have = Setpoints("CP-1", 1, "tx", t0, 900.0, (8.0, 16.0, 0.0), 3)
    assert have.highest_by_slot(t0, 900.0, 3) == (8.0, 16.0, 0.0)
    # Five minutes later each new slot straddles an installed step: the higher value counts, and
    # the slot the schedule no longer covers to its end is unknown.
    assert have.highest_by_slot(t0 + timedelta(minutes=5), 900.0, 3) == (16.0, 16.0, None)
    assert have.highest_by_slot(t0 - timedelta(minutes=5), 900.0, 1) == (None,)
