"""A wave: the profiles one cut or plan sends, and what follows from their answers.

:meth:`WaveDispatcher.decide` keeps what the stations already have where hysteresis allows
(profiles/hysteresis.py, budgeted per group and slot against the plan's headroom);
:meth:`WaveDispatcher.run` sends the rest through the pusher and turns each answer into the
session's new setpoint, a verification step, a journal entry, a metric and a bus event, and
then reports each group's new state.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from csms.domain.events import GroupPlanned, ProfilePushed
from csms.grid.config import GridConfig
from csms.grid.effects.pusher import Pusher, PushResult, ShapedProfile, Wave
from csms.grid.effects.verify import Verification
from csms.grid.journal import Journal
from csms.grid.metrics import ControlMetrics
from csms.grid.model.sessions import Session, SessionBook, StationCaps
from csms.grid.planning import GroupPlan
from csms.grid.ports import StatusSink
from csms.grid.views import GroupViews
from csms.interfaces import Bus
from profiles.hysteresis import PlanPace, Setpoints, held_peak_kw, paced
from profiles.units import VOLTAGE_V

log = logging.getLogger("csms.grid")

#: A session keeps its schedule beside newcomers only if the schedule runs at least this much longer
#: (the full plan after the wave in flight comes long before; see :meth:`WaveDispatcher.holding`).
HOLD_COVER_S = 600.0


@dataclass
class Dispatch:
    """What one wave sends and keeps, decided on the event loop before it starts."""

    kind: str  # cut | plan
    units: list[GroupPlan]
    to_send: list[ShapedProfile]
    skipped: list[PushResult]
    sessions: dict[tuple[str, int], Session]
    reasons: list[str] | None = None
    power_before: dict[tuple[str, int], float | None] = field(default_factory=dict)


class WaveDispatcher:
    def __init__(self, grid: GridConfig, book: SessionBook, pusher: Pusher, verification: Verification,
                 views: GroupViews, journal: Journal, bus: Bus, metrics: ControlMetrics,
                 status: StatusSink | None) -> None:
        self.grid = grid
        self.book = book
        self.pusher = pusher
        self.verification = verification
        self.views = views
        self.journal = journal
        self.bus = bus
        self.metrics = metrics
        self.status = status
        self.hysteresis = pusher.hysteresis  # as configured
        self.paced = pusher.hysteresis  # as configured, following the plans' pace (set per plan)
        self.pace = PlanPace()

    def holding(self, now: datetime) -> dict[str, float]:
        """The sessions that hold (or have on the wire) a schedule of their transaction from this
        controller, by id, with the most it lets them draw (kW): while a wave is in flight the next
        plan keeps them at it and plans only the rest, the newcomers, into what is left. Re-planning every session beside a
        wave of thousands shifted nearly every schedule a little, past the hysteresis budget at a
        tight limit: the plan went out to all of them again, a second full wave on top of the first
        (after a failover 30,000 pushes twice, and the planning itself took the event loop's CPU)."""
        held: dict[str, float] = {}
        for session in self.book:
            st = self.book.station(session.station_id)
            if session.fixed_kw is not None or not st.connected or not st.ready or not self.pusher.ours(session.key):
                continue  # a schedule read back (an earlier leader's) may predate the limit: planned again
            sp = self.pusher.expected(session.key, st.clock_offset_s or 0.0)
            if sp is None or sp.transaction_id != session.transaction_id:
                continue
            peak = held_peak_kw(sp, now, HOLD_COVER_S)
            if peak is not None:
                held[session.session_id] = peak
        return held

    def newcomers(self, held: Mapping[str, float]) -> int:
        """How many sessions a plan beside the wave could send to (steerable, not in ``held``): with
        none, that plan would compute every session of the groups to send nothing, taking the CPU the
        wave in flight needs (after a failover about 1.5 s of it per plan, every few seconds)."""
        count = 0
        for session in self.book:
            if session.fixed_kw is None and session.session_id not in held:
                st = self.book.station(session.station_id)
                count += st.connected and st.ready
        return count

    def decide(self, units: list[GroupPlan], now: datetime, kind: str, reasons: list[str] | None = None,
               *, newcomers: bool = False) -> Dispatch:
        """Which profiles go out (hysteresis), and the setpoints of the sessions that keep theirs;
        ``newcomers``: only to sessions without a profile (a plan beside a wave in flight)."""
        p = self.grid.planning
        if kind == "plan":
            self.paced = paced(self.hysteresis, self.pace.plan_at(now), float(p.slot_s))
        start = now.replace(microsecond=0)
        todo: list[tuple[Setpoints, StationCaps, str]] = []
        sessions: dict[tuple[str, int], Session] = {}
        offsets: dict[str, float] = {}
        for unit in units:
            self.views.remember(unit, now)
            by_id = {s.session_id: s for s in unit.sessions}
            for need in unit.inp.sessions:
                session = by_id.get(need.session_id)
                if session is None or self.book.sessions.get(session.key) is not session:
                    continue
                st = self.book.station(session.station_id)
                if need.fixed_kw is not None or not st.connected or not st.ready:
                    continue  # uncontrollable, unreachable, or still being set up: budgeted, not pushed
                sp = unit.plan.sessions[need.session_id]
                # Discharge only for a session planned as V2G (station and car both can): never by accident.
                current_a = sp.current_a if need.v2g else tuple(max(0.0, a) for a in sp.current_a)
                todo.append((Setpoints(session.station_id, session.evse_id, session.transaction_id, start,
                                       float(p.slot_s), current_a, need.phases), st.caps, unit.tid))
                sessions[session.key] = session
                offsets[session.station_id] = st.clock_offset_s or 0.0
        headroom = {u.tid: tuple(max(0.0, kw) for kw in u.plan.headroom_kw) for u in units}  # per slot from start
        identical = self.pusher.identical
        to_send, skipped = self.pusher.due(todo, headroom, offsets=offsets, cut=kind == "cut",
                                           hold_slots=p.horizon_slots, newcomers=newcomers, hysteresis=self.paced)
        if self.pusher.identical > identical:
            self.metrics.pushes.labels("identical").inc(self.pusher.identical - identical)
        if skipped:
            self.metrics.pushes.labels("skipped").inc(len(skipped))
        for r in skipped:
            installed = self.pusher.expected((r.station_id, r.evse_id), offsets.get(r.station_id, 0.0))
            session = sessions.get((r.station_id, r.evse_id))
            if installed is not None and session is not None:
                value = installed.value_at(now)
                if value is not None:
                    if value != session.setpoint_a:
                        session.setpoint_since = now  # the installed schedule stepped
                    session.setpoint_a = value
                    session.setpoint_kw = value * installed.phases * VOLTAGE_V / 1000.0
        return Dispatch(kind, units, to_send, skipped, sessions, reasons)

    async def run(self, dispatch: Dispatch, wave: Wave) -> list[PushResult]:
        """Send the wave (a cut in one burst) and take in the answers."""
        dispatch.power_before = {key: s.power_kw for key, s in dispatch.sessions.items()}
        chunk = len(dispatch.to_send) if dispatch.kind == "cut" else None
        lower, higher = self._split(dispatch)
        # Reductions first, increases once they are answered: moving power from one car to another
        # never adds both for the moment the wave takes (a second for a thousand stations). The
        # increases count as on the wire meanwhile: a plan beside a long wave (after a failover,
        # 30,000 pushes) would otherwise take their sessions for newcomers and send them a schedule
        # too, which the increase then overwrote (6,394 needless pushes in one run).
        self.pusher.queue(higher)
        waiting = [True]  # the increases wait for the reductions: released at once if superseded meanwhile

        def release() -> None:
            if waiting[0]:
                self.pusher.unqueue(higher)
        wave.when_superseded(release)
        try:
            results = await self.pusher.push(lower, wave, chunk=chunk)
        except BaseException:
            release()
            raise
        waiting[0] = False
        if higher:  # superseded: each is answered "superseded" (and was released already)
            results += await self.pusher.push(higher, wave, chunk=chunk, queued=True)
        self._outcomes(dispatch, results)
        return results

    def _split(self, dispatch: Dispatch) -> tuple[list[ShapedProfile], list[ShapedProfile]]:
        """The profiles that lower what a station may draw now (or once what is on the wire for it
        lands), and the others. A station we know nothing about is assumed at its fail-safe."""
        now = self.pusher.clock()
        failsafe = self.grid.planning.fail_safe_limit_a
        lower: list[ShapedProfile] = []
        higher: list[ShapedProfile] = []
        for shaped in dispatch.to_send:
            sp = shaped.carried
            installed = self.pusher.expected((sp.station_id, sp.evse_id), shaped.offset_s)
            before = installed.value_at(now) if installed is not None else None
            after = sp.value_at(now)
            if after is None:
                after = sp.current_a[0]
            (lower if after <= (failsafe if before is None else before) else higher).append(shaped)
        return lower, higher

    def _outcomes(self, dispatch: Dispatch, results: list[PushResult]) -> None:
        p = self.grid.planning
        kind, sessions = dispatch.kind, dispatch.sessions
        phases = {(sp.carried.station_id, sp.carried.evse_id): sp.carried.phases for sp in dispatch.to_send}
        relative = {(sp.carried.station_id, sp.carried.evse_id) for sp in dispatch.to_send
                    if sp.profile.get("chargingProfileKind") == "Relative"}
        for r in results:
            session = sessions.get((r.station_id, r.evse_id))
            self.metrics.pushes.labels(r.status).inc()
            self.journal.record("push", trigger=kind, **r.as_dict())
            self.bus.publish(ProfilePushed(station_id=r.station_id, evse_id=r.evse_id, status=r.status, limit=r.limit,
                                           unit=r.unit, limit_a=r.limit_a, trigger=kind))
            if session is None or self.book.sessions.get(session.key) is not session:
                continue
            st = self.book.station(r.station_id)
            if r.status == "Rejected" and (r.station_id, r.evse_id) in relative:
                # A station that refuses a Relative TxProfile is not uncontrollable: it gets
                # Absolute profiles from now on (anchored on its clock), starting right away.
                st.caps.relative_tx = False
                log.info("%s refused a Relative TxProfile; it gets Absolute ones", r.station_id)
                self.verification.replan("relative profile refused")
                continue
            kw = None if r.limit_a is None else r.limit_a * phases.get(session.key, 3) * VOLTAGE_V / 1000.0
            assumed = min(st.caps.max_current_a, p.fail_safe_limit_a if st.failsafe_status == "Accepted"
                          else st.caps.max_current_a) * st.caps.phases * VOLTAGE_V / 1000.0
            self.verification.report(self.verification.verifier.pushed(session, r, kw, assumed,
                                                                       dispatch.power_before.get(session.key)))
        pushed = sum(r.status != "superseded" for r in results)
        accepted = sum(r.status == "Accepted" for r in results)
        superseded = sum(r.status == "superseded" for r in results)
        for unit in dispatch.units:
            state = self.views.groups[unit.tid]
            planned = GroupPlanned(transformer=unit.tid, limit_kw=round(state.limit_kw, 3),
                                   limit_source=state.limit_source, planned_kw=round(state.planned_kw, 3),
                                   base_load_kw=round(state.base_load_kw, 3), sessions=len(unit.sessions),
                                   infeasible=state.infeasible, trigger=kind, pushed=pushed,
                                   skipped=len(dispatch.skipped), accepted=accepted, superseded=superseded,
                                   reasons=dispatch.reasons or None)
            self.journal.record(kind, **planned.data())
            self.bus.publish(planned)
            if self.status is not None:
                try:
                    self.status.publish(unit.tid, self.views.group_snapshot(unit.tid))
                except Exception:  # noqa: BLE001 - status is informative; never block control on it
                    log.exception("status publish for %s failed", unit.tid)
