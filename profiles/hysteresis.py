"""Hysteresis: when a new plan is close enough to what a station already has that it need not be sent.

A busy grid must not flood chargers with SetChargingProfile for plans that drift by seconds or
tenths of an amp; but keeping an installed schedule must never break a limit. :class:`Hysteresis`
compares one session's installed and planned schedules; :func:`keep_within_budget` decides, for a
whole capacity group, which sessions may keep theirs so that in every slot their excess fits the
group's headroom. Pure: the caller passes the clock.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TypeVar

from profiles.units import VOLTAGE_V

T = TypeVar("T")


@dataclass(frozen=True)
class Setpoints:
    """One session's plan: per-phase amps per slot from ``start`` (negative = discharge)."""

    station_id: str
    evse_id: int
    transaction_id: str
    start: datetime
    slot_s: float
    current_a: tuple[float, ...]
    phases: int

    def value_at(self, at: datetime) -> float | None:
        """Amps planned at ``at``; None outside the plan."""
        offset = (at - self.start).total_seconds()
        if offset < 0:
            return None
        index = int(offset // self.slot_s)
        return self.current_a[index] if index < len(self.current_a) else None

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.slot_s * len(self.current_a))

    def breakpoints(self) -> list[datetime]:
        return [self.start + timedelta(seconds=i * self.slot_s) for i in range(len(self.current_a))]


@dataclass
class Hysteresis:
    """When a new plan is close enough to what a station already has."""

    current_a: float = 1.0  # an increase smaller than this is not worth a message
    refresh_s: float = 1800.0  # renew the installed schedule when it covers less than this ahead (see _runs_out)
    min_interval_s: float = 0.0  # a safe (non-decreasing) change waits this long after the last push
    near_s: float | None = None  # compared exactly this far ahead; beyond, per new slot (None: whole horizon)
    #: A difference further ahead than this is no reason to send now (None: the whole horizon counts).
    defer_s: float | None = None

    def unchanged(self, old: Setpoints | None, new: Setpoints, now: datetime,
                  pushed_at: datetime | None = None) -> float | None:
        """None if ``new`` must be sent; else the kW by which keeping ``old`` exceeds ``new`` now
        (negative: keeping it uses less than planned).

        Keeping is allowed when the installed schedule differs from the new plan by less than
        ``current_a`` everywhere in the horizon, with no pause, resume or discharge change in it
        (a plan drifting by seconds or tenths of an amp must not re-send every profile). Whether
        the excess is affordable is decided for the whole group by :func:`keep_within_budget`. Within
        ``min_interval_s`` of the last push, increases of any size wait.

        Two plans made at different moments have their slot boundaries at different instants, so
        the installed schedule steps a few seconds (or minutes) before the new one. Up to
        ``near_s`` ahead every instant is compared, so a step that is about to happen is exact;
        beyond it each new slot is compared with the installed value at the slot's middle (the
        installed slot covering most of it). The controller re-plans more often than ``near_s``,
        so every installed step is compared exactly before it takes effect.

        A difference that starts more than ``defer_s`` ahead is not sent yet: successive plans
        reshuffle far slots (which car pauses when, by an amp or two) far more often than the
        reshuffle survives until it takes effect, and the next plans send it once it comes within
        ``defer_s`` if it is still there. What the deferred slots would draw too much is still
        budgeted per slot by :func:`keep_within_budget`, so deferring never breaks a limit.
        """
        if old is None or old.transaction_id != new.transaction_id or old.phases != new.phases:
            return None
        base = new.start
        t_now = (now - base).total_seconds()
        o = (old.start - base).total_seconds()
        slot, o_slot = new.slot_s, old.slot_s
        new_vals, old_vals = new.current_a, old.current_a
        new_end, old_end = slot * len(new_vals), o + o_slot * len(old_vals)
        if self._runs_out(old_end - t_now, new_end - t_now, slot):
            return None

        def new_at(t: float) -> float | None:
            i = int((t + 1e-6) // slot)
            return new_vals[i] if 0 <= i < len(new_vals) and t >= -1e-6 else None

        def old_at(t: float) -> float | None:
            j = int((t - o + 1e-6) // o_slot)
            return old_vals[j] if 0 <= j < len(old_vals) and t - o >= -1e-6 else None

        a_new, a_old = new_at(t_now), old_at(t_now)
        if a_new is None or a_old is None:
            return None
        if o == 0 and o_slot == slot and old_vals == new_vals:
            return 0.0  # the very same schedule
        recent = pushed_at is not None and (now - pushed_at).total_seconds() < self.min_interval_s
        near_end = min(new_end, t_now + self.near_s) if self.near_s is not None else new_end
        judged_end = min(new_end, t_now + self.defer_s) if self.defer_s is not None else new_end

        def points() -> Iterator[tuple[float, float]]:
            """(instant for new, instant for old), now first: a cut is told apart at the first one."""
            yield t_now, t_now
            for i in range(int(t_now // slot) + 1, len(new_vals)):
                t = i * slot
                yield (t, t) if t < near_end else (t, t + slot / 2)
            for j in range(max(0, int((t_now - o) // o_slot) + 1), len(old_vals)):
                t = o + j * o_slot
                if t >= near_end:
                    break
                yield t, t

        for t_n, t_o in points():
            if t_n >= judged_end:
                continue
            v_new, v_old = new_at(t_n), old_at(t_o)
            if v_new is None:
                continue
            if v_old is None:
                if t_o >= old_end - 1e-6:
                    continue  # past the installed schedule's end: whether to renew it is _runs_out's call
                return None
            if recent and v_old <= v_new:
                continue
            if (v_old == 0) != (v_new == 0) or (v_old < 0) != (v_new < 0) or (
                    v_new != v_old and abs(v_new - v_old) >= self.current_a):
                return None
        return (a_old - a_new) * new.phases * VOLTAGE_V / 1000.0

    def _runs_out(self, covers_old: float, covers_new: float, slot_s: float) -> bool:
        """Must the installed schedule be renewed because it ends too soon?

        Only when it covers less than ``refresh_s`` ahead (and less than the new plan does), and
        either ends within ``near_s`` or the new plan reaches at least a slot further. A schedule
        cut short (a station that takes few periods) ends at a step whose instant drifts with the
        plan's start: re-sending it whenever the new one reaches a few seconds further would push
        the very same schedule after every plan.
        """
        if covers_old >= min(covers_new, self.refresh_s) - 1e-6:
            return False
        soon = self.near_s if self.near_s is not None else 2 * 60.0
        return covers_old < soon or covers_new - covers_old >= slot_s

    def budgeted(self, pairs: Sequence[tuple[Setpoints, Setpoints]], now: datetime,
                 budget: float | Sequence[float], *,
                 exact: bool = True) -> tuple[list[tuple[float, ...]], float | Sequence[float]]:
        """What :func:`keep_within_budget` judges a group's (installed, new) pairs by: each pair's
        excess and the budget, per piece of time (:func:`excess_by_piece`, exact) or, for a group
        too large for that or when not ``exact`` (a cut, where every millisecond counts and a
        stricter budget only sends more), per slot (:meth:`excess_by_slot`)."""
        pieces = excess_by_piece(pairs, now, budget, self.near_s) if exact else None
        if pieces is not None:
            return pieces
        return [self.excess_by_slot(old, new, now) for old, new in pairs], budget

    def excess_by_slot(self, old: Setpoints, new: Setpoints, now: datetime) -> tuple[float, ...]:
        """Per slot of ``new`` (index from ``new.start``): the kW by which keeping ``old`` would
        draw more than ``new`` plans (negative: less); 0 for slots already over and where ``old``
        has ended. Up to ``near_s`` ahead the highest installed value in the slot counts; beyond,
        the installed value at the slot's middle (drifted boundaries, as in :meth:`unchanged`).

        :meth:`unchanged` only bounds how far the two differ; whether the difference fits under
        a limit is a per-slot question, because a stricter limit may begin in a later slot.
        """
        kw_per_a = new.phases * VOLTAGE_V / 1000.0
        t_now = (now - new.start).total_seconds()
        o = (old.start - new.start).total_seconds()
        o_slot, old_vals, new_vals, slot = old.slot_s, old.current_a, new.current_a, new.slot_s
        current = max(0, int((t_now + 1e-6) // slot))
        if current >= len(new_vals):
            return (0.0,) * len(new_vals)

        def peak(lo: float, hi: float) -> float | None:
            """Highest installed value over [lo, hi) (None where nothing is installed)."""
            j = max(0, int((lo - o + 1e-6) // o_slot))
            top = None
            while j < len(old_vals) and o + j * o_slot < hi - 1e-6:
                if o + (j + 1) * o_slot > lo + 1e-6:
                    top = old_vals[j] if top is None else max(top, old_vals[j])
                j += 1
            return top

        near_end = t_now + self.near_s if self.near_s is not None else math.inf
        out = [0.0] * current
        for i in range(current, len(new_vals)):
            lo, hi = max(t_now, i * slot), (i + 1) * slot
            top = peak(lo, min(hi, near_end)) if lo < near_end else None
            if hi > near_end:
                # Beyond ``near_s``, as in :meth:`unchanged`: the installed slot covering most of
                # this one; a step a few seconds early is compared exactly once it comes near.
                middle = i * slot + slot / 2
                at = middle if middle >= near_end else (max(lo, near_end) + hi) / 2
                j = int((at - o) // o_slot)
                if 0 <= j < len(old_vals) and at >= o:
                    top = old_vals[j] if top is None else max(top, old_vals[j])
                # A step drifted further than ``near_s`` into the slot is no rounding of boundaries:
                # a schedule kept for long (a deferred difference) runs it for real.
                drift = self.near_s if self.near_s is not None else 0.0
                inner = peak(max(lo, near_end) + drift, hi - drift) if hi - drift > max(lo, near_end) + drift else None
                if inner is not None:
                    top = inner if top is None else max(top, inner)
            out.append(0.0 if top is None else (top - new_vals[i]) * kw_per_a)
        return tuple(out)


def held_peak_kw(sp: Setpoints, now: datetime, cover_s: float) -> float | None:
    """The most ``sp`` lets its session draw from ``now`` on (kW; a discharge counts as 0: a car may
    stop discharging at any moment), or None when it does not reach ``cover_s`` ahead.

    Used to plan newcomers beside a wave in flight (csms/grid/control.py): a session that holds a
    schedule keeps it and is budgeted at this peak, so whatever the newcomers get fits beside it in
    every slot until the next full plan, which comes long before ``cover_s`` has passed. A schedule
    about to run out is not held: the station would fall back to a default the plan does not know.
    """
    if cover_s < 0 or sp.slot_s <= 0:
        raise ValueError(f"cover_s must be >= 0 and slot_s > 0, got {cover_s} and {sp.slot_s}")
    first = (now - sp.start).total_seconds() // sp.slot_s
    if first < 0 or now + timedelta(seconds=cover_s) > sp.end:
        return None
    peak = max(sp.current_a[int(first):])
    return max(0.0, peak) * sp.phases * VOLTAGE_V / 1000.0


def paced(h: Hysteresis, replan_s: float, slot_s: float) -> Hysteresis:
    """``h`` with a near window of at least two re-plan spacings (``replan_s``: the longest of late,
    on the clock the schedules run on), at most a slot, and ``defer_s`` at least as long.

    Beyond the near window an installed step drifted from the new plan's slot boundary counts as on
    it, because a plan is made again before the step comes into force and compares it exactly then.
    The window derived from ``replan_interval_s`` (a wall-clock timer) keeps that promise only while
    plans come that often on the schedules' clock. A slow plan, or a compressed simulated clock (the
    demo's busy evening: 232 simulated seconds between plans against a 60 s window), lets such a
    step take effect uncompared, and makes every step of a schedule kept from the previous plan,
    drifted by that plan's spacing, count as a difference in full: sent for the budget.
    """
    if h.near_s is None:
        return h
    near = min(max(h.near_s, 2 * replan_s), max(h.near_s, slot_s))
    if near == h.near_s:
        return h
    return replace(h, near_s=near, defer_s=None if h.defer_s is None else max(h.defer_s, near))


@dataclass
class PlanPace:
    """When the last few plans were made (the clock the schedules run on): the longest spacing
    between them is how long a step may wait for its next exact comparison (:func:`paced`)."""

    keep: int = 8
    made: deque[datetime] = field(default_factory=deque)

    def plan_at(self, at: datetime) -> float:
        """Record a plan made at ``at``; the longest spacing among the last ``keep`` plans (0 before
        the second)."""
        self.made.append(at)
        while len(self.made) > self.keep:
            self.made.popleft()
        made = list(self.made)
        return max(((b - a).total_seconds() for a, b in zip(made, made[1:])), default=0.0)


def same_limits(old: Setpoints, new: Setpoints, now: datetime, *, step_s: float = 30.0,
                tolerance_a: float = 0.05) -> bool:
    """Does ``new`` prescribe what ``old`` does, at every ``step_s`` from ``now`` to the end of both
    (no value counts as a value: a schedule that ends is not one that holds)? Sending ``new`` over
    ``old`` would then change nothing on the station: an identical push."""
    span = max((old.end - now).total_seconds(), (new.end - now).total_seconds(), 0.0)
    for k in range(int(span // step_s) + 1):
        at = now + timedelta(seconds=k * step_s)
        a, b = old.value_at(at), new.value_at(at)
        if (a is None) != (b is None) or (a is not None and b is not None and abs(a - b) > tolerance_a):
            return False
    return True


#: Above this many (session x piece of time) cells a group is budgeted per plan slot instead
#: (:meth:`Hysteresis.excess_by_slot`): exact pieces cost time in proportion to both.
MAX_EXACT_CELLS = 100_000


def excess_by_piece(pairs: Sequence[tuple[Setpoints, Setpoints]], now: datetime, budget: float | Sequence[float],
                    near_s: float | None = None,
                    max_cells: int = MAX_EXACT_CELLS) -> tuple[list[tuple[float, ...]], list[float]] | None:
    """Each (installed, new) pair's kW excess (keeping the installed schedule minus the new plan) on
    every piece of time from ``now`` on which all the schedules hold one value, and each piece's
    budget (``budget``: per slot of the new plans from their common start, or one figure; a piece
    spanning slots gets the smallest). None when that would be more than ``max_cells`` cells.

    Why pieces, not plan slots: each plan starts now, so an installed schedule's steps fall inside
    the new plan's slots. Taken per slot, a kept schedule counts at its highest value in the slot,
    so two sessions whose installed plan moved current from one to the other at a step (a rotation
    the new plan keeps, a few minutes shifted) count both at their high side, and one of them is
    sent although together they draw exactly what the limit allows at every instant. Per piece each
    instant is judged as it is: what the kept schedules draw beyond the new plan, together, at that
    instant. Up to ``near_s`` ahead that is exact. Beyond, as in :meth:`Hysteresis.unchanged` and
    :meth:`Hysteresis.excess_by_slot`, an installed step less than ``near_s`` from the new plan's
    slot boundary counts as if on it (it is judged exactly once it comes near; a plan made a second
    later would otherwise re-send every schedule that steps at all); a step drifted further runs
    for real and counts in full.
    """
    if not pairs:
        return [], []
    ref = min(new.start for _, new in pairs)
    slot = pairs[0][1].slot_s
    t_now = (now - ref).total_seconds()
    end = max((new.end - ref).total_seconds() for _, new in pairs)
    if end <= t_now:
        return [(0.0,) for _ in pairs], [0.0]
    near_end = t_now + near_s if near_s is not None else math.inf
    cuts = {round(t_now, 3), round(end, 3)} | ({round(near_end, 3)} if t_now < near_end < end else set())
    for start, slot_s, count in {(s.start, s.slot_s, len(s.current_a)) for pair in pairs for s in pair}:
        first = (start - ref).total_seconds()
        for k in range(count + 1):
            t = first + k * slot_s
            if t_now < t < end:
                cuts.add(round(t, 3))
        if len(cuts) * len(pairs) > max_cells:
            return None
    edges = sorted(cuts)
    pieces = list(zip(edges, edges[1:]))
    excess = [tuple(_piece_excess(old, new, ref, pieces, near_end, near_s or 0.0)) for old, new in pairs]
    return excess, [_piece_budget(budget, lo, hi, slot) for lo, hi in pieces]


def _piece_excess(old: Setpoints, new: Setpoints, ref: datetime, pieces: list[tuple[float, float]],
                  near_end: float, drift_s: float) -> Iterator[float]:
    """kW by which ``old`` draws more than ``new`` on each piece (0 where either has no value: an
    installed schedule that ended is renewed by :meth:`Hysteresis._runs_out`, not budgeted).
    Beyond ``near_end`` the installed value is read at least ``drift_s`` inside the new slot (at
    its middle if it is shorter): a step that close to the slot's boundary counts as on it."""
    kw_per_a = new.phases * VOLTAGE_V / 1000.0
    o, n = (old.start - ref).total_seconds(), (new.start - ref).total_seconds()
    for lo, hi in pieces:
        middle = (lo + hi) / 2  # both schedules hold one value over the whole piece
        i = math.floor((middle - n) / new.slot_s)
        at = middle
        if lo >= near_end - 1e-6:
            a = n + i * new.slot_s
            b = a + new.slot_s
            at = min(max(middle, a + drift_s), b - drift_s) if b - a > 2 * drift_s else (a + b) / 2
        j = math.floor((at - o) / old.slot_s)
        if 0 <= i < len(new.current_a) and 0 <= j < len(old.current_a):
            yield (old.current_a[j] - new.current_a[i]) * kw_per_a
        else:
            yield 0.0


def _piece_budget(budget: float | Sequence[float], lo: float, hi: float, slot_s: float) -> float:
    """The headroom over [lo, hi) seconds from the plans' start: the smallest of the slots it spans."""
    if isinstance(budget, (int, float)):
        return float(budget)
    first, last = math.floor(lo / slot_s + 1e-9), math.ceil(hi / slot_s - 1e-9)
    return min(float(budget[i]) if 0 <= i < len(budget) else 0.0 for i in range(first, max(last, first + 1)))


def keep_within_budget(items: list[tuple[tuple[float, ...], T]],
                       budget: float | Sequence[float]) -> list[tuple[tuple[float, ...], T]]:
    """The items that may keep their installed schedule: in every slot their excesses (kW, from
    :meth:`Hysteresis.excess_by_slot`) together stay within ``budget`` (the group's headroom per
    slot, or one figure for all). The most-over slot is settled first by dropping (= sending) its
    largest contributors; bounded by the number of items."""
    slots = max((len(excess) for excess, _ in items), default=0)
    if isinstance(budget, (int, float)):
        limit = [float(budget)] * slots
    else:
        limit = [float(budget[i]) if i < len(budget) else 0.0 for i in range(slots)]
    keep = list(items)
    totals = [sum(column) for column in itertools.zip_longest(*(excess for excess, _ in keep), fillvalue=0.0)]
    while keep and slots:
        over, worst = max((totals[i] - limit[i], i) for i in range(slots))
        if over <= 1e-9:
            break
        keep.sort(key=lambda item: item[0][worst] if worst < len(item[0]) else 0.0)  # largest last
        while keep and totals[worst] - limit[worst] > 1e-9:
            excess, _ = keep.pop()
            for i, kw in enumerate(excess):
                totals[i] -= kw
    return keep
