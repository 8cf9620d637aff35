"""The slot-by-slot engine every realisable planner runs through (heuristic, LP-guided, cut,
baselines): it owns the rules no allocator may break.

Per slot, in this order:

1. Cars that do not resume after a pause (``pausable`` False) and still want energy keep their
   minimum current while the limit has room for it, counting what V2G cars could discharge.
   When it has not, the cars that would lose least are stopped (least remaining guaranteed
   energy, then least remaining energy) and stay off until departure: a stopped car is never
   planned to charge again, since it would not. A car already off when the plan starts
   (``SessionNeed.off_until_departure``) is stopped from slot 0.
2. V2G cars discharge when the limit (or a phase limit) is below the base load, or to keep the
   minimum of cars that do not resume: just enough, following a guide when there is one (e.g.
   the LP's discharge), else spread over as many cars as the 6 A floor allows, cars whose
   guarantee stays reachable and that can keep it up through the deficit first. Discharge is
   sized on every resource (kW and each phase) and never takes a car below its minimum state
   of charge (``Prepared.dis_kwh``). Other cars never charge from it.
3. The allocator shares what is left among the cars that want energy; every value is made
   0 or >= the car's minimum and put on the 0.1 A grid without exceeding any resource.
4. Energy is accounted net: charging adds to what the car got, discharging takes it away, so
   the remaining need and guarantee grow by what a car gave back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from profiles.arrays import (
    Prepared,
    ceil_tenth,
    deficit_slots,
    floor_tenth,
    presence_hours,
)
from profiles.fill import priority_fill
from profiles.model import ENERGY_EPS_KWH, VIOLATION_EPS, Plan, SessionPlan
from profiles.units import VOLTAGE_V

_TINY = 1e-12
#: Discharge below this in a guide (an LP solution) is solver noise, not a plan to discharge.
GUIDE_NOISE_A = 0.1
OFF_REASON = "off until departure: no room for its minimum current under the limit, and the car {} not resume"
OFF_ALREADY_REASON = "off until departure: paused earlier, and the car {} not resume"


@dataclass
class SlotState:
    """What each controllable session has got so far as the engine walks the slots."""

    need: np.ndarray
    guar: np.ndarray
    net: np.ndarray  # net kWh into the battery so far (charged minus discharged)
    dischargeable: np.ndarray  # battery-side budget left above the minimum state of charge
    discharged: np.ndarray  # battery-side kWh the plan took out
    stopped: np.ndarray  # a car that does not resume, planned off until departure
    off_from: np.ndarray  # the slot it was stopped in (-1: not stopped)

    @property
    def remaining(self) -> np.ndarray:
        return self.need - self.net

    @property
    def guar_remaining(self) -> np.ndarray:
        return np.maximum(self.guar - self.net, 0.0)

    @classmethod
    def start(cls, prep: Prepared) -> SlotState:
        n = prep.ctrl.size
        # A car that is off until departure already (`SessionNeed.off_until_departure`) starts
        # stopped: no current, no discharge, no room kept for its minimum.
        return cls(need=prep.need, guar=prep.guar, net=np.zeros(n), dischargeable=prep.dis_kwh.copy(),
                   discharged=np.zeros(n), stopped=prep.off.copy(), off_from=np.where(prep.off, 0, -1))


@dataclass
class SlotView:
    """One slot as an allocator sees it: only sessions present, still wanting energy, not discharging."""

    t: int
    idx: np.ndarray  # rows into Prepared arrays
    hi: np.ndarray  # highest useful current (car max, or its remaining need)
    floor: np.ndarray  # cars that do not resume: their minimum (room for it is assured); others 0
    residual: np.ndarray  # capacity per resource (after fixed sessions and discharge)
    energy_per_a: np.ndarray  # kWh into the battery per amp over this slot
    laxity_h: np.ndarray


Allocator = Callable[[Prepared, SlotState, SlotView], np.ndarray]


def laxity_hours(prep: Prepared, idx: np.ndarray, t: int, remaining: np.ndarray) -> np.ndarray:
    """Hours a session can still wait (time left minus time needed at full rate); smaller = more urgent."""
    rate = prep.imax[idx] * prep.kw_per_a[idx] * prep.eff[idx]
    beyond = np.maximum(0.0, prep.departure_s[idx] - prep.n_slots * prep.inp.slot_s) / 3600.0
    return prep.hours_left[idx, t] + beyond - remaining / np.maximum(rate, _TINY)


def keep_order(state: SlotState, rows: np.ndarray) -> np.ndarray:
    """Order in which cars that do not resume keep their minimum when not all fit: most
    remaining guaranteed energy first, then most remaining energy (the last ones lose least)."""
    return np.lexsort((-state.remaining[rows], -state.guar_remaining[rows]))


# ---------------------------------------------------------------------------------------------
# Discharge
# ---------------------------------------------------------------------------------------------


def _discharge_tops(prep: Prepared, state: SlotState, t: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Most each V2G car may discharge in slot t (A, 0 or >= its minimum): all of it, and the
    part after which its guarantee stays reachable at full current before departure."""
    h = prep.hours[rows, t]
    kpa, eff = prep.kw_per_a[rows], prep.eff[rows]
    by_energy = state.dischargeable[rows] * eff / h
    top = floor_tenth(np.minimum(prep.imax[rows], np.minimum(prep.dis_kw[rows], by_energy) / kpa))
    top = np.where(top >= prep.imin[rows], top, 0.0)
    beyond = np.maximum(0.0, prep.departure_s[rows] - prep.n_slots * prep.inp.slot_s) / 3600.0
    later_h = prep.hours_left[rows, t] - h + beyond
    spare = np.maximum(0.0, prep.imax[rows] * kpa * eff * later_h - state.guar_remaining[rows])
    safe = floor_tenth(np.minimum(top, spare * eff / h / kpa))
    safe = np.where(safe >= prep.imin[rows], safe, 0.0)
    return top, safe


def _size_discharge(credit: np.ndarray, top: np.ndarray, base: np.ndarray, need: np.ndarray,
                    imin: np.ndarray, order: np.ndarray, relief: np.ndarray) -> np.ndarray:
    """Amps (>= 0) from `base` up to `top` so that credit.T @ amps covers `need` on every
    resource where it can, spread over as many cars as the 6 A floor allows: the first k cars
    in `order` share it in proportion to their top, each at least at its minimum, with k as
    large as keeps the overshoot from those minimums within one car's minimum (battery wear
    is shared, and power lasts longer). 0.1 A steps rounded up. A car that discharges no
    longer needs the minimum current counted for it in `need` (`relief`, per car and resource)."""
    amps = np.minimum(base, top)
    on = amps > 0
    rest = need - credit.T @ amps - relief[on].sum(axis=0)
    short = rest > VIOLATION_EPS
    cand = order[(top[order] > amps[order] + _TINY) & np.any(credit[order][:, short] > _TINY, axis=1)]
    if not short.any() or cand.size == 0:
        return amps
    spare = top[cand] - amps[cand]
    fresh = ~on[cand]
    give = credit[cand] * spare[:, None] + relief[cand] * fresh[:, None]  # most each car covers
    floor = credit[cand] * np.where(fresh, imin[cand], 0.0)[:, None]  # least it covers once used
    cum_give, cum_floor = np.cumsum(give, axis=0), np.cumsum(floor, axis=0)
    covered = np.all(cum_give[:, short] >= rest[short] - VIOLATION_EPS, axis=1)
    k_need = int(np.argmax(covered)) + 1 if covered.any() else cand.size
    spread = np.all(cum_floor[:, short] <= rest[short] + floor[:, short].max(axis=0), axis=1)
    k = max(k_need, int(np.flatnonzero(spread)[-1]) + 1 if spread.any() else 0)
    sel = cand[:k]
    rest_sel = rest - (relief[sel] * fresh[:k, None]).sum(axis=0)
    avail = credit[sel].T @ spare[:k]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(avail > _TINY, rest_sel / avail, 0.0)
    frac = float(np.clip(ratio[short].max(), 0.0, 1.0))
    add = ceil_tenth(frac * spare[:k])
    new = np.minimum(top[sel], np.maximum(amps[sel] + add, np.where(fresh[:k], imin[sel], 0.0)))
    amps[sel] = new
    return amps


def _sustainable(prep: Prepared, state: SlotState, t: int, rows: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Amps each V2G car can give in every slot from t on where the limit is below the base
    load (its budget spread over them), at least its minimum: drawing every car at this rate
    first keeps discharge power available to the end of a long deficit."""
    later = prep.hours[rows, t:] * deficit_slots(prep)[None, t:]
    hours = np.maximum(later.sum(axis=1), prep.hours[rows, t])
    amps = ceil_tenth(state.dischargeable[rows] * prep.eff[rows] / hours / prep.kw_per_a[rows])
    return np.minimum(np.maximum(amps, prep.imin[rows]), top)


def _discharge(prep: Prepared, state: SlotState, t: int, rows: np.ndarray, need: np.ndarray,
               guide: np.ndarray | None, relief: np.ndarray) -> np.ndarray:
    """Discharge amps (>= 0) for V2G `rows` covering `need` per resource where possible: the
    guide's cars first (its amounts, at least the minimum when at least half of it, then up to
    their maximum); then every car at its sustainable rate (`_sustainable`), cars whose
    guarantee stays reachable first; then up to what keeps the guarantee reachable; then (only
    if still short) any car up to its maximum. Cars with a `relief` (a minimum counted in
    `need`) come first: discharging keeps them going and frees their minimum."""
    top, safe = _discharge_tops(prep, state, t, rows)
    credit, imin = prep.credit[rows], prep.imin[rows]
    freed = -relief.sum(axis=1)
    passes = []
    amps = np.zeros(rows.size)
    if guide is not None:
        g = guide[rows, t]
        amps = np.minimum(np.where(g < imin / 2, 0.0, np.maximum(ceil_tenth(g), imin)), top)
        chosen = g >= GUIDE_NOISE_A
        passes.append((np.where(chosen, top, 0.0), np.lexsort((freed, -g))))
    steady = _sustainable(prep, state, t, rows, top)
    passes += [(np.where(safe > 0, steady, 0.0), np.lexsort((-safe, freed))), (steady, np.lexsort((-safe, freed))),
               (safe, np.lexsort((-safe, -amps, freed))), (top, np.lexsort((-top, -amps, freed)))]
    for cap, order in passes:
        if not np.any(need - credit.T @ amps - relief[amps > 0].sum(axis=0) > VIOLATION_EPS):
            break
        amps = _size_discharge(credit, np.maximum(cap, amps), amps, need, imin, order, relief)
    # Net export must not push a phase past its limit the other way either.
    room = prep.export_room[:, t]
    out = prep.usage[rows].T @ amps
    if np.any(out > room + VIOLATION_EPS):
        scale = float(np.min(np.where(out > 0, room / np.maximum(out, _TINY), np.inf)))
        amps = floor_tenth(amps * max(0.0, min(1.0, scale)))
        amps = np.where(amps >= imin, amps, 0.0)
    return amps


# ---------------------------------------------------------------------------------------------
# The slot walk
# ---------------------------------------------------------------------------------------------


def run_slots(prep: Prepared, allocate: Allocator, *, use_v2g: bool, respect_limit: bool = True,
              discharge_guide: np.ndarray | None = None, keep_first: np.ndarray | None = None,
              method: str = "heuristic", note: str = "") -> Plan:
    """`walk` the slots and build the Plan."""
    current, state = walk(prep, allocate, use_v2g=use_v2g, respect_limit=respect_limit,
                          discharge_guide=discharge_guide, keep_first=keep_first)
    return build_plan(prep, current, state, method=method, note=note)


def round_to_tenths(x: np.ndarray, imin: np.ndarray, hi: np.ndarray, usage: np.ndarray,
                    residual: np.ndarray) -> np.ndarray:
    """0.1 A steps without giving capacity away: round down (gap values to 0), then hand the
    capacity that frees back in 0.1 A steps to running cars, largest remainder first."""
    down = floor_tenth(x)
    down = np.where(down < imin - 1e-9, 0.0, down)
    left = residual - usage.T @ down
    remainder = x - down
    extra = np.where((down > 0) & (down + 0.1 <= hi + 1e-9) & (remainder > 1e-9), 0.1, 0.0)
    if not extra.any() or np.all(left < 0.1 * usage.max(initial=0.0) - 1e-9):
        return down
    order = np.argsort(-remainder, kind="stable")
    return down + priority_fill(extra, order, usage, np.maximum(left, 0.0), whole=True)


def walk(prep: Prepared, allocate: Allocator, *, use_v2g: bool, respect_limit: bool = True,
         discharge_guide: np.ndarray | None = None,
         keep_first: np.ndarray | None = None) -> tuple[np.ndarray, SlotState]:
    """Walk the slots in time order, asking `allocate` for each slot's charging currents.

    `discharge_guide` (n, T) are discharge amps to aim for (e.g. from an LP), on top of what the
    limit and the minimums of cars that do not resume require; `keep_first` (n, T) marks cars
    that do not resume to keep before the others when not all fit (e.g. those the LP kept).
    What V2G cars give only ever keeps the limit and those minimums: other cars never charge
    from it (moving energy from car to car costs battery wear and conversion losses for no
    grid benefit).
    """
    n, n_slots = prep.ctrl.size, prep.n_slots
    n_res = prep.cap.shape[0]
    state = SlotState.start(prep)
    current = np.zeros((n, n_slots))
    stiff = ~prep.pausable
    guided = np.zeros(n_slots, dtype=bool)
    if discharge_guide is not None:
        guided = np.any(discharge_guide >= GUIDE_NOISE_A, axis=0)
    for t in range(n_slots):
        h = prep.hours[:, t]
        present = (h > 0) & ~state.stopped
        if not present.any():
            continue
        remaining = state.remaining
        wants = present & (remaining > ENERGY_EPS_KWH)
        cap0 = prep.cap[:, t] if respect_limit else np.full(n_res, np.inf)
        cap_t = cap0.copy()
        floor_rows = np.flatnonzero(wants & stiff)
        if floor_rows.size > 1:
            floor_rows = floor_rows[keep_order(state, floor_rows)]
            if keep_first is not None:
                floor_rows = floor_rows[np.argsort(~keep_first[floor_rows, t], kind="stable")]
        floors_all = prep.usage[floor_rows].T @ prep.imin[floor_rows]
        short = bool(np.any(cap0 < floors_all - VIOLATION_EPS))
        dis_rows = np.zeros(0, dtype=int)
        if use_v2g and (short or guided[t]):
            dis_rows = np.flatnonzero(present & prep.v2g & (state.dischargeable > ENERGY_EPS_KWH))
        kept = np.ones(floor_rows.size, dtype=bool)
        if short:
            top = _discharge_tops(prep, state, t, dis_rows)[0] if dis_rows.size else np.zeros(0)
            room = cap_t + prep.credit[dis_rows].T @ top
            if np.any(room < -VIOLATION_EPS):
                kept[:] = False  # not even full discharge keeps the limit
            else:
                kept = priority_fill(prep.imin[floor_rows], np.arange(floor_rows.size), prep.usage[floor_rows],
                                     room, whole=True) > 0
        floors_use = prep.usage[floor_rows[kept]].T @ prep.imin[floor_rows[kept]]
        need = np.maximum(floors_use - cap_t, 0.0)
        if dis_rows.size:
            relief = np.zeros((dis_rows.size, n_res))
            is_floor = np.isin(dis_rows, floor_rows[kept])
            relief[is_floor] = prep.usage[dis_rows[is_floor]] * prep.imin[dis_rows[is_floor], None]
            amps = _discharge(prep, state, t, dis_rows, need, discharge_guide, relief)
            current[dis_rows, t] = -amps
            cap_t += prep.credit[dis_rows].T @ amps
            taken = amps * prep.kw_per_a[dis_rows] * h[dis_rows] / prep.eff[dis_rows]
            state.dischargeable[dis_rows] -= taken
            state.discharged[dis_rows] += taken
            state.net[dis_rows] -= taken
            remaining = state.remaining
        active = current[:, t] < 0
        only_floors = bool(active.any())
        if only_floors or not kept.all():
            alive = kept & ~active[floor_rows]
            floors_use = prep.usage[floor_rows[alive]].T @ prep.imin[floor_rows[alive]]
            drop = floor_rows[~kept & ~active[floor_rows]]
            state.stopped[drop] = True
            state.off_from[drop] = t
        idx = np.flatnonzero(wants & ~active & ~state.stopped)
        if idx.size and np.all(cap_t >= -VIOLATION_EPS):
            epa = prep.kw_per_a[idx] * prep.eff[idx] * h[idx]
            need_a = remaining[idx] / np.maximum(epa, _TINY)
            hi = np.minimum(prep.imax[idx], np.maximum(need_a, prep.imin[idx]))
            floor = np.where(stiff[idx], prep.imin[idx], 0.0)
            residual = cap_t
            if only_floors:  # discharge only keeps minimums; elsewhere capacity as usual
                residual = np.where(need > VIOLATION_EPS, np.minimum(cap_t, floors_use),
                                    np.minimum(cap_t, np.maximum(cap0, floors_use)))
            residual = np.maximum(residual, 0.0)
            view = SlotView(t=t, idx=idx, hi=hi, floor=floor, residual=residual,
                            energy_per_a=epa, laxity_h=laxity_hours(prep, idx, t, remaining[idx]))
            amps = round_to_tenths(np.clip(allocate(prep, state, view), 0.0, hi), prep.imin[idx], hi,
                                   prep.usage[idx], residual)
            current[idx, t] = amps
            state.net[idx] += np.minimum(remaining[idx], amps * epa)
        # A car that does not resume and got nothing while it wanted energy is off for good.
        if floor_rows.size:
            idle = floor_rows[(current[floor_rows, t] == 0) & ~state.stopped[floor_rows]]
            state.stopped[idle] = True
            state.off_from[idle] = t
    return current, state


# ---------------------------------------------------------------------------------------------
# Building the Plan
# ---------------------------------------------------------------------------------------------


def _reasons(prep: Prepared, state: SlotState, unmet: np.ndarray) -> list[str | None]:
    """Why each controllable session ends with unmet need (None when it is served)."""
    at_full = prep.imax * prep.kw_per_a * prep.eff * prep.hours.sum(axis=1)
    beyond = prep.departure_s > prep.n_slots * prep.inp.slot_s
    too_soon = prep.need > at_full + 1e-6
    out: list[str | None] = []
    for row in range(prep.ctrl.size):
        if unmet[row] <= 1e-3:
            out.append(None)
        elif state.off_from[row] >= 0:
            text = OFF_ALREADY_REASON if prep.off[row] else OFF_REASON
            out.append(text.format("does" if prep.doubt[row] >= 2 else "may"))
        elif beyond[row]:
            out.append("plan horizon (departs after the last slot)")
        elif too_soon[row]:
            out.append("departure too soon (car max current)")
        elif state.discharged[row] > ENERGY_EPS_KWH:
            out.append("limit (discharged to keep the limit)")
        else:
            out.append("limit")
    return out


def violations(prep: Prepared, current: np.ndarray) -> np.ndarray:
    """Slots where `current` (controllable sessions) breaks the kW limit or a phase limit."""
    power = current * prep.kw_per_a[:, None]
    headroom = prep.limit_kw - prep.base_kw - power.sum(axis=0) - prep.fixed_kw.sum(axis=0)
    bad = headroom < -VIOLATION_EPS
    if prep.phase_limited:
        pos, neg = np.maximum(current, 0.0), np.maximum(-current, 0.0)
        drawn = prep.usage[:, 1:].T @ pos - prep.credit[:, 1:].T @ neg
        bad |= np.any(drawn > prep.cap[1:] + VIOLATION_EPS, axis=0)
        bad |= np.any(prep.usage[:, 1:].T @ neg - prep.usage[:, 1:].T @ pos > prep.export_room[1:] + VIOLATION_EPS,
                      axis=0)
    return bad


def fixed_session_plans(prep: Prepared) -> dict[str, SessionPlan]:
    """Uncontrollable sessions: budgeted at their draw; currents reported unrounded."""
    inp = prep.inp
    plans: dict[str, SessionPlan] = {}
    for frow, pos in enumerate(prep.fixed.tolist()):
        s = inp.sessions[pos]
        kw = prep.fixed_kw[frow]
        hours = presence_hours(np.array([s.departure_s]), prep.n_slots, inp.slot_s)[0]
        drawn = float(np.dot(kw, hours)) * s.efficiency
        need = max(s.energy_needed_kwh, s.guaranteed_kwh)
        unmet = max(0.0, need - drawn)
        amps = kw * 1000.0 / (s.phases * VOLTAGE_V)
        plans[s.session_id] = SessionPlan(
            session_id=s.session_id, current_a=tuple(amps.tolist()), power_kw=tuple(kw.tolist()),
            delivered_kwh=min(drawn, need) if need > 0 else drawn, unmet_kwh=unmet,
            guarantee_unmet_kwh=max(0.0, s.guaranteed_kwh - drawn),
            reason="fixed draw (not controllable)" if unmet > 1e-3 else None,
        )
    return plans


def build_plan(prep: Prepared, current: np.ndarray, state: SlotState, *, method: str = "heuristic",
               note: str = "") -> Plan:
    inp = prep.inp
    power = current * prep.kw_per_a[:, None]
    total = power.sum(axis=0) + prep.fixed_kw.sum(axis=0)
    headroom = prep.limit_kw - prep.base_kw - total
    bad = violations(prep, current)
    plans: dict[str, SessionPlan] = {}
    cur_rows, pow_rows = current.tolist(), power.tolist()
    unmet = np.maximum(state.remaining, 0.0)
    delivered = state.net.tolist()
    guar_unmet = state.guar_remaining.tolist()
    reasons = _reasons(prep, state, unmet)
    unmet_list = unmet.tolist()
    for row, pos in enumerate(prep.ctrl.tolist()):
        sid = inp.sessions[pos].session_id
        off = int(state.off_from[row])
        plans[sid] = SessionPlan(
            session_id=sid, current_a=tuple(cur_rows[row]), power_kw=tuple(pow_rows[row]),
            delivered_kwh=delivered[row], unmet_kwh=unmet_list[row],
            guarantee_unmet_kwh=guar_unmet[row], reason=reasons[row],
            discharged_kwh=float(state.discharged[row]), off_from_slot=off if off >= 0 else None,
        )
    plans.update(fixed_session_plans(prep))
    return Plan(sessions=plans, total_kw=tuple(total.tolist()), headroom_kw=tuple(headroom.tolist()),
                infeasible_slots=tuple(np.flatnonzero(bad).tolist()), method=method, note=note)
