"""From the grid's state to plans: one planning problem per capacity group, solved in profiles/.

Reads the limit book, the sessions and the topology into a :class:`profiles.planner.PlanInput`
per group, solves it (the immediate cut or the refined plan), fits nested groups under their
ancestors (profiles/parents.py) and keeps paused cars paused (profiles/pauses.py). Every
decision is made in profiles/; this module only gathers the inputs and hands out the results.
A refined plan of many sessions is solved, parents included, in a worker thread, so the event
loop keeps serving stations (and can start a cut) meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from csms.grid.config import GridConfig
from csms.grid.journal import Journal
from csms.grid.model.limits import LimitBook
from csms.grid.model.sessions import Session, SessionBook, parse_session_id, session_need
from csms.grid.model.topology import Topology
from profiles.heuristic import CUT_SLOTS
from profiles.hysteresis import Setpoints
from profiles.margin import margin_kw, with_margin
from profiles.parents import PlannedGroup, fit_parents
from profiles.pauses import keep_pauses
from profiles.planner import Plan, PlanInput, immediate_cut, plan

THREAD_MIN_SESSIONS = 1000  # from this many sessions on, the refined plan is solved in a worker thread
BASE_LOAD_SAMPLE_S = 60.0

Solver = Callable[[PlanInput], Plan]
#: One group's inputs: id, sessions, problem, what limits each slot, each slot's limit before the margin.
Inputs = tuple[str, list[Session], PlanInput, list[str], list[float]]


@dataclass
class GroupPlan:
    """One capacity group's plan: its sessions, the problem and the answer, and what limits it per slot."""

    tid: str
    sessions: list[Session]
    inp: PlanInput
    plan: Plan
    sources: list[str]
    limit_kw: float = 0.0  # the limit in the first slot, as the grid operator set it (inp has it minus the margin)
    margin_kw: float = 0.0  # the safety margin kept below it
    #: Sessions that keep the schedule they hold (budgeted at its peak, not planned): a plan for newcomers.
    held: frozenset[str] = frozenset()


class GroupPlanner:
    def __init__(self, grid: GridConfig, limits: LimitBook, book: SessionBook, topology: Topology,
                 installed: Mapping[tuple[str, int], Setpoints], journal: Journal,
                 judge: Callable[[list[Session]], None] | None = None) -> None:
        self.grid = grid
        self.judge = judge  # sets every session's doubt about resuming after a pause (csms/grid/effects/learning.py)
        self.limits = limits
        self.book = book
        self.topology = topology
        self.installed = installed  # what each session's station runs (the pusher's view)
        self.journal = journal

    # Inputs (on the event loop: the sessions must not change under a thread) -----------------
    def _plan_input(self, tid: str, sessions: list[Session], start: datetime, slots: int,
                    hold: Mapping[str, float] | None = None) -> tuple[PlanInput, list[str], list[float]]:
        """The group's problem over ``slots``, what limits each slot, and each slot's limit before the
        margin; ``hold``: sessions (by id) budgeted at these kW instead of planned."""
        p = self.grid.planning
        sched = self.limits.schedule(tid, start, slots, p.slot_s)
        raw = [kw for kw, _ in sched]
        limits = with_margin(raw, p.margin_kw, p.margin_percent)
        base = [self._slot_base_kw(tid, start + timedelta(seconds=i * p.slot_s), p.slot_s) for i in range(len(sched))]
        needs = []
        hold = hold or {}
        for s in sessions:
            st = self.book.station(s.station_id)
            if not p.allow_pause:
                s.can_pause = False
            # A station still being set up gets no profile yet (csms/grid/effects/waves.py): it runs what
            # it holds, so it is budgeted at what it draws, like one that is away, not at a plan it
            # never receives (after a restart, reconnecting stations would otherwise add both).
            steerable = st.connected and (st.ready or s.power_kw is None)
            needs.append(session_need(s, st.caps, start, self.book.defaults,
                                      self.topology.wiring(s.station_id, s.evse_id), connected=steerable,
                                      held_kw=hold.get(s.session_id) if steerable else None))
        group = self.grid.transformers[tid]
        inp = PlanInput(sessions=needs, limit_kw=limits, base_load_kw=base, slot_s=float(p.slot_s),
                        phase_limit_a=group.phase_limit_a)
        return inp, [source for _, source in sched], raw

    def _slot_base_kw(self, tid: str, start: datetime, slot_s: float) -> float:
        """The highest non-EV load within the slot (sampled each minute): a step in the base
        load profile inside a slot must not push the transformer over until the next plan."""
        steps = max(1, int(slot_s // BASE_LOAD_SAMPLE_S))
        return max(self.limits.base_load_kw(tid, start + timedelta(seconds=k * slot_s / steps)) for k in range(steps))

    def _wanted(self, tids: list[str]) -> list[str]:
        wanted = set(tids)
        for tid in tids:  # a parent's limit constrains every nested group
            wanted.update(self.topology.descendants(tid))
        return [tid for tid in self.grid.transformers if tid in wanted]

    def _inputs(self, now: datetime, tids: list[str], slots: int | None = None,
                hold: Mapping[str, float] | None = None) -> list[Inputs]:
        start = now.replace(microsecond=0)
        if self.judge is not None:
            self.judge(list(self.book.sessions.values()))
        by_group = self.topology.group_members(self.book.sessions, self.grid.transformers, ordered=True)
        out = []
        for tid in self._wanted(tids):
            sessions = by_group.get(tid, [])
            inp, sources, raw = self._plan_input(tid, sessions, start, slots or self.grid.planning.horizon_slots,
                                                 hold)
            out.append((tid, sessions, inp, sources, raw))
        return out

    # Solving ------------------------------------------------------------------------------------
    def _units(self, inputs: list[Inputs], fitted: dict[str, PlannedGroup],
               hold: Mapping[str, float] | None = None) -> list[GroupPlan]:
        p = self.grid.planning
        return [GroupPlan(tid, sessions, fitted[tid].inp, fitted[tid].plan, sources, limits[0],
                          margin_kw(limits[0], p.margin_kw, p.margin_percent),
                          frozenset(n.session_id for n in inp.sessions if n.session_id in (hold or {})))
                for tid, sessions, inp, sources, limits in inputs]

    def cut(self, now: datetime, tids: list[str]) -> list[GroupPlan]:
        """The immediate safe answer (proportional, no look-ahead, the next ``CUT_SLOTS`` slots only):
        cheap, so right here on the loop."""
        inputs = self._inputs(now, tids, min(CUT_SLOTS, self.grid.planning.horizon_slots))
        return self._units(inputs, self._fit(inputs, immediate_cut))

    async def refine(self, now: datetime, tids: list[str], hold: Mapping[str, float] | None = None) -> list[GroupPlan]:
        """The refined plan; with many sessions solved in a worker thread (parents included).
        ``hold``: sessions (by id) that keep what they hold, budgeted at these kW (a plan for the
        newcomers beside a wave in flight); the others are planned into what is left."""
        inputs = self._inputs(now, tids, hold=hold)
        if len(self.book) < THREAD_MIN_SESSIONS:
            fitted = self._fit(inputs, plan)
        else:
            fitted = await asyncio.to_thread(self._fit, inputs, plan)
        units = self._units(inputs, fitted, hold)
        for unit in units:
            self._keep_pauses(unit, now)
        return units

    def _fit(self, inputs: list[Inputs], solve: Solver) -> dict[str, PlannedGroup]:
        first = {tid: PlannedGroup(inp, solve(inp)) for tid, _, inp, _, _ in inputs}
        descendants = {tid: self.topology.descendants(tid) for tid in self.grid.transformers}
        return fit_parents(first, list(self.grid.transformers), descendants, solve)

    def _keep_pauses(self, unit: GroupPlan, now: datetime) -> None:
        """Sticky pauses (profiles/pauses.py), judged against what each station runs now."""
        in_force: dict[str, float | None] = {}
        for need in unit.inp.sessions:
            installed = self.installed.get(parse_session_id(need.session_id))
            in_force[need.session_id] = None if installed is None else installed.value_at(now)
        unit.plan, kept = keep_pauses(unit.inp, unit.plan, in_force)
        for paused, instead_of in kept:
            self.journal.record("pause_kept", session_id=paused, instead_of=instead_of)
