"""Grid-aware charging planner: per-slot current setpoints that keep a transformer under its limit.

Pure functions, no I/O. The central system calls `plan` whenever a limit, a session or a need
changes and sends slot 0 (and the rest as a schedule); `immediate_cut` is the no-look-ahead
answer for the moment a stricter limit arrives, cheap enough to compute inside that message's
handling.

How `plan` decides, per slot, in strict priority order (each tier only uses what the previous
tiers left):

1. fixed sessions (rejected profile, over-drawing car) are budgeted at their measured draw;
2. cars that do not resume after a pause (``can_pause=False``) are kept at their minimum current;
3. guaranteed energy that cannot wait: the amount an as-late-as-possible (ALAP) reference
   schedule says must be in the car by the end of this slot, least laxity first;
4. comfort energy that cannot wait, from a second ALAP pass over what the first one left;
5. everything left is shared by water-filling: one common current level for every car, capped
   at each car's maximum and remaining need (fair, and no herding of every car into one slot).

The ALAP reference is computed backwards in time with least-laxity water-filling, so the energy
it places is (close to) the most the slots can carry; serving at least its cumulative amount by
every slot keeps that much deliverable while the rest of each slot goes out fairly and early.
Values in the 0-6 A gap are then snapped to 0 or the car's minimum (pausing the car with most
laxity when raising would break the limit) and every setpoint is rounded down to 0.1 A, so
sums stay under the cap. When the limit is below the base load, V2G cars discharge (within
power and dischargeable energy) and every other car pauses.

Units: currents are per phase in A (negative = discharge), power in kW, energy in kWh as
delivered into the battery (grid energy x efficiency). All sessions are present from slot 0 to
their departure: the caller re-plans on arrivals. A 1-phase car whose transformer phase is not
known (``phase_wiring`` lists more phases than it draws on) is counted on every listed phase for
per-phase limits, which is conservative.

Deliberate choices and known limits:
- A can_pause=False car's minimum comes before other cars' guarantees: pausing it would forfeit
  all its remaining energy. Only when even the minimums do not fit is one paused (reason
  "limit (paused although the car may not resume)").
- V2G discharge is sized on the kW limit only; per-phase limits are not used to size it (a slot
  still over a phase limit is reported in `infeasible_slots`). V2G is not used to move energy
  between cars.
- Fixed sessions' currents are reported unrounded (they are not setpoints).
- Measured on the 2-core dev machine: ~55 ms for 1,000 sessions x 32 slots (~125 ms with a
  per-phase limit), ~0.4-0.5 s for 10,000; delivered energy ~99 % of the LP optimum on
  congested instances (worst seen ~97 %), see tests/test_planner.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from profiles.units import VOLTAGE_V, amps_to_watts

PHASE_NAMES: tuple[str, str, str] = ("L1", "L2", "L3")
#: Energy below this (kWh) counts as "nothing left to deliver".
ENERGY_EPS_KWH = 1e-6
#: kW / A over the limit tolerated as float noise when reporting violations.
VIOLATION_EPS = 1e-6
_TINY = 1e-12


# ---------------------------------------------------------------------------------------------
# Public data types
# ---------------------------------------------------------------------------------------------


def _finite(name: str, value: object, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SessionNeed:
    """What one charging session needs and what its car can do."""

    session_id: str
    phases: int = 3
    phase_wiring: tuple[str, ...] = PHASE_NAMES
    min_current_a: float = 6.0
    max_current_a: float = 32.0
    energy_needed_kwh: float = 0.0
    guaranteed_kwh: float = 0.0
    departure_s: float = 8 * 3600
    can_pause: bool = True
    v2g: bool = False
    max_discharge_kw: float = 0.0
    dischargeable_kwh: float = 0.0
    fixed_kw: float | None = None
    efficiency: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.session_id, str) or not self.session_id:
            raise ValueError(f"session_id must be a non-empty string, got {self.session_id!r}")
        sid = self.session_id
        if isinstance(self.phases, bool) or not isinstance(self.phases, int) or not 1 <= self.phases <= 3:
            raise ValueError(f"session {sid}: phases must be 1, 2 or 3, got {self.phases!r}")
        if isinstance(self.phase_wiring, str) or not isinstance(self.phase_wiring, (tuple, list)):
            raise ValueError(f"session {sid}: phase_wiring must be a tuple of phase names, got {self.phase_wiring!r}")
        wiring = tuple(self.phase_wiring)
        if not wiring or any(p not in PHASE_NAMES for p in wiring) or len(set(wiring)) != len(wiring):
            raise ValueError(f"session {sid}: phase_wiring must be distinct names from {PHASE_NAMES}, got {wiring!r}")
        if len(wiring) < self.phases:
            raise ValueError(f"session {sid}: a {self.phases}-phase car needs {self.phases} phases in phase_wiring, got {wiring!r}")
        object.__setattr__(self, "phase_wiring", wiring)
        _finite(f"session {sid}: min_current_a", self.min_current_a, minimum=0.0)
        _finite(f"session {sid}: max_current_a", self.max_current_a, minimum=0.0)
        if self.max_current_a < self.min_current_a or self.max_current_a <= 0:
            raise ValueError(
                f"session {sid}: need 0 < min_current_a <= max_current_a, got {self.min_current_a}..{self.max_current_a}"
            )
        for name in ("energy_needed_kwh", "guaranteed_kwh", "departure_s", "max_discharge_kw", "dischargeable_kwh"):
            _finite(f"session {sid}: {name}", getattr(self, name), minimum=0.0)
        if self.fixed_kw is not None:
            _finite(f"session {sid}: fixed_kw", self.fixed_kw)
        eff = _finite(f"session {sid}: efficiency", self.efficiency)
        if not 0.0 < eff <= 1.0:
            raise ValueError(f"session {sid}: efficiency must be in (0, 1], got {eff}")
        for name in ("can_pause", "v2g"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"session {sid}: {name} must be a bool, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class PlanInput:
    """One planning problem: sessions behind one transformer and its limit per slot."""

    sessions: Sequence[SessionNeed]
    limit_kw: Sequence[float]
    base_load_kw: Sequence[float]
    slot_s: float = 900.0
    phase_limit_a: float | None = None
    base_load_phase_split: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for s in self.sessions:
            if not isinstance(s, SessionNeed):
                raise ValueError(f"sessions must hold SessionNeed objects, got {type(s).__name__}")
            if s.session_id in seen:
                raise ValueError(f"duplicate session_id {s.session_id!r}")
            seen.add(s.session_id)
        for name in ("limit_kw", "base_load_kw"):
            try:
                arr = np.asarray(getattr(self, name), dtype=float)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name} must be a sequence of numbers: {exc}") from None
            if arr.ndim != 1 or arr.size == 0:
                raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} must only hold finite numbers")
        if len(self.limit_kw) != len(self.base_load_kw):
            raise ValueError(
                f"limit_kw and base_load_kw need one value per slot each, got {len(self.limit_kw)} and {len(self.base_load_kw)}"
            )
        _finite("slot_s", self.slot_s)
        if self.slot_s <= 0:
            raise ValueError(f"slot_s must be > 0, got {self.slot_s}")
        if self.phase_limit_a is not None:
            _finite("phase_limit_a", self.phase_limit_a)
            if self.phase_limit_a <= 0:
                raise ValueError(f"phase_limit_a must be > 0, got {self.phase_limit_a}")
        split = self.base_load_phase_split
        if not isinstance(split, (tuple, list)) or len(split) != 3:
            raise ValueError(f"base_load_phase_split needs 3 shares, got {split!r}")
        for share in split:
            _finite("base_load_phase_split share", share, minimum=0.0)
        if abs(sum(split) - 1.0) > 1e-6:
            raise ValueError(f"base_load_phase_split must sum to 1, got {sum(split)}")


@dataclass(frozen=True)
class SessionPlan:
    session_id: str
    current_a: tuple[float, ...]
    power_kw: tuple[float, ...]
    delivered_kwh: float
    unmet_kwh: float
    guarantee_unmet_kwh: float
    reason: str | None


@dataclass(frozen=True)
class Plan:
    sessions: dict[str, SessionPlan]
    total_kw: tuple[float, ...]
    headroom_kw: tuple[float, ...]
    infeasible_slots: tuple[int, ...]


# ---------------------------------------------------------------------------------------------
# Vectorised preparation
# ---------------------------------------------------------------------------------------------


def floor_tenth(x: np.ndarray) -> np.ndarray:
    """Vectorised `units.round_down_one_decimal`; the 1e-9 absorbs 2.3*10 == 22.999999999999996."""
    return np.floor(np.asarray(x, dtype=float) * 10.0 + 1e-9) / 10.0


def ceil_tenth(x: np.ndarray) -> np.ndarray:
    return np.ceil(np.asarray(x, dtype=float) * 10.0 - 1e-9) / 10.0


@dataclass
class Prepared:
    """The input as arrays over controllable sessions (rows) and slots (columns)."""

    inp: PlanInput
    n_slots: int
    slot_h: float
    ctrl: np.ndarray  # positions in inp.sessions of controllable sessions
    fixed: np.ndarray  # positions of fixed (uncontrollable) sessions
    kw_per_a: np.ndarray  # kW drawn per amp of setpoint
    imin: np.ndarray  # minimum current on the 0.1 A grid (rounded up)
    imax: np.ndarray  # maximum current on the 0.1 A grid (rounded down)
    need: np.ndarray  # kWh into the battery
    guar: np.ndarray
    eff: np.ndarray
    departure_s: np.ndarray
    hours: np.ndarray  # (n, T) hours present in each slot
    hours_left: np.ndarray  # (n, T) hours present from the start of slot t to departure
    can_pause: np.ndarray
    v2g: np.ndarray
    dis_kw: np.ndarray
    dis_kwh: np.ndarray
    usage: np.ndarray  # (n, R) resource use per amp: kW, then A on L1..L3 when phase-limited
    cap: np.ndarray  # (R, T) capacity left after base load and fixed sessions
    fixed_kw: np.ndarray  # (n_fixed, T)
    base_kw: np.ndarray
    limit_kw: np.ndarray


def _presence_hours(departure_s: np.ndarray, n_slots: int, slot_s: float) -> np.ndarray:
    starts = np.arange(n_slots) * slot_s
    frac = np.clip((departure_s[:, None] - starts[None, :]) / slot_s, 0.0, 1.0)
    return frac * (slot_s / 3600.0)


def _phase_load(sessions: Sequence[SessionNeed]) -> np.ndarray:
    load = np.zeros((len(sessions), 3))
    for row, s in enumerate(sessions):
        for p in s.phase_wiring:
            load[row, PHASE_NAMES.index(p)] = 1.0
    return load


def prepare(inp: PlanInput) -> Prepared:
    sessions = list(inp.sessions)
    n_slots = len(inp.limit_kw)
    limit = np.asarray(inp.limit_kw, dtype=float)
    base = np.asarray(inp.base_load_kw, dtype=float)
    is_fixed = np.array([s.fixed_kw is not None for s in sessions], dtype=bool)
    ctrl = np.flatnonzero(~is_fixed)
    fixed = np.flatnonzero(is_fixed)
    cs = [sessions[i] for i in ctrl]
    fs = [sessions[i] for i in fixed]

    def col(values: list[float]) -> np.ndarray:
        return np.asarray(values, dtype=float)

    kw_per_a = col([amps_to_watts(1.0, s.phases) / 1000.0 for s in cs])
    imax = floor_tenth(col([s.max_current_a for s in cs]))
    imin = np.minimum(ceil_tenth(col([s.min_current_a for s in cs])), imax)
    need = col([max(s.energy_needed_kwh, s.guaranteed_kwh) for s in cs])
    departure_s = col([s.departure_s for s in cs])
    hours = _presence_hours(departure_s, n_slots, inp.slot_s)
    hours_left = np.cumsum(hours[:, ::-1], axis=1)[:, ::-1] if len(cs) else hours

    # Capacity per resource and slot, after base load and fixed sessions.
    f_hours = _presence_hours(col([s.departure_s for s in fs]), n_slots, inp.slot_s)
    fixed_kw = (f_hours > 0) * col([s.fixed_kw for s in fs])[:, None] if fs else np.zeros((0, n_slots))
    cap_kw = limit - base - fixed_kw.sum(axis=0)
    if inp.phase_limit_a is None:
        usage = kw_per_a[:, None]
        cap = cap_kw[None, :]
    else:
        split = np.asarray(inp.base_load_phase_split, dtype=float)
        base_a = split[:, None] * base[None, :] * 1000.0 / VOLTAGE_V
        fixed_a = np.zeros((3, n_slots))
        if fs:
            kw_per_a_fixed = col([amps_to_watts(1.0, s.phases) / 1000.0 for s in fs])
            fixed_a = _phase_load(fs).T @ (fixed_kw / kw_per_a_fixed[:, None])
        cap = np.vstack([cap_kw[None, :], inp.phase_limit_a - base_a - fixed_a])
        usage = np.hstack([kw_per_a[:, None], _phase_load(cs)]) if cs else np.zeros((0, 4))
    return Prepared(
        inp=inp, n_slots=n_slots, slot_h=inp.slot_s / 3600.0, ctrl=ctrl, fixed=fixed,
        kw_per_a=kw_per_a, imin=imin, imax=imax, need=need,
        guar=col([s.guaranteed_kwh for s in cs]),
        eff=col([s.efficiency for s in cs]), departure_s=departure_s, hours=hours, hours_left=hours_left,
        can_pause=np.array([s.can_pause for s in cs], dtype=bool),
        v2g=np.array([s.v2g for s in cs], dtype=bool),
        dis_kw=col([s.max_discharge_kw if s.v2g else 0.0 for s in cs]),
        dis_kwh=col([s.dischargeable_kwh if s.v2g else 0.0 for s in cs]),
        usage=np.asarray(usage, dtype=float).reshape(len(cs), cap.shape[0]), cap=cap,
        fixed_kw=fixed_kw, base_kw=base, limit_kw=limit,
    )


# ---------------------------------------------------------------------------------------------
# Allocation primitives (all on currents in A, with per-amp resource use)
# ---------------------------------------------------------------------------------------------


def _max_level(offset: np.ndarray, slope: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               weight: np.ndarray, budget: float) -> float:
    """Largest L with sum(weight * clip(offset + slope*L, lo, hi)) <= budget (slope > 0).

    +inf when everything at `hi` fits; -inf when not even `lo` fits. The sum is piecewise linear
    in L, so it is evaluated at every breakpoint with sorted cumulative sums and interpolated.
    """
    if weight.size == 0 or float(np.dot(weight, hi)) <= budget + _TINY:
        return math.inf
    b_lo = (lo - offset) / slope
    b_hi = (hi - offset) / slope
    o_lo = np.argsort(b_lo, kind="stable")
    o_hi = np.argsort(b_hi, kind="stable")
    s_lo, s_hi = b_lo[o_lo], b_hi[o_hi]
    zero = np.zeros(1)
    c_lo_lo = np.concatenate([zero, np.cumsum((weight * lo)[o_lo])])
    c_lo_off = np.concatenate([zero, np.cumsum((weight * offset)[o_lo])])
    c_lo_sl = np.concatenate([zero, np.cumsum((weight * slope)[o_lo])])
    c_hi_hi = np.concatenate([zero, np.cumsum((weight * hi)[o_hi])])
    c_hi_off = np.concatenate([zero, np.cumsum((weight * offset)[o_hi])])
    c_hi_sl = np.concatenate([zero, np.cumsum((weight * slope)[o_hi])])
    points = np.union1d(s_lo, s_hi)
    k_lo = np.searchsorted(s_lo, points, side="right")  # sessions with b_lo <= L
    k_hi = np.searchsorted(s_hi, points, side="right")  # sessions with b_hi <= L (at hi)
    mid_slope = c_lo_sl[k_lo] - c_hi_sl[k_hi]
    values = (c_hi_hi[k_hi] + (c_lo_lo[-1] - c_lo_lo[k_lo])
              + (c_lo_off[k_lo] - c_hi_off[k_hi]) + points * mid_slope)
    j = int(np.searchsorted(values, budget + _TINY, side="right")) - 1
    if j < 0:
        return -math.inf
    if j >= points.size - 1:
        return math.inf
    level = points[j]
    if mid_slope[j] > _TINY:
        level = points[j] + (budget - values[j]) / mid_slope[j]
    return float(min(max(level, points[j]), points[j + 1]))


def water_fill(offset: np.ndarray, slope: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               usage: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Raise x_i = clip(offset_i + slope_i*L, lo_i, hi_i) with one common level L.

    `residual` is the capacity of each resource left *above* `lo`. When a resource (say phase
    L2) runs out, the sessions on it stop at their value and the others keep rising, so no
    capacity is left idle that some car could still use.
    """
    x = lo.astype(float).copy()
    hi = np.maximum(hi, lo)
    residual = residual.astype(float).copy()
    rising = hi > lo + _TINY
    for _ in range(usage.shape[1] + 1):
        idx = np.flatnonzero(rising)
        if idx.size == 0:
            break
        best, bind = math.inf, -1
        for r in range(usage.shape[1]):
            sel = idx[usage[idx, r] > 0]
            if sel.size == 0:
                continue
            w = usage[sel, r]
            budget = max(residual[r], 0.0) + float(np.dot(w, x[sel]))
            level = _max_level(offset[sel], slope[sel], x[sel], hi[sel], w, budget)
            if level < best:
                best, bind = level, r
        if best == math.inf:
            new = hi[idx]
        elif best == -math.inf:
            break
        else:
            new = np.clip(offset[idx] + slope[idx] * best, x[idx], hi[idx])
        residual -= usage[idx].T @ (new - x[idx])
        x[idx] = new
        if best == math.inf:
            break
        rising[idx[usage[idx, bind] > 0]] = False
        rising &= hi > x + _TINY
    return x


def priority_fill(request: np.ndarray, order: np.ndarray, usage: np.ndarray, residual: np.ndarray,
                  *, whole: bool = False, max_rounds: int = 24) -> np.ndarray:
    """Give each session its request in `order` while every resource has room.

    whole=False: the first session that does not fit gets the part that does (it is snapped
    later); sessions on an exhausted resource get nothing. whole=True: all or nothing per
    session (used to raise paused cars to their minimum), skipping ones that do not fit.
    """
    alloc = np.zeros(request.shape[0])
    residual = residual.astype(float).copy()
    cand = order[request[order] > _TINY]
    for _ in range(max_rounds):
        if cand.size == 0:
            break
        use = request[cand, None] * usage[cand]
        cum = np.cumsum(use, axis=0)
        fits = np.all(cum <= residual + 1e-9, axis=1)
        k = cand.size if fits.all() else int(np.argmin(fits))
        alloc[cand[:k]] = request[cand[:k]]
        if k == cand.size:
            break
        if k > 0:
            residual -= cum[k - 1]
        blocked = cand[k]
        rest = cand[k + 1:]
        if whole:
            rest = rest[np.all(use[k + 1:] <= residual + 1e-9, axis=1)]
        else:
            on = usage[blocked] > 0
            frac = float(np.clip(np.min(residual[on] / use[k, on]), 0.0, 1.0))
            alloc[blocked] = frac * request[blocked]
            residual -= alloc[blocked] * usage[blocked]
            exhausted = residual <= 1e-9
            rest = rest[~np.any(usage[rest][:, exhausted] > 0, axis=1)]
        cand = rest
    return alloc


def snap_gap(x: np.ndarray, imin: np.ndarray, hi: np.ndarray, order: np.ndarray,
             usage: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Make every value 0 or >= the car's minimum without breaking any resource.

    Gap values are paused; then they are raised to the minimum in `order` (highest priority
    first, so the one paused for lack of room is the one with most laxity); whatever is left
    goes to the running cars by water-filling (which never creates new gap values).
    `residual` is the capacity left above `x`.
    """
    gap = (x > _TINY) & (x < imin - 1e-9)
    if not gap.any():
        return x
    x = x.copy()
    residual = residual + usage[gap].T @ x[gap]
    x[gap] = 0.0
    request = np.where(gap, imin, 0.0)
    raised = priority_fill(request, order, usage, residual, whole=True)
    x += raised
    residual = residual - usage.T @ raised
    running = x >= imin - 1e-9
    zeros = np.zeros_like(x)
    top = np.where(running, np.maximum(hi, x), x)
    return water_fill(zeros, np.ones_like(x), x, top, usage, residual)


# ---------------------------------------------------------------------------------------------
# The slot-by-slot engine shared by the planner, the immediate cut and the baselines
# ---------------------------------------------------------------------------------------------


@dataclass
class SlotState:
    """What is still to deliver, per controllable session, as the engine walks the slots."""

    remaining: np.ndarray  # kWh still wanted (grows when V2G takes energy out)
    guar_remaining: np.ndarray
    dischargeable: np.ndarray
    forced_pause: np.ndarray  # a can_pause=False car had to be paused (no room even at minimum)


@dataclass
class SlotView:
    """One slot as an allocator sees it: only sessions present and still wanting energy."""

    t: int
    idx: np.ndarray  # rows into Prepared arrays
    hi: np.ndarray  # highest useful current (car max, or its remaining need)
    floor: np.ndarray  # can_pause=False cars: their minimum; others 0
    residual: np.ndarray  # capacity per resource (after fixed sessions)
    energy_per_a: np.ndarray  # kWh into the battery per amp over this slot
    laxity_h: np.ndarray


Allocator = Callable[[Prepared, SlotState, SlotView], np.ndarray]


def laxity_hours(prep: Prepared, idx: np.ndarray, t: int, remaining: np.ndarray) -> np.ndarray:
    """Hours a session can still wait (time left minus time needed at full rate); smaller = more urgent."""
    rate = prep.imax[idx] * prep.kw_per_a[idx] * prep.eff[idx]
    beyond = np.maximum(0.0, prep.departure_s[idx] - prep.n_slots * prep.inp.slot_s) / 3600.0
    return prep.hours_left[idx, t] + beyond - remaining / np.maximum(rate, _TINY)


def _discharge(prep: Prepared, state: SlotState, t: int, deficit_kw: float,
               floor_kw: float) -> tuple[np.ndarray, np.ndarray, bool]:
    """Cover `deficit_kw` (limit below base load) by V2G discharge, shared in proportion to what
    each car can give. Returns (rows, negative currents, whether can_pause=False minimums fit too)."""
    h = prep.hours[:, t]
    rows = np.flatnonzero(prep.v2g & (h > 0) & (state.dischargeable > ENERGY_EPS_KWH))
    if rows.size == 0:
        return rows, np.zeros(0), floor_kw <= 0
    kpa = prep.kw_per_a[rows]
    by_energy = state.dischargeable[rows] * prep.eff[rows] / h[rows]
    top_a = floor_tenth(np.minimum(prep.imax[rows], np.minimum(prep.dis_kw[rows], by_energy) / kpa))
    top_a = np.where(top_a >= prep.imin[rows], top_a, 0.0)
    available = float(np.dot(top_a, kpa))
    keep_floor = available >= deficit_kw + floor_kw
    target = deficit_kw + (floor_kw if keep_floor else 0.0)
    if available <= 0:
        return rows, np.zeros(rows.size), keep_floor
    share = min(1.0, target / available)
    amps = np.minimum(top_a, ceil_tenth(share * top_a))
    amps = np.where((amps > 0) & (amps < prep.imin[rows]), np.minimum(prep.imin[rows], top_a), amps)
    return rows, -amps, keep_floor


def run_slots(prep: Prepared, allocate: Allocator, *, use_v2g: bool, respect_limit: bool = True) -> Plan:
    """Walk the slots in time order, asking `allocate` for each slot's currents, and account energy."""
    n, n_slots = prep.ctrl.size, prep.n_slots
    state = SlotState(
        remaining=prep.need.copy(), guar_remaining=prep.guar.copy(),
        dischargeable=prep.dis_kwh.copy(), forced_pause=np.zeros(n, dtype=bool),
    )
    current = np.zeros((n, n_slots))
    for t in range(n_slots):
        h = prep.hours[:, t]
        wants = (h > 0) & (state.remaining > ENERGY_EPS_KWH)
        cap_t = prep.cap[:, t].copy()
        if use_v2g and cap_t[0] < -VIOLATION_EPS:
            floor_rows = np.flatnonzero(wants & ~prep.can_pause)
            floor_kw = float(np.dot(prep.imin[floor_rows], prep.kw_per_a[floor_rows]))
            rows, amps, keep = _discharge(prep, state, t, -cap_t[0], floor_kw)
            current[rows, t] = amps
            taken = -amps * prep.kw_per_a[rows] * h[rows] / prep.eff[rows]
            state.dischargeable[rows] -= taken
            state.remaining[rows] += taken
            floor_rows = floor_rows[current[floor_rows, t] == 0]
            if keep:
                current[floor_rows, t] = prep.imin[floor_rows]
            else:
                state.forced_pause[floor_rows] = True
        elif cap_t[0] >= -VIOLATION_EPS or not respect_limit:
            idx = np.flatnonzero(wants)
            if idx.size:
                epa = prep.kw_per_a[idx] * prep.eff[idx] * h[idx]
                need_a = state.remaining[idx] / np.maximum(epa, _TINY)
                hi = np.minimum(prep.imax[idx], np.maximum(need_a, prep.imin[idx]))
                floor = np.where(prep.can_pause[idx], 0.0, prep.imin[idx])
                view = SlotView(t=t, idx=idx, hi=hi, floor=floor, residual=cap_t,
                                energy_per_a=epa, laxity_h=laxity_hours(prep, idx, t, state.remaining[idx]))
                amps = floor_tenth(np.clip(allocate(prep, state, view), 0.0, hi))
                amps = np.where(amps < prep.imin[idx] - 1e-9, 0.0, amps)
                state.forced_pause[idx[(floor > 0) & (amps == 0)]] = True
                current[idx, t] = amps
        else:
            state.forced_pause[wants & ~prep.can_pause] = True
        # Account the energy charged in this slot (discharge was accounted above).
        rows = np.flatnonzero(current[:, t] > 0)
        got = np.minimum(state.remaining[rows], current[rows, t] * prep.kw_per_a[rows] * prep.eff[rows] * h[rows])
        to_guar = np.minimum(state.guar_remaining[rows], got)
        state.remaining[rows] -= got
        state.guar_remaining[rows] -= to_guar
    return _build_plan(prep, current, state)


def _reasons(prep: Prepared, unmet: np.ndarray, forced_pause: np.ndarray) -> list[str | None]:
    """Why each controllable session ends with unmet need (None when it is served)."""
    at_full = prep.imax * prep.kw_per_a * prep.eff * prep.hours.sum(axis=1)
    beyond = prep.departure_s > prep.n_slots * prep.inp.slot_s
    too_soon = prep.need > at_full + 1e-6
    out: list[str | None] = []
    for row in range(prep.ctrl.size):
        if unmet[row] <= 1e-3:
            out.append(None)
        elif beyond[row]:
            out.append("plan horizon (departs after the last slot)")
        elif too_soon[row]:
            out.append("departure too soon (car max current)")
        elif forced_pause[row]:
            out.append("limit (paused although the car may not resume)")
        else:
            out.append("limit")
    return out


def _build_plan(prep: Prepared, current: np.ndarray, state: SlotState) -> Plan:
    inp = prep.inp
    power = current * prep.kw_per_a[:, None]
    total = power.sum(axis=0) + prep.fixed_kw.sum(axis=0)
    headroom = prep.limit_kw - prep.base_kw - total
    bad = headroom < -VIOLATION_EPS
    if prep.cap.shape[0] > 1:
        phase_used = prep.usage[:, 1:].T @ np.where(current > 0, current, 0.0)
        bad |= np.any(phase_used > prep.cap[1:] + VIOLATION_EPS, axis=0)
    plans: dict[str, SessionPlan] = {}
    cur_rows, pow_rows = current.tolist(), power.tolist()
    unmet = np.maximum(state.remaining, 0.0)
    delivered = (prep.need - state.remaining).tolist()
    guar_unmet = np.maximum(state.guar_remaining, 0.0).tolist()
    reasons = _reasons(prep, unmet, state.forced_pause)
    unmet_list = unmet.tolist()
    for row, pos in enumerate(prep.ctrl.tolist()):
        sid = inp.sessions[pos].session_id
        plans[sid] = SessionPlan(
            session_id=sid, current_a=tuple(cur_rows[row]), power_kw=tuple(pow_rows[row]),
            delivered_kwh=delivered[row], unmet_kwh=unmet_list[row],
            guarantee_unmet_kwh=guar_unmet[row], reason=reasons[row],
        )
    for frow, pos in enumerate(prep.fixed.tolist()):
        s = inp.sessions[pos]
        kw = prep.fixed_kw[frow]
        hours = _presence_hours(np.array([s.departure_s]), prep.n_slots, inp.slot_s)[0]
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
    return Plan(sessions=plans, total_kw=tuple(total.tolist()), headroom_kw=tuple(headroom.tolist()),
                infeasible_slots=tuple(np.flatnonzero(bad).tolist()))


# ---------------------------------------------------------------------------------------------
# The planner proper
# ---------------------------------------------------------------------------------------------


def _floor_schedule(prep: Prepared, cap: np.ndarray, used_a: np.ndarray) -> np.ndarray:
    """Energy the can_pause=False cars get from being held at their minimum, slot by slot from
    the start until their need is met (the forward pass serves these floors first). Reserves
    their capacity in `cap` and `used_a` in place."""
    energy = np.zeros((prep.ctrl.size, prep.n_slots))
    rows = np.flatnonzero(~prep.can_pause & (prep.need > ENERGY_EPS_KWH))
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
    out = []
    for needs, pre in ((prep.guar, to_guar), (prep.need - prep.guar, floor_energy - to_guar)):
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


def _planner_allocator(must_g: np.ndarray, must_c: np.ndarray) -> Allocator:
    zero = np.zeros((must_g.shape[0], 1))
    slot_g = np.diff(np.hstack([zero, must_g]), axis=1)  # reference energy per slot
    slot_all = slot_g + np.diff(np.hstack([zero, must_c]), axis=1)

    def allocate(prep: Prepared, state: SlotState, v: SlotView) -> np.ndarray:
        idx, t, usage = v.idx, v.t, prep.usage[v.idx]
        imin, epa = prep.imin[idx], v.energy_per_a
        done_g = prep.guar[idx] - state.guar_remaining[idx]
        done = prep.need[idx] - state.remaining[idx]
        due_g = np.maximum(0.0, must_g[idx, t] - done_g) / epa
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


def plan(inp: PlanInput) -> Plan:
    """The online planner: setpoints for every session and slot that keep the limit (see module doc)."""
    prep = prepare(inp)
    must_g, must_c = alap_reference(prep)
    return run_slots(prep, _planner_allocator(must_g, must_c), use_v2g=True)


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


def immediate_cut(inp: PlanInput) -> Plan:
    """The instant safe answer to a stricter limit: no look-ahead, no reference schedule.

    Each slot (slot 0 is what matters; the rest follows the same rule) scales every car to the
    same fraction of its maximum current so the total fits; cars that would land in the 0-6 A
    gap pause, most laxity first, and can_pause=False cars keep their minimum while it fits.
    Below base load, V2G cars discharge as in `plan`.
    """
    return run_slots(prepare(inp), _cut_allocator, use_v2g=True)
