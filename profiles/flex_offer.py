"""Flexibility for a grid operator's FlexRequest (UFTP), from the fleet as it is: pure, no I/O.

Three questions, each answered per ISP (imbalance settlement period, usually 15 minutes):

- **What would we draw?** (:func:`fleet_flexibility`) The baseline: each session keeps drawing what it
  draws now until its energy need is met or it departs, plus the group's non-EV load.
- **How low can we go without breaking a promise?** The least load that still lets every car reach
  its *guaranteed* energy by its departure, charging at full power outside the requested window
  (before it and after it); cars that must not pause keep their minimum current; V2G cars with
  room to spare (energy they can take back after the window) may export.
- **What do we offer?** (:func:`offer_isps`) For each ISP where the DSO requests *less* consumption:
  what it asks for at least (MaxPower), if we have it; less (partial) if that is all we have;
  nothing below ``min_offer_w``. We never offer more than it asks for at most (MinPower): drivers
  are curtailed no more than the grid needs. Upward flexibility (more consumption) is not offered:
  a limit caps import, it cannot make cars charge.

An order becomes a limit per ISP (:func:`order_limits_kw`): baseline plus the ordered change; the
planner keeps its usual safety margin below it. Delivery is measured from the meters'
energy registers (:func:`average_kw`, :func:`delivered_w`): delivered flexibility = measured -
baseline (UFTP's sign: negative = less consumption).

Power in W and relative to the baseline in the UFTP messages; kW inside the planner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from profiles.model import SessionNeed

MIN_OFFER_W = 1000  # below this an ISP is left out of the offer (meter noise is larger)


@dataclass(frozen=True)
class Isp:
    """One ISP: its number in the day and where it lies, in seconds from now (may have begun)."""

    number: int
    start_s: float
    end_s: float

    @property
    def hours(self) -> float:
        return (self.end_s - self.start_s) / 3600.0


@dataclass(frozen=True)
class DrawingSession:
    """A session as the offer sees it: its needs and what it draws now (kW, None = unknown)."""

    need: SessionNeed
    draw_kw: float | None
    voltage_v: float = 230.0

    @property
    def max_kw(self) -> float:
        return self.need.max_current_a * self.need.phases * self.voltage_v / 1000.0

    @property
    def min_on_kw(self) -> float:
        return self.need.min_current_a * self.need.phases * self.voltage_v / 1000.0


@dataclass(frozen=True)
class IspFlex:
    """Per ISP, for the whole group (kW, average over the ISP)."""

    number: int
    baseline_kw: float  # EV baseline plus non-EV load
    floor_kw: float  # the least load that keeps every guarantee (negative with V2G export)

    @property
    def down_kw(self) -> float:
        return max(0.0, self.baseline_kw - self.floor_kw)


def _overlap_h(start_s: float, end_s: float, until_s: float) -> float:
    return max(0.0, min(end_s, until_s) - max(0.0, start_s)) / 3600.0


def _session_flex(s: DrawingSession, isps: Sequence[Isp]) -> list[tuple[float, float]]:
    """(baseline kW, floor kW) of one session per ISP."""
    need = s.need
    departure = need.departure_s
    if need.fixed_kw is not None:  # uncontrollable: it draws what it draws, whatever we ask
        fixed = [need.fixed_kw * _overlap_h(i.start_s, i.end_s, departure) / i.hours for i in isps]
        return [(kw, kw) for kw in fixed]
    draw = s.max_kw if s.draw_kw is None else max(0.0, min(s.draw_kw, s.max_kw))
    window_start = min(i.start_s for i in isps)
    window_end = max(i.end_s for i in isps)
    present = [_overlap_h(i.start_s, i.end_s, departure) for i in isps]
    present_h = sum(present)
    # Energy the guarantee still needs inside the window: what full power outside it cannot bring.
    outside_h = _overlap_h(0.0, window_start, departure) + _overlap_h(window_end, departure, departure)
    inside_kwh = max(0.0, need.guaranteed_kwh - s.max_kw * outside_h)
    # V2G: export what can be taken back after the window (and what the battery allows).
    export_kwh = 0.0
    if need.v2g and inside_kwh == 0.0 and present_h > 0:
        after_h = _overlap_h(window_end, departure, departure)
        room = s.max_kw * after_h - need.guaranteed_kwh
        export_kwh = max(0.0, min(room, need.dischargeable_kwh - need.discharged_kwh,
                                  need.max_discharge_kw * present_h))
    out = []
    for isp, hours in zip(isps, present):
        drawn_before = draw * _overlap_h(0.0, isp.start_s, departure)
        baseline_kwh = min(draw * hours, max(0.0, need.energy_needed_kwh - drawn_before))
        share = hours / present_h if present_h > 0 else 0.0
        floor_kwh = min(inside_kwh * share, s.max_kw * hours)
        if not need.can_pause and hours > 0:
            floor_kwh = max(floor_kwh, min(s.min_on_kw, draw) * hours)
        floor_kwh -= export_kwh * share
        out.append((baseline_kwh / isp.hours, min(floor_kwh, baseline_kwh) / isp.hours))
    return out


def fleet_flexibility(sessions: Sequence[DrawingSession], isps: Sequence[Isp], base_load_kw: Sequence[float],
                      headroom: Sequence[tuple[float, float, float]] | None = None) -> list[IspFlex]:
    """Baseline and floor of the group per ISP (``base_load_kw``: the non-EV load per ISP).

    ``headroom``: (start s, end s, kW) slots from now with what the group's limits leave for EV
    charging (limit minus margin minus non-EV load). Outside the window the fleet cannot take more
    than that, so the guarantees that then no longer fit outside must be served inside the window:
    the floor rises (spread over the ISPs as the cars are present). Without it, outside the window
    every car is assumed to charge at full power."""
    if len(base_load_kw) != len(isps):
        raise ValueError("one base load per ISP")
    if any(i.end_s <= i.start_s for i in isps):
        raise ValueError("every ISP must end after it starts")
    baseline = list(base_load_kw)
    floor = list(base_load_kw)
    if not isps:
        return []
    ceiling = [0.0] * len(isps)  # most the fleet can draw per ISP (full power while present)
    for s in sessions:
        for k, (b, f) in enumerate(_session_flex(s, isps)):
            baseline[k] += b
            floor[k] += f
        for k, isp in enumerate(isps):
            ceiling[k] += s.max_kw * _overlap_h(isp.start_s, isp.end_s, s.need.departure_s) / isp.hours
    if headroom is not None:
        _raise_for_headroom(sessions, isps, headroom, floor, ceiling, base_load_kw)
    return [IspFlex(i.number, round(b, 3), round(f, 3)) for i, b, f in zip(isps, baseline, floor)]


def _raise_for_headroom(sessions: Sequence[DrawingSession], isps: Sequence[Isp],
                        headroom: Sequence[tuple[float, float, float]], floor: list[float], ceiling: list[float],
                        base_load_kw: Sequence[float]) -> None:
    """Raise ``floor`` (in place) so the fleet's guarantees fit: what they need beyond what the
    limits let in outside the window goes into the window, up to what the cars can draw there."""
    window_start = min(i.start_s for i in isps)
    window_end = max(i.end_s for i in isps)
    guaranteed = sum(s.need.guaranteed_kwh for s in sessions if s.need.fixed_kw is None)
    outside = 0.0
    for start, end, kw in headroom:
        for lo, hi in ((start, min(end, window_start)), (max(start, window_end), end)):
            if hi <= lo:
                continue
            # What the cars present can take in [lo, hi), within the limits' room.
            cars = sum(s.max_kw * _overlap_h(lo, hi, s.need.departure_s) for s in sessions if s.need.fixed_kw is None)
            outside += min(max(0.0, kw) * (hi - lo) / 3600.0, cars)
    inside_ev = sum((f - b) * i.hours for f, b, i in zip(floor, base_load_kw, isps))
    missing = guaranteed - outside - max(0.0, inside_ev)
    if missing <= 1e-9:
        return
    room = [(c - (f - b)) * i.hours for c, f, b, i in zip(ceiling, floor, base_load_kw, isps)]
    total_room = sum(max(0.0, r) for r in room)
    if total_room <= 0:
        return
    share = min(1.0, missing / total_room)
    for k, isp in enumerate(isps):
        floor[k] += max(0.0, room[k]) * share / isp.hours


@dataclass(frozen=True)
class Requested:
    """One requested ISP of a FlexRequest: MinPower <= MaxPower in W, relative to the baseline."""

    number: int
    min_w: int
    max_w: int


def offer_isps(requested: Sequence[Requested], flex: Sequence[IspFlex], *,
               min_offer_w: int = MIN_OFFER_W) -> dict[int, int]:
    """ISP number -> offered power change in W (negative: less consumption); ISPs we cannot serve
    are left out. ``flex`` must hold every requested ISP."""
    by_number = {f.number: f for f in flex}
    out: dict[int, int] = {}
    for r in requested:
        if r.max_w >= 0:  # more consumption (or none at all) asked for: not ours to promise
            continue
        have_w = int(by_number[r.number].down_kw * 1000.0)
        want_w = min(-r.max_w, -r.min_w)  # the least the DSO needs
        offered = min(have_w, want_w)
        if offered >= min_offer_w:
            out[r.number] = -offered
    return out


def offer_price(offered_w: dict[int, int], isp_hours: float, eur_per_mwh: float) -> float:
    """Pay-as-bid price of an option: the energy it moves times the configured price."""
    mwh = sum(abs(w) for w in offered_w.values()) * isp_hours / 1e6
    return round(mwh * eur_per_mwh, 4)


def order_limits_kw(baseline_kw: dict[int, float], ordered_w: dict[int, int],
                    capacity_kw: float) -> dict[int, float]:
    """The limit per ordered ISP: baseline plus the ordered change, within [0, capacity]."""
    return {n: round(max(0.0, min(capacity_kw, baseline_kw[n] + w / 1000.0)), 3) for n, w in ordered_w.items()}


def average_kw(register: Sequence[tuple[float, float]], start_s: float, end_s: float) -> float | None:
    """Average power over [start, end) from an energy register's readings (time s, Wh), sorted by
    time: interpolated linearly between readings and held flat beyond the first and last (no
    readings = no energy: a session that began or ended inside the interval). None without readings."""
    if end_s <= start_s:
        raise ValueError("the interval must end after it starts")
    if not register:
        return None

    def at(t: float) -> float:
        if t <= register[0][0]:
            return register[0][1]
        for (t0, e0), (t1, e1) in zip(register, register[1:]):
            if t0 <= t <= t1:
                return e0 if t1 == t0 else e0 + (e1 - e0) * (t - t0) / (t1 - t0)
        return register[-1][1]

    return (at(end_s) - at(start_s)) / 1000.0 / ((end_s - start_s) / 3600.0)


def delivered_w(baseline_kw: float, measured_kw: float) -> int:
    """Delivered flexibility in UFTP's sign: measured minus baseline, W (negative = less drawn)."""
    return round((measured_kw - baseline_kw) * 1000.0)


def settles(ours_w: int, theirs_w: int, ordered_w: int, tolerance_w: int, tolerance_share: float) -> bool:
    """Whether the DSO's delivered figure agrees with ours (within an absolute or relative band)."""
    return abs(ours_w - theirs_w) <= max(tolerance_w, tolerance_share * abs(ordered_w))
