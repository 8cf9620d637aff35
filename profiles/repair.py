"""Guarantee repair: a last pass over a walked schedule that moves charging to cars still short
of their guaranteed minimum, from spare capacity or from cars with energy beyond theirs.

Why: the engine rounds slot by slot (the 0-6 A gap, 0.1 A steps, discharge lifted to a car's
minimum, a car that does not resume held at its minimum), so a schedule that follows an LP in
which every guarantee is met can still end a few kWh short for some cars, mostly V2G cars that
gave a little more than the LP planned in a deficit. Looking at the whole horizon afterwards,
such a car can usually be given current in slots where a car with comfort energy (energy
beyond its own guarantee) charged: that car gives up comfort, nobody's guarantee suffers.

Rules kept: every changed value is 0 or within the car's [minimum, maximum] and on the 0.1 A
grid; a car that does not resume is only raised where it already charges and only lowered to
its minimum, never to 0; nothing changes in a slot where a car discharges (the limit there
depends on that discharge); no resource (kW, phases) goes past what it had left, so a
schedule that kept every limit still does. Pure and deterministic; the caller keeps the
better plan (`planner.better`).
"""

from __future__ import annotations

import numpy as np

from profiles.arrays import Prepared, ceil_tenth, floor_tenth
from profiles.engine import SlotState, violations
from profiles.model import ENERGY_EPS_KWH, VIOLATION_EPS

#: A car counts as short (and a donor keeps this much above its guarantee), kWh.
SHORT_EPS_KWH = 0.01
_TINY = 1e-12


def replay(prep: Prepared, current: np.ndarray, like: SlotState) -> SlotState:
    """The engine's energy accounting (discharge first in each slot, then charging up to the
    remaining need) over a given schedule; stopped cars as in `like`."""
    state = SlotState.start(prep)
    state.stopped, state.off_from = like.stopped.copy(), like.off_from.copy()
    kpa, eff = prep.kw_per_a, prep.eff
    for t in range(prep.n_slots):
        cur, h = current[:, t], prep.hours[:, t]
        taken = np.maximum(-cur, 0.0) * kpa * h / eff
        state.dischargeable -= taken
        state.discharged += taken
        state.net -= taken
        state.net += np.minimum(np.maximum(state.remaining, 0.0), np.maximum(cur, 0.0) * kpa * eff * h)
    return state


def _donate(prep: Prepared, current: np.ndarray, t: int, i: int, lack: np.ndarray,
            surplus: np.ndarray) -> dict[int, float]:
    """Cuts (row -> amps) in slot t from cars with comfort energy that free `lack` on every
    resource; empty when they cannot. Most surplus first."""
    cur = current[:, t]
    epa = prep.kw_per_a * prep.eff * prep.hours[:, t]
    short_res = lack > VIOLATION_EPS
    cand = np.flatnonzero((cur > 0) & (surplus > SHORT_EPS_KWH) & np.any(prep.usage[:, short_res] > _TINY, axis=1))
    cand = cand[cand != i]
    cuts: dict[int, float] = {}
    lack = lack.copy()
    for j in cand[np.argsort(-surplus[cand], kind="stable")].tolist():
        if not np.any(lack > VIOLATION_EPS):
            break
        on = (lack > VIOLATION_EPS) & (prep.usage[j] > _TINY)
        if not on.any():
            continue
        by_energy = float(floor_tenth(np.array((surplus[j] - SHORT_EPS_KWH) / max(epa[j], _TINY)))) if epa[j] > 0 \
            else float(cur[j])
        wanted = float(ceil_tenth(np.array(np.max(lack[on] / prep.usage[j, on]))))
        keep_min = float(cur[j] - prep.imin[j])  # lowest it may go while still charging
        d = min(wanted, keep_min, by_energy)
        if wanted > keep_min and prep.pausable[j] and cur[j] <= by_energy + 1e-9:
            d = float(cur[j])  # a car that resumes may pause for it
        if d <= 1e-9:
            continue
        cuts[j] = d
        lack -= prep.usage[j] * d
    return cuts if not np.any(lack > VIOLATION_EPS) else {}


def _swap_discharge(prep: Prepared, current: np.ndarray, state: SlotState, i: int, t: int,
                    net: np.ndarray, left: np.ndarray) -> bool:
    """Let other V2G cars with energy beyond their guarantee (and budget left) take over car
    i's discharge in slot t, so i keeps that energy. In place; False when they cannot."""
    give = float(-current[i, t])
    need = prep.credit[i] * give
    kpa, eff, h = prep.kw_per_a, prep.eff, prep.hours[:, t]
    with np.errstate(divide="ignore", invalid="ignore"):
        top = floor_tenth(np.where(prep.v2g, np.minimum(prep.imax, prep.dis_kw / np.maximum(kpa, _TINY)), 0.0))
    cur = current[:, t]
    out_per_a = kpa * h / eff
    surplus = net - prep.guar
    going = (state.off_from < 0) | (t < state.off_from)  # a car off from t on takes no discharge either
    cand = np.flatnonzero(prep.v2g & going & (h > 0) & (cur <= 0) & (top > -cur) & (surplus > SHORT_EPS_KWH)
                          & (left > ENERGY_EPS_KWH) & np.any(prep.credit > _TINY, axis=1))
    cand = cand[cand != i]
    adds: dict[int, float] = {}
    lack = need.copy()
    for k in cand[np.argsort(-surplus[cand], kind="stable")].tolist():
        on = (lack > VIOLATION_EPS) & (prep.credit[k] > _TINY)
        if not on.any():
            if not np.any(lack > VIOLATION_EPS):
                break
            continue
        by_energy = float(floor_tenth(np.array(min(surplus[k] - SHORT_EPS_KWH, left[k]) / max(out_per_a[k], _TINY))))
        now = float(-cur[k])
        d = float(ceil_tenth(np.array(np.max(lack[on] / prep.credit[k, on]))))
        new = min(max(now + d, float(prep.imin[k])), float(top[k]), now + by_energy)
        if new < prep.imin[k] - 1e-9 or new <= now + 1e-9:
            continue
        adds[k] = new - now
        lack -= prep.credit[k] * (new - now)
    if np.any(lack > VIOLATION_EPS):
        return False
    for k, d in adds.items():
        current[k, t] = round(float(current[k, t]) - d, 1)
        net[k] -= d * out_per_a[k]
        left[k] -= d * out_per_a[k]
    current[i, t] = 0.0
    net[i] += give * out_per_a[i]
    left[i] += give * out_per_a[i]
    return True


def repair_guarantees(prep: Prepared, current: np.ndarray, state: SlotState,
                      max_moves: int = 2000) -> tuple[np.ndarray, SlotState]:
    """Raise cars short of their guarantee (see the module doc), latest slots first (after a
    car's discharge, so it is never charged beyond its need before giving energy back)."""
    short = prep.guar - state.net
    rows = np.flatnonzero(short > SHORT_EPS_KWH)
    if rows.size == 0:
        return current, state
    original, current = current, current.copy()
    net = state.net.copy()
    room = prep.cap - prep.usage.T @ np.maximum(current, 0.0)
    quiet = ~np.any(current < 0, axis=0)  # slots without discharge
    left = state.dischargeable.copy()
    moves = 0
    for i in rows[np.argsort(-short[rows], kind="stable")].tolist():
        if prep.pausable[i]:  # a car that does not resume keeps its discharge (it keeps it going)
            for t in np.flatnonzero(current[i] < 0)[::-1].tolist():
                if prep.guar[i] - net[i] <= SHORT_EPS_KWH or moves >= max_moves:
                    break
                moves += _swap_discharge(prep, current, state, i, t, net, left)
        for t in range(prep.n_slots - 1, -1, -1):
            gap = prep.guar[i] - net[i]
            if gap <= SHORT_EPS_KWH or moves >= max_moves:
                break
            cur = float(current[i, t])
            h = prep.hours[i, t]
            if h <= 0 or not quiet[t] or (not prep.pausable[i] and cur <= 0) or state.stopped[i] and cur <= 0:
                continue
            epa = float(prep.kw_per_a[i] * prep.eff[i] * h)
            new = min(float(prep.imax[i]), max(cur + float(ceil_tenth(np.array(gap / epa))), float(prep.imin[i])))
            if new <= cur + 1e-9:
                continue
            delta = new - cur
            lack = prep.usage[i] * delta - np.maximum(room[:, t], 0.0)
            cuts: dict[int, float] = {}
            if np.any(lack > VIOLATION_EPS):
                surplus = net - prep.guar
                cuts = _donate(prep, current, t, i, lack, surplus)
                if not cuts:
                    continue
            moves += 1
            for j, d in cuts.items():
                current[j, t] = round(float(current[j, t]) - d, 1)
                room[:, t] += prep.usage[j] * d
                net[j] -= d * float(prep.kw_per_a[j] * prep.eff[j] * prep.hours[j, t])
            current[i, t] = round(new, 1)
            room[:, t] -= prep.usage[i] * delta
            net[i] += delta * epa
    fixed = replay(prep, current, state)
    if np.any(violations(prep, current) & ~violations(prep, original)):
        return original, state
    if fixed.guar_remaining.sum() >= state.guar_remaining.sum() - ENERGY_EPS_KWH:
        return original, state  # nothing won (e.g. energy capped by a need): keep the walk's own
    return current, fixed
