"""The planning problem and its answer: what every planner reads and returns.

Units: currents are per phase in A (negative = discharge), power in kW, energy in kWh as
delivered into the battery (grid energy x efficiency) unless a field says "at the meter".
Energies a session still needs are *net*: what must still go into the battery, counting
discharge as negative, since the need was stated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PHASE_NAMES: tuple[str, str, str] = ("L1", "L2", "L3")
#: Energy below this (kWh) counts as "nothing left to deliver".
ENERGY_EPS_KWH = 1e-6
#: kW / A over the limit tolerated as float noise when reporting violations.
VIOLATION_EPS = 1e-6

#: `SessionNeed.no_resume` values: does the car stay suspended after a 0 A pause?
RESUMES = "no"  # no sign of trouble
SUSPECTED = "suspected"  # the vehicle or the station model failed to resume in other sessions
KNOWN = "known"  # this vehicle failed to resume before (or in this session)
NO_RESUME_VALUES = (RESUMES, SUSPECTED, KNOWN)


def _finite(name: str, value: object, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SessionNeed:
    """What one charging session needs and what its car can do.

    - ``energy_needed_kwh`` / ``guaranteed_kwh``: net energy (into the battery) still wanted /
      still guaranteed, i.e. the stated amount minus (import - export) since it was stated.
      V2G cars have a guarantee like every other car: the central system fills it from the
      needs, the operator API or its config default (see ``profiles.netenergy``).
    - ``no_resume``: "no", "suspected" or "known" (see the module constants). ``can_pause=False``
      means the same as "known" (kept for callers that only know "never pause this one").
      Either way the planner never plans a pause for the car unless the limit leaves no room
      for its minimum current; then it plans it off until departure and says so.
    - ``off_until_departure``: a car that does not resume and is paused now (an earlier plan
      took it off until departure, or it stayed suspended when offered current again): it will
      take no current before it leaves, so the planner gives it 0 A (and discharges nothing
      from it) and keeps no room for its minimum; it is reported as off from slot 0. Only for
      a car that does not resume (a car that resumes is simply planned again).
    - ``dischargeable_kwh``: energy above the car's minimum state of charge when it was stated
      (battery side); ``discharged_kwh``: what the car has exported since then (at the meter).
      The plan discharges at most ``dischargeable_kwh - discharged_kwh / efficiency``.
    """

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
    no_resume: str = RESUMES
    discharged_kwh: float = 0.0
    off_until_departure: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.session_id, str) or not self.session_id:
            raise ValueError(f"session_id must be a non-empty string, got {self.session_id!r}")
        sid = self.session_id
        if isinstance(self.phases, bool) or not isinstance(self.phases, int) or not 1 <= self.phases <= 3:
            raise ValueError(f"session {sid}: phases must be 1, 2 or 3, got {self.phases!r}")
        if isinstance(self.phase_wiring, str) or not isinstance(self.phase_wiring, (tuple, list)):
            raise ValueError(  # noqa: TRY004 - callers catch ValueError for every bad input
                f"session {sid}: phase_wiring must be a tuple of phase names, got {self.phase_wiring!r}")
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
        for name in ("energy_needed_kwh", "guaranteed_kwh", "departure_s", "max_discharge_kw", "dischargeable_kwh",
                     "discharged_kwh"):
            _finite(f"session {sid}: {name}", getattr(self, name), minimum=0.0)
        if self.fixed_kw is not None:
            _finite(f"session {sid}: fixed_kw", self.fixed_kw)
        eff = _finite(f"session {sid}: efficiency", self.efficiency)
        if not 0.0 < eff <= 1.0:
            raise ValueError(f"session {sid}: efficiency must be in (0, 1], got {eff}")
        for name in ("can_pause", "v2g", "off_until_departure"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"session {sid}: {name} must be a bool, got {getattr(self, name)!r}")  # noqa: TRY004
        if self.no_resume not in NO_RESUME_VALUES:
            raise ValueError(f"session {sid}: no_resume must be one of {NO_RESUME_VALUES}, got {self.no_resume!r}")
        if self.off_until_departure and self.pausable:
            raise ValueError(f"session {sid}: off_until_departure is only for a car that does not resume "
                             "(can_pause=False or no_resume 'known' / 'suspected')")

    @property
    def pausable(self) -> bool:
        """May the planner give this car 0 A and expect it to charge again later?"""
        return self.can_pause and self.no_resume == RESUMES

    @property
    def resume_doubt(self) -> str:
        """"known", "suspected" or "no": ``can_pause=False`` counts as known."""
        return KNOWN if not self.can_pause else self.no_resume


@dataclass(frozen=True)
class PlanInput:
    """One planning problem: sessions behind one transformer and its limit per slot.

    All sessions are present from slot 0 to their departure (the caller re-plans on arrivals).
    Slots whose limit is below the base load (or a phase over ``phase_limit_a`` from base load
    alone) can only be met by V2G discharge.
    """

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
                raise ValueError(f"sessions must hold SessionNeed objects, got {type(s).__name__}")  # noqa: TRY004
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
    """One session's schedule and what it comes to.

    ``delivered_kwh`` is net (charged minus discharged, battery side); ``unmet_kwh`` and
    ``guarantee_unmet_kwh`` are what the need and the guarantee still lack at departure (or the
    horizon's end); ``discharged_kwh`` is what the plan takes out of the battery;
    ``off_from_slot`` is set when a car that does not resume is planned off from that slot
    until departure (the limit left no room for its minimum current).
    """

    session_id: str
    current_a: tuple[float, ...]
    power_kw: tuple[float, ...]
    delivered_kwh: float
    unmet_kwh: float
    guarantee_unmet_kwh: float
    reason: str | None
    discharged_kwh: float = 0.0
    off_from_slot: int | None = None


@dataclass(frozen=True)
class Plan:
    """The schedule for every session; ``method`` says which planner made it and ``note`` why."""

    sessions: dict[str, SessionPlan]
    total_kw: tuple[float, ...]
    headroom_kw: tuple[float, ...]
    infeasible_slots: tuple[int, ...]
    method: str = "heuristic"
    note: str = ""

    @property
    def delivered_kwh(self) -> float:
        return float(sum(sp.delivered_kwh for sp in self.sessions.values()))

    @property
    def guarantee_unmet_kwh(self) -> float:
        return float(sum(sp.guarantee_unmet_kwh for sp in self.sessions.values()))
