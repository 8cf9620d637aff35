"""A `PlanInput` as numpy arrays over controllable sessions (rows) and slots (columns).

Resources: column 0 is the kW limit; with a per-phase limit, columns 1-3 are the amps on the
transformer's L1-L3. ``usage[i, r]`` is what one amp of session i's setpoint takes of resource
r; ``credit[i, r]`` what one amp of discharge gives back. A 1-phase car whose transformer phase
is not known (``phase_wiring`` lists more phases than it draws on) is counted on every listed
phase when it charges and credited on none when it discharges, which is conservative both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from profiles.model import KNOWN, PHASE_NAMES, SUSPECTED, PlanInput, SessionNeed
from profiles.units import VOLTAGE_V, amps_to_watts

_TINY = 1e-12


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
    need: np.ndarray  # net kWh into the battery
    guar: np.ndarray
    eff: np.ndarray
    departure_s: np.ndarray
    hours: np.ndarray  # (n, T) hours present in each slot
    hours_left: np.ndarray  # (n, T) hours present from the start of slot t to departure
    pausable: np.ndarray  # False: a car that (probably) does not resume after a pause
    doubt: np.ndarray  # 0 resumes, 1 suspected not to, 2 known not to
    off: np.ndarray  # a car that does not resume and is paused now: no current until departure
    v2g: np.ndarray
    dis_kw: np.ndarray
    dis_kwh: np.ndarray  # battery-side budget left above the minimum state of charge
    usage: np.ndarray  # (n, R) resource use per amp charged
    credit: np.ndarray  # (n, R) resource relief per amp discharged
    cap: np.ndarray  # (R, T) capacity left after base load and fixed sessions
    export_room: np.ndarray  # (R, T) how far net export may go on each resource (phase limit)
    fixed_kw: np.ndarray  # (n_fixed, T)
    base_kw: np.ndarray
    limit_kw: np.ndarray

    @property
    def phase_limited(self) -> bool:
        return self.cap.shape[0] > 1


def presence_hours(departure_s: np.ndarray, n_slots: int, slot_s: float) -> np.ndarray:
    starts = np.arange(n_slots) * slot_s
    frac = np.clip((departure_s[:, None] - starts[None, :]) / slot_s, 0.0, 1.0)
    return frac * (slot_s / 3600.0)


def phase_load(sessions: Sequence[SessionNeed]) -> np.ndarray:
    load = np.zeros((len(sessions), 3))
    for row, s in enumerate(sessions):
        for p in s.phase_wiring:
            load[row, PHASE_NAMES.index(p)] = 1.0
    return load


def _doubt(s: SessionNeed) -> int:
    level = s.resume_doubt
    return 2 if level == KNOWN else 1 if level == SUSPECTED else 0


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
    hours = presence_hours(departure_s, n_slots, inp.slot_s)
    hours_left = np.cumsum(hours[:, ::-1], axis=1)[:, ::-1] if len(cs) else hours
    eff = col([s.efficiency for s in cs])
    v2g = np.array([s.v2g for s in cs], dtype=bool)
    budget = col([max(0.0, s.dischargeable_kwh - s.discharged_kwh / s.efficiency) if s.v2g else 0.0 for s in cs])

    # Capacity per resource and slot, after base load and fixed sessions.
    f_hours = presence_hours(col([s.departure_s for s in fs]), n_slots, inp.slot_s)
    fixed_kw = (f_hours > 0) * col([s.fixed_kw or 0.0 for s in fs])[:, None] if fs else np.zeros((0, n_slots))
    cap_kw = limit - base - fixed_kw.sum(axis=0)
    if inp.phase_limit_a is None:
        usage = kw_per_a[:, None]
        credit = kw_per_a[:, None]
        cap = cap_kw[None, :]
        export_room = np.full((1, n_slots), np.inf)
    else:
        split = np.asarray(inp.base_load_phase_split, dtype=float)
        base_a = split[:, None] * base[None, :] * 1000.0 / VOLTAGE_V
        fixed_a = np.zeros((3, n_slots))
        if fs:
            kw_per_a_fixed = col([amps_to_watts(1.0, s.phases) / 1000.0 for s in fs])
            fixed_a = phase_load(fs).T @ (fixed_kw / kw_per_a_fixed[:, None])
        cap = np.vstack([cap_kw[None, :], inp.phase_limit_a - base_a - fixed_a])
        export_room = np.vstack([np.full((1, n_slots), np.inf), inp.phase_limit_a + base_a + fixed_a])
        load = phase_load(cs) if cs else np.zeros((0, 3))
        exact = col([1.0 if len(s.phase_wiring) == s.phases else 0.0 for s in cs])
        usage = np.hstack([kw_per_a[:, None], load]) if cs else np.zeros((0, 4))
        credit = np.hstack([kw_per_a[:, None], load * exact[:, None]]) if cs else np.zeros((0, 4))
    n_res = cap.shape[0]
    return Prepared(
        inp=inp, n_slots=n_slots, slot_h=inp.slot_s / 3600.0, ctrl=ctrl, fixed=fixed,
        kw_per_a=kw_per_a, imin=imin, imax=imax, need=need,
        guar=col([s.guaranteed_kwh for s in cs]),
        eff=eff, departure_s=departure_s, hours=hours, hours_left=hours_left,
        pausable=np.array([s.pausable for s in cs], dtype=bool),
        doubt=np.array([_doubt(s) for s in cs], dtype=int),
        off=np.array([s.off_until_departure for s in cs], dtype=bool),
        v2g=v2g,
        dis_kw=col([s.max_discharge_kw if s.v2g else 0.0 for s in cs]),
        dis_kwh=budget,
        usage=np.asarray(usage, dtype=float).reshape(len(cs), n_res),
        credit=np.asarray(credit, dtype=float).reshape(len(cs), n_res),
        cap=cap, export_room=export_room,
        fixed_kw=fixed_kw, base_kw=base, limit_kw=limit,
    )


def deficit_slots(prep: Prepared) -> np.ndarray:
    """Slots where base load and fixed sessions alone break a limit: only discharge helps."""
    return np.any(prep.cap < -1e-9, axis=0)
