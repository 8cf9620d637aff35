"""The fast heuristic planner and the immediate cut (no LP), both through `profiles.engine`.

`heuristic_plan` decides, per slot, in strict priority order (each tier only uses what the
previous tiers left):

1. fixed sessions (rejected profile, over-drawing car) are budgeted at their measured draw;
2. cars that do not resume after a pause are kept at their minimum current (the engine's rule);
3. guaranteed energy that cannot wait: the amount an as-late-as-possible (ALAP) reference
   schedule says must be in the car by the end of this slot, least laxity first;
4. comfort energy that cannot wait, from a second ALAP pass over what the first one left;
5. everything left is shared by water-filling: one common current level for every car, capped
   at each car's maximum and remaining need (fair, and no herding of every car into one slot).

The ALAP reference is computed backwards in time with least-laxity water-filling, so the energy
it places is (close to) the most the slots can carry; serving at least its cumulative amount by
every slot keeps that much deliverable while the rest of each slot goes out fairly and early.
Any other reference (e.g. the LP's, `profiles.refine`) can drive the same allocator.
"""

from __future__ import annotations

import numpy as np

from profiles.arrays import Prepared, prepare
from profiles.engine import Allocator, SlotState, SlotView, laxity_hours, run_slots
from profiles.fill import priority_fill, snap_gap, water_fill
from profiles.model import ENERGY_EPS_KWH, Plan, PlanInput

_TINY = 1e-12


def _floor_schedule(prep: Prepared, cap: np.ndarray, used_a: np.ndarray) -> np.ndarray:
    """Energy the cars that do not resume get from being held at their minimum, slot by slot
    from the start until their need is met (the engine serves these floors first). Reserves
    their capacity in `cap` and `used_a` in place."""
    energy = np.zeros((prep.ctrl.size, prep.n_slots))
    rows = np.flatnonzero(~prep.pausable & ~prep.off & (prep.need > ENERGY_EPS_KWH))
    if rows.size == 0:
        return energy
    per_slot = prep.imin[rows, None] * prep.kw_per_a[rows, None] * prep.eff[rows, None] * prep.hours[rows]
    before = np.cumsum(per_slot, axis=1) - per_slot
    active = (prep.hours[rows] > 0) & (before < prep.need[rows, None] - ENERGY_EPS_KWH)
    energy[rows] = np.where(active, np.minimum(per_slot, prep.need[rows, None] - before), 0.0)
    amps = np.where(active, prep.imin[rows, None], 0.0)
    used_a[rows] += amps
    cap -= np.einsum("ir,it->rt", prep.usage[rows], amps)
    return energy


def alap_reference(prep: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative kWh each session must have by the end of each slot: (guaranteed, comfort).

    Built backwards in time: every slot's capacity goes to the sessions present then by
    least-laxity water-filling (the one with most hours of full-rate charging still to place
    first). Guaranteed energy is placed first, comfort energy in what is left. Each is placed
    in two sweeps: first only in slots a car is present for entirely, then (for what did not
    fit) also in its departure slot, where budgeted power only partly turns into energy.
    """
    n, n_slots = prep.ctrl.size, prep.n_slots
    cap = np.maximum(prep.cap, 0.0)
    rate = prep.imax * prep.kw_per_a * prep.eff  # kWh per hour at full current
    used_a = np.zeros((n, n_slots))
    full_slot = prep.hours >= prep.slot_h - 1e-9
    floor_energy = _floor_schedule(prep, cap, used_a)
    to_guar = np.minimum(floor_energy, np.maximum(prep.guar[:, None] - np.cumsum(floor_energy, axis=1)
                                                  + floor_energy, 0.0))
    live = ~prep.off  # a car off until departure gets nothing, so nothing is placed for it
    out = []
    for needs, pre in ((prep.guar * live, to_guar), ((prep.need - prep.guar) * live, floor_energy - to_guar)):
        placed = pre.copy()
        remaining = np.maximum(needs - pre.sum(axis=1), 0.0)
        # Sweep 2 only needs the departure slots: in every other slot sweep 1 already gave each
        # car all it could take or used up the capacity.
        for allowed in (full_slot, (prep.hours > 0) & ~full_slot):
            for t in range(n_slots - 1, -1, -1):
                idx = np.flatnonzero(allowed[:, t] & (remaining > ENERGY_EPS_KWH))
                if idx.size == 0:
                    continue
                h = prep.hours[idx, t]
                epa = prep.kw_per_a[idx] * prep.eff[idx] * h
                hi = np.clip(remaining[idx] / epa, 0.0, prep.imax[idx] - used_a[idx, t])
                slope = prep.imax[idx] / h
                tau = remaining[idx] / rate[idx]
                usage = prep.usage[idx]
                amps = water_fill(slope * tau, slope, np.zeros(idx.size), hi, usage, cap[:, t])
                # Keep the reference realisable: no current in the 0-6 A gap either.
                gap_min = np.where(used_a[idx, t] > 0, 0.0, prep.imin[idx])
                top = np.maximum(hi, np.minimum(gap_min, prep.imax[idx] - used_a[idx, t]))
                amps = snap_gap(amps, gap_min, top, np.argsort(-tau, kind="stable"), usage,
                                cap[:, t] - usage.T @ amps)
                cap[:, t] -= prep.usage[idx].T @ amps
                used_a[idx, t] += amps
                energy = np.minimum(amps * epa, remaining[idx])
                remaining[idx] -= energy
                placed[idx, t] += energy
        out.append(np.cumsum(placed, axis=1))
    return out[0], out[1]


def reference_allocator(must_g: np.ndarray, must_c: np.ndarray) -> Allocator:
    zero = np.zeros((must_g.shape[0], 1))
    slot_g = np.diff(np.hstack([zero, must_g]), axis=1)  # reference energy per slot
    slot_all = slot_g + np.diff(np.hstack([zero, must_c]), axis=1)

    def allocate(prep: Prepared, state: SlotState, v: SlotView) -> np.ndarray:
        idx, t, usage = v.idx, v.t, prep.usage[v.idx]
        imin, epa = prep.imin[idx], v.energy_per_a
        done = state.net[idx]  # net: discharge counts against guarantee and need alike
        due_g = np.maximum(0.0, must_g[idx, t] - done) / epa
        due = np.maximum(due_g, np.maximum(0.0, must_g[idx, t] + must_c[idx, t] - done) / epa)

        def up(a: np.ndarray) -> np.ndarray:  # a due amount must be realisable: lift it to the minimum
            return np.minimum(np.where((a > _TINY) & (a < imin), imin, a), v.hi)

        order = np.argsort(v.laxity_h, kind="stable")
        order_g = np.argsort(laxity_hours(prep, idx, t, state.guar_remaining[idx]), kind="stable")
        # Dues on schedule (what the reference placed in this slot) come before catching up on
        # arrears: a car that fell behind must not take the slot from cars that did not.
        tiers = (
            (up(np.minimum(due_g, slot_g[idx, t] / epa)), order_g),
            (up(np.minimum(due, slot_all[idx, t] / epa)), order),
            (up(due_g), order_g),
            (up(due), order),
        )
        residual = v.residual.copy()
        x = priority_fill(v.floor, order, usage, residual, whole=True)
        residual -= usage.T @ x
        for target, tier_order in tiers:
            add = priority_fill(np.maximum(0.0, target - x), tier_order, usage, residual)
            residual -= usage.T @ add
            x = x + add
        # Fair share of the rest: cars present for the whole slot first, since a car leaving
        # mid-slot turns only part of its budgeted power into energy.
        full = prep.hours[idx, t] >= prep.slot_h - 1e-9
        zeros, ones = np.zeros_like(x), np.ones_like(x)
        for top in (np.where(full, v.hi, x), v.hi) if not full.all() else (v.hi,):
            x = water_fill(zeros, ones, x, top, usage, residual)
            residual = v.residual - usage.T @ x
        urgent_first = np.lexsort((v.laxity_h, due <= _TINY))
        return snap_gap(x, imin, v.hi, urgent_first, usage, residual)

    return allocate


def heuristic_plan(inp: PlanInput) -> Plan:
    """The heuristic planner: ALAP reference, then the tiers above (see the module doc)."""
    prep = prepare(inp)
    must_g, must_c = alap_reference(prep)
    return run_slots(prep, reference_allocator(must_g, must_c), use_v2g=True)


def _cut_allocator(prep: Prepared, state: SlotState, v: SlotView) -> np.ndarray:
    """Proportional scale-down: every car gets the same fraction of its maximum current."""
    usage, imin, imax = prep.usage[v.idx], prep.imin[v.idx], prep.imax[v.idx]
    order = np.argsort(v.laxity_h, kind="stable")
    x = priority_fill(v.floor, order, usage, v.residual, whole=True)
    residual = v.residual - usage.T @ x
    zeros = np.zeros_like(x)
    x = water_fill(zeros, imax, x, v.hi, usage, residual)
    residual = v.residual - usage.T @ x
    return snap_gap(x, imin, v.hi, order, usage, residual)


#: Slots an immediate cut plans. The cut answers the limit in force now, and the refined plan,
#: requested at once, replaces it within seconds; planning the whole horizon for it would only
#: delay the first profile (at 10,000 sessions the horizon's 32 slots cost twice the time of 2).
#: A station that never gets the refined plan falls back to its fail-safe default when the cut's
#: Absolute schedule ends; a Relative cut holds until replaced.
CUT_SLOTS = 2


def immediate_cut(inp: PlanInput) -> Plan:
    """The instant safe answer to a stricter limit: no look-ahead, no reference schedule.

    Each slot (slot 0 is what matters; the rest follows the same rule) scales every car to the
    same fraction of its maximum current so the total fits; cars that would land in the 0-6 A
    gap pause, most laxity first; cars that do not resume keep their minimum while it fits
    (the engine's rule). Below base load, V2G cars discharge as in `plan`.
    """
    return run_slots(prepare(inp), _cut_allocator, use_v2g=True, method="cut")
