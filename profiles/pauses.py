"""Sticky pauses: keep the car that is already paused paused, rather than swap which car waits.

Least-laxity order flips as soon as the charging car has taken some energy, so a plan would
pause a charging car only to resume an equivalent paused one, every re-plan, sending two
messages each time and wearing the cars' contactors. When two cars are interchangeable (same
phases, wiring and efficiency, and each schedule fits the other car's current range) their
schedules are swapped back: the load on every phase is the same, so the limit holds, and
neither station gets a message. A paused car that is urgent (profiles/urgency.py) is resumed; a
car that does not resume after a pause (known or suspected) never trades places.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from profiles.planner import Plan, PlanInput, SessionNeed
from profiles.urgency import urgent

#: Below this much wanted energy (kWh) a car that is paused stays paused anyway.
WANTS_ENERGY_KWH = 1e-3


def interchangeable(a: SessionNeed, b: SessionNeed, a_row: tuple[float, ...], b_row: tuple[float, ...]) -> bool:
    """Can ``a`` and ``b`` swap schedules without changing the load on any phase or leaving a
    car's current range?"""
    if a.phases != b.phases or a.phase_wiring != b.phase_wiring or a.efficiency != b.efficiency:
        return False
    for need, row in ((a, b_row), (b, a_row)):
        for amps in row:
            if amps < 0 or (amps > 0 and not need.min_current_a - 1e-9 <= amps <= need.max_current_a + 1e-9):
                return False
    return True


def keep_pauses(inp: PlanInput, plan: Plan, in_force_a: Mapping[str, float | None]) -> tuple[Plan, list[tuple[str, str]]]:
    """``plan`` with pause swaps undone, and the (kept paused, instead of) session-id pairs.

    ``in_force_a``: the current each session's station runs now (None when unknown: such a
    session is neither pausing nor resuming). Only the first slot decides who pauses or resumes.
    """
    slot_h = inp.slot_s / 3600.0
    rows = plan.sessions
    pausing: list[SessionNeed] = []
    resuming: list[SessionNeed] = []
    for need in inp.sessions:
        row = rows.get(need.session_id)
        if need.fixed_kw is not None or row is None or not row.current_a:
            continue
        was = in_force_a.get(need.session_id)
        if was is None:
            continue
        planned = row.current_a[0]
        # Only cars that resume take part: a swap could hand a car that does not resume (known or
        # suspected) a schedule that pauses it now and resumes it later.
        if was > 0 and planned == 0 and need.pausable and need.energy_needed_kwh > WANTS_ENERGY_KWH:
            pausing.append(need)
        elif was == 0 and planned > 0 and need.pausable and not urgent(need, slot_h):
            resuming.append(need)
    swapped = dict(rows)
    kept: list[tuple[str, str]] = []
    for p_need in pausing:
        for r_need in resuming:
            p_row, r_row = swapped[p_need.session_id], swapped[r_need.session_id]
            if interchangeable(p_need, r_need, p_row.current_a, r_row.current_a):
                swapped[p_need.session_id] = replace(r_row, session_id=p_need.session_id)
                swapped[r_need.session_id] = replace(p_row, session_id=r_need.session_id)
                resuming.remove(r_need)
                kept.append((r_need.session_id, p_need.session_id))
                break
    return (replace(plan, sessions=swapped) if kept else plan), kept
