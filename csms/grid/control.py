"""The grid controller: keeps every capacity group under its limit by steering charging sessions.

It listens to the bus (sessions, meter values, EV needs, stations coming and going, limit
changes), keeps its picture of the world in a :class:`SessionBook` (cheap synchronous updates,
so nothing heavy sits on the per-message path) and acts from one planning task:

1. a stricter limit gets an immediate safe cut first (``immediate_cut``: proportional, no
   look-ahead), pushed to every station at once;
2. then the refined plan (``plan``), also after sessions start or end, needs arrive, stations
   connect or drop, verification findings, and periodically.

Every limit, plan, push and finding is kept in ``events`` (and published on the bus as
``grid.plan`` / ``grid.push`` / ``grid.finding``), so the reaction time (limit received -> all
stations answered) and the outcome can be reported. The clock is injectable so tests and the demo
can run on simulated time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from csms.domain.events import (EvChargingNeeds, Event, GroupPlanned, LimitChanged, MeterValuesReceived,
                                ProfilePushed, SafeModeChanged, SignalRejected, StationBooted, StationConnected,
                                StationDisconnected, TransactionChanged, VerificationFinding)
from csms.interfaces import Bus, GridCommands, Spawner
from csms.metrics import Metrics
from csms.grid.config import GridConfig
from csms.grid.effects.pusher import Hysteresis, PushResult, Pusher, Setpoints, ShapedProfile, Wave, failsafe_profile
from csms.grid.model.sessions import Defaults, Session, SessionBook, StationCaps, parse_session_id, session_need
from csms.grid.model.topology import Topology
from csms.grid.effects.verify import Finding, Verifier, VerifyConfig
from profiles.planner import Plan, PlanInput, SessionNeed, immediate_cut, plan
from profiles.units import VOLTAGE_V

if TYPE_CHECKING:
    from csms.grid.model.limits import LimitBook

log = logging.getLogger("csms.grid")

Clock = Callable[[], datetime]
DEBOUNCE_S = 0.02  # coalesce a burst of events into one plan
MAX_COALESCE_S = 5.0  # a re-plan waits at most this long after the previous cycle ended
THREAD_MIN_SESSIONS = 1000  # from this many sessions on, the refined plan is solved in a worker thread
BASE_LOAD_SAMPLE_S = 60.0
SMART_CHARGING_VARIABLES = ("RateUnit", "ProfileStackLevel", "PeriodsPerSchedule")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class GroupState:
    """The last plan of one capacity group, for the snapshot and the metrics."""

    limit_kw: float = 0.0
    limit_source: str = "capacity"
    base_load_kw: float = 0.0
    planned_kw: float = 0.0  # EV load planned for the current slot
    planned_at: datetime | None = None
    infeasible: bool = False
    sessions: list[str] = field(default_factory=list)


@dataclass
class _UnitPlan:
    tid: str
    sessions: list[Session]
    inp: PlanInput
    plan: Plan
    sources: list[str]


@dataclass
class _LimitWatch:
    received_mono: float
    tid: str | None
    kind: str


class GridDeps(Spawner, Protocol):
    """What the controller uses of the daemon around it."""

    @property
    def bus(self) -> Bus: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def commands(self) -> GridCommands: ...

    @property
    def connections(self) -> Mapping[str, object]: ...


class GridController:
    """Component: start()/stop(); the operator API reads snapshot(), events and set_session_need()."""

    def __init__(self, deps: GridDeps, grid: GridConfig, limits: LimitBook, *, topology: Topology | None = None,
                 status: Any = None, clock: Clock | None = None, history: int = 2000) -> None:
        self.deps = deps
        self.grid = grid
        self.limits = limits
        self.topology = topology or Topology(grid)
        self.status = status  # StatusPublisher or None
        self.signals: Any = None  # the SignalListener (its submit() posts a limit), when wired by grid_components
        self.clock: Clock = clock or utc_now
        p = grid.planning
        d = grid.session_defaults
        self.book = SessionBook(Defaults(energy_kwh=d.energy_kwh, dwell_s=d.dwell_h * 3600.0,
                                         guaranteed_kwh=d.guaranteed_kwh))
        # Installed steps are compared exactly from two re-plan intervals ahead (see Hysteresis).
        self.pusher = Pusher(self._send, Hysteresis(current_a=p.hysteresis_a, refresh_s=p.slot_s * p.horizon_slots / 2,
                                                    min_interval_s=p.min_push_interval_s,
                                                    near_s=max(60.0, 2 * p.replan_interval_s)),
                             clock=self.clock, stack_level=p.stack_level)
        self.verifier = Verifier(VerifyConfig(apply_grace_s=p.verify_after_s, overdraw_fraction=p.verify_tolerance,
                                              resume_grace_s=p.resume_timeout_s))
        self.events: deque[dict[str, Any]] = deque(maxlen=history)
        self.groups: dict[str, GroupState] = {tid: GroupState() for tid in grid.transformers}
        self.plans = 0
        self.reaction_s: deque[float] = deque(maxlen=100)
        self._wake = asyncio.Event()
        self._reasons: set[str] = set()
        self._watches: list[_LimitWatch] = []  # limit changes not yet answered (for the reaction time)
        self._unchecked: list[_LimitWatch] = []  # limit changes the cut has not looked at yet
        self._generation = 0  # bumped by every cut: a plan computed before it is dropped
        self._first_request: float | None = None
        self._last_cycle_end = 0.0
        self._last_cycle_s = 0.0
        self._planning: asyncio.Task[None] | None = None
        self._wave: Wave | None = None
        self._waves: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._unsubscribe: Callable[[], None] | None = None
        self._idle = asyncio.Event()
        self._metrics(deps.metrics.registry)

    # Metrics -----------------------------------------------------------------------------------
    def _metrics(self, registry: Any) -> None:
        self.m_limit = Gauge("csms_transformer_limit_kw", "Limit in force per capacity group", ["transformer"],
                             registry=registry)
        self.m_load = Gauge("csms_transformer_load_kw", "Measured EV load plus base load per capacity group",
                            ["transformer"], registry=registry)
        self.m_planned = Gauge("csms_transformer_planned_kw", "Planned EV load plus base load for the current slot",
                               ["transformer"], registry=registry)
        self.m_reaction = Histogram("csms_grid_reaction_seconds",
                                    "Stricter limit received -> every affected station answered the cut",
                                    buckets=(.01, .025, .05, .1, .25, .5, 1, 2, 5, 10, 30), registry=registry)
        self.m_plan_s = Histogram("csms_grid_plan_seconds", "Time to compute one plan of all groups",
                                  buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5), registry=registry)
        self.m_pushes = Counter("csms_grid_pushes_total", "TxProfile pushes by outcome", ["status"], registry=registry)
        self.m_findings = Counter("csms_grid_findings_total", "Verification findings by kind", ["kind"],
                                  registry=registry)

    # Lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._unsubscribe = self.deps.bus.subscribe(self._on_event)
        for station_id in list(self.deps.connections):  # stations that connected before us
            self.book.station(station_id).connected = True
            self._ensure_setup(station_id)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="grid controller")
        self.request("start")

    async def stop(self) -> None:
        self._stopping = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks = [t for t in (self._task, self._planning, *self._waves) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._planning = self._wave = None

    def request(self, reason: str) -> None:
        """Ask for a re-plan soon (coalesced)."""
        if not self._reasons:
            self._first_request = time.monotonic()
        self._reasons.add(reason)
        self._idle.clear()
        self._wake.set()

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until no re-plan is pending (for tests, the demo and the API's "apply now")."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    # Recording ---------------------------------------------------------------------------------
    def _record(self, kind: str, /, **data: Any) -> None:
        entry = {**data, "at": self.clock().isoformat(), "kind": kind}
        self.events.append(entry)

    # Bus ---------------------------------------------------------------------------------------
    def _on_event(self, ev: Event) -> None:
        """Synchronous and cheap: update state, note what needs a re-plan."""
        if isinstance(ev, (LimitChanged, SafeModeChanged)):
            tid = ev.transformer_id if ev.transformer_id in self.grid.transformers else None
            watch = _LimitWatch(time.monotonic(), tid, ev.kind)
            self._watches.append(watch)
            self._unchecked.append(watch)
            if self._wave is not None and self._stricter([watch]):
                self._wave.supersede()  # nothing more of the old wave goes out, not even the next chunk
            self._record("limit", **{**_scalars(ev.data()), "transformer": tid, "event": ev.kind})
            self.request(ev.kind)
            return
        if isinstance(ev, SignalRejected):
            self._record("signal_rejected", **_scalars(ev.data()))
            return
        sid = ev.station_id
        if sid is None:
            return
        now = self.clock()
        if isinstance(ev, StationConnected):
            self.book.station(sid).connected = True
            self.request("station connected")
        elif isinstance(ev, StationDisconnected):
            self.book.station(sid).connected = False
            self.request("station dropped")
        elif isinstance(ev, StationBooted):
            st = self.book.station(sid)
            st.vendor, st.model, st.connected = ev.vendor, ev.model, True
            if ev.status == "Accepted":
                st.ready = False
                self.pusher.forget(sid)
                self._ensure_setup(sid, force=True)
        elif isinstance(ev, TransactionChanged):
            if ev.event_type == "Ended":
                ended = self.book.ended(sid, ev.transaction_id)
                if ended is not None:
                    self.pusher.forget(sid, ended.evse_id)
                    self.request("session ended")
                return
            session, change = self.book.transaction(sid, ev, now)
            if session is None:
                return
            if change == "new":
                self._ensure_setup(sid)
                self.request("session started")
            elif change == "state":
                self._finding(self.verifier.resume_check(session, now))
            if change == "reading" or ev.reading is not None:
                self._finding(self.verifier.reading(session, now))
        elif isinstance(ev, MeterValuesReceived):
            found = self.book.find(sid, None, ev.evse_id)
            if found is not None and ev.reading is not None:
                self.book.reading(found, ev.reading, now)
                self._finding(self.verifier.reading(found, now))
        elif isinstance(ev, EvChargingNeeds):
            self.book.ev_needs(sid, ev.evse_id, ev.needs, now)
            self.request("EV needs")

    def _finding(self, finding: Finding | None) -> None:
        if finding is None:
            return
        self.m_findings.labels(finding.kind).inc()
        self._record("finding", **finding.as_dict())
        self.deps.bus.publish(VerificationFinding(station_id=finding.station_id, finding=finding.kind,
                                                  evse_id=finding.evse_id, transaction_id=finding.transaction_id,
                                                  detail=finding.detail, fixed_kw=finding.fixed_kw))
        if finding.kind != "resumed":
            log.warning("%s evse %s: %s (%s)", finding.station_id, finding.evse_id, finding.kind, finding.detail)
            self.request(f"finding {finding.kind}")

    # Operator hooks -----------------------------------------------------------------------------
    def set_session_need(self, station_id: str, evse_id: int, energy_kwh: float | None = None,
                         departure: datetime | None = None, guaranteed_kwh: float | None = None) -> dict[str, Any]:
        """Set what a running session needs (raises KeyError for no such session, ValueError for bad values)."""
        session = self.book.set_api_need(station_id, evse_id, self.clock(), energy_kwh, departure, guaranteed_kwh)
        need = session.need
        assert need is not None
        self._record("need", station_id=station_id, evse_id=evse_id, energy_kwh=need.energy_kwh,
                     departure=need.departure.isoformat(), guaranteed_kwh=need.guaranteed_kwh)
        self.request("need set by operator")
        return {"station_id": station_id, "evse_id": evse_id, "energy_kwh": need.energy_kwh,
                "departure": need.departure.isoformat(), "guaranteed_kwh": need.guaranteed_kwh}

    # Station setup ----------------------------------------------------------------------------------
    def _ensure_setup(self, station_id: str, force: bool = False) -> None:
        st = self.book.station(station_id)
        if st.setup_running or (st.ready and not force):
            return
        st.setup_running = True
        self.deps.spawn(self._setup_station(station_id), name=f"grid setup {station_id}")

    async def _setup_station(self, station_id: str) -> None:
        """Read what the station accepts and install the fail-safe TxDefaultProfile."""
        st = self.book.station(station_id)
        try:
            vendor_model = f"{st.vendor}/{st.model}" if st.vendor or st.model else None
            rule = self.grid.station_model_for(station_id, vendor_model)
            caps = StationCaps(rate_units=("A",), max_stack_level=0, periods_per_schedule=1, v2g=rule.v2g,
                               phases=rule.phases, max_current_a=rule.max_current_a,
                               min_current_a=rule.min_current_a, source="rule")
            try:
                response = await self.deps.commands.get_variables(station_id, [
                    {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": name}}
                    for name in SMART_CHARGING_VARIABLES])
                _apply_variables(caps, response.get("getVariableResult", []))
            except Exception as exc:  # noqa: BLE001 - a station without a device model gets the safest shape
                log.info("%s: GetVariables failed (%s); assuming amps, stack level 0, one period", station_id, exc)
            if rule.rate_unit is not None:
                caps.rate_units = (rule.rate_unit,)
            st.caps = caps
            profile = failsafe_profile(caps, self.grid.planning.fail_safe_limit_a)
            try:
                response = await self.deps.commands.set_charging_profile(station_id, 0, profile)
                st.failsafe_status = str(response.get("status"))
            except Exception as exc:  # noqa: BLE001
                st.failsafe_status = type(exc).__name__
            st.ready = True
            self._record("station_setup", station_id=station_id, rate_units=list(caps.rate_units),
                         stack_level=caps.max_stack_level, periods=caps.periods_per_schedule, v2g=caps.v2g,
                         caps_source=caps.source, failsafe=st.failsafe_status)
        finally:
            st.setup_running = False
        self.request("station ready")

    # The planning loop --------------------------------------------------------------------------------
    async def _run(self) -> None:
        """Orchestrates, never waits on stations: cuts start at once (superseding any wave in
        flight), re-plans are coalesced (a debounce, then at most one plan computing or pushing,
        spaced by how long the last one took, always from the latest state)."""
        interval = self.grid.planning.replan_interval_s
        next_periodic = time.monotonic() + interval
        while not self._stopping:
            wake_at = next_periodic
            if self._plan_ready():
                wake_at = min(wake_at, self._plan_at())
            try:
                # Not asyncio.wait_for: on 3.11 it can swallow a cancel that races with the event.
                async with asyncio.timeout(max(0.0, wake_at - time.monotonic())):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if time.monotonic() >= next_periodic:
                next_periodic = time.monotonic() + interval
                self.request("periodic")
                self._wake.clear()
            try:
                if self._unchecked:
                    self._cut()
                if self._plan_ready() and time.monotonic() >= self._plan_at():
                    reasons, self._reasons = sorted(self._reasons), set()
                    self._first_request = None
                    if self.grid.planning.enabled:
                        self._planning = asyncio.get_running_loop().create_task(
                            self._plan_and_push(reasons), name="grid plan")
                        self._planning.add_done_callback(self._task_done)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the controller must survive a bad plan and try again
                log.exception("grid planning failed")
            if not (self._reasons or self._unchecked or self._busy()):
                self._idle.set()

    def _busy(self) -> bool:
        return self._planning is not None or self._wave is not None

    def _plan_ready(self) -> bool:
        return bool(self._reasons) and not self._busy()

    def _plan_at(self) -> float:
        """When the pending re-plan may start: a short debounce after the first request, and a
        pause after the last cycle as long as that cycle took (bounded), so a storm of session
        starts at 10,000 stations costs a few plans, not one per session."""
        first = self._first_request if self._first_request is not None else time.monotonic()
        return max(first + DEBOUNCE_S, self._last_cycle_end + min(MAX_COALESCE_S, self._last_cycle_s))

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task is self._planning:
            self._planning = None
        if not task.cancelled() and task.exception() is not None:
            log.error("grid %s failed", task.get_name(), exc_info=task.exception())
        self._wake.set()

    def _resolve_watches(self, covered: Callable[[_LimitWatch], bool], results: list[PushResult], by: str) -> None:
        """Limit changes now answered by pushes: record the reaction time (received -> all answered)."""
        done = time.monotonic()
        keep = []
        for w in self._watches:
            if not covered(w):
                keep.append(w)
                continue
            seconds = done - w.received_mono
            self.m_reaction.observe(seconds)
            self.reaction_s.append(seconds)
            self._record("reaction", transformer=w.tid, seconds=round(seconds, 4), by=by, pushes=len(results),
                         accepted=sum(r.status == "Accepted" for r in results))
        self._watches = keep

    def _check_resumes(self) -> None:
        now = self.clock()
        for session in self.book:
            self._finding(self.verifier.resume_check(session, now))

    def _cut(self) -> None:
        """Immediate safe answer for groups whose limit in force became stricter than planned.

        Computed right here on the loop and sent as its own wave, superseding whatever wave is
        in flight (its unsent profiles are dropped) and any plan being computed (it was made for
        the old limit): the cut goes first to every station, then the refined plan follows.
        """
        watches, self._unchecked = self._unchecked, []
        now = self.clock()
        stricter = self._stricter(watches)
        if not stricter:
            return
        started = time.monotonic()
        self._generation += 1  # a plan computing now was made for the old limit: drop it
        if self._wave is not None:
            self._wave.supersede()
        units = self._plan_units(now, stricter, cut=True)
        groups = set(stricter)
        self._launch(units, now, kind="cut", resolve=lambda w: w.received_mono <= started
                     and (w.tid is None or w.tid in groups))
        self.request("cut")

    def _stricter(self, watches: list[_LimitWatch]) -> list[str]:
        """Groups named by ``watches`` whose limit in force is now below what was planned (cheap)."""
        now = self.clock()
        tids = {w.tid for w in watches}
        if None in tids:
            tids = set(self.grid.transformers)
        stricter = []
        for tid in sorted(t for t in tids if t is not None):
            limit, _ = self.limits.limit_at(tid, now)
            state = self.groups.get(tid)
            if state is None or state.planned_at is None or limit < state.limit_kw - 1e-9 \
                    or state.planned_kw + state.base_load_kw > limit + 1e-6:
                stricter.append(tid)
        return stricter

    async def _plan_and_push(self, reasons: list[str]) -> None:
        generation = self._generation
        cycle_start = time.monotonic()
        self._check_resumes()
        now = self.clock()
        started = time.perf_counter()
        tids = list(self.grid.transformers)
        units = await self._plan_units_async(now, tids)
        self.m_plan_s.observe(time.perf_counter() - started)
        if generation != self._generation or self._stopping:
            self._reasons.update(reasons)  # the limit changed while planning: plan again from the new state
            self._first_request = self._first_request or time.monotonic()
            return
        self.plans += 1
        self._launch(units, now, kind="plan", reasons=reasons, cycle_start=cycle_start,
                     resolve=lambda w: w.received_mono <= cycle_start)

    # Planning ------------------------------------------------------------------------------------------
    def _sessions_by_group(self, ordered: bool = False) -> dict[str, list[Session]]:
        """Sessions per group, in arrival order; ``ordered``: in session-id order, so ties in the
        planner break the same way whatever order the stations' messages came in."""
        out: dict[str, list[Session]] = {tid: [] for tid in self.grid.transformers}
        for key in sorted(self.book.sessions) if ordered else list(self.book.sessions):
            session = self.book.sessions[key]
            tid = self.topology.transformer_of(session.station_id, session.evse_id)
            if tid is not None:
                out.setdefault(tid, []).append(session)
        return out

    def _plan_input(self, tid: str, sessions: list[Session], start: datetime,
                    cap_kw: list[float] | None = None) -> tuple[PlanInput, list[str]]:
        p = self.grid.planning
        sched = self.limits.schedule(tid, start, p.horizon_slots, p.slot_s)
        limits = [kw - p.margin_kw for kw, _ in sched]
        if cap_kw is not None:
            limits = [min(a, b) for a, b in zip(limits, cap_kw)]
        base = [self._slot_base_kw(tid, start + timedelta(seconds=i * p.slot_s), p.slot_s) for i in range(len(sched))]
        needs = []
        for s in sessions:
            st = self.book.station(s.station_id)
            if not p.allow_pause:
                s.can_pause = False
            needs.append(session_need(s, st.caps, start, self.book.defaults,
                                      self.topology.wiring(s.station_id, s.evse_id), connected=st.connected))
        group = self.grid.transformers[tid]
        inp = PlanInput(sessions=needs, limit_kw=limits, base_load_kw=base, slot_s=float(p.slot_s),
                        phase_limit_a=group.phase_limit_a)
        return inp, [source for _, source in sched]

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

    def _plan_units(self, now: datetime, tids: list[str], *, cut: bool) -> list[_UnitPlan]:
        """Plan each group's own sessions, then tighten groups whose parents would be overloaded."""
        start = now.replace(microsecond=0)
        by_group = self._sessions_by_group(ordered=True)
        solve = immediate_cut if cut else plan
        units: dict[str, _UnitPlan] = {}
        for tid in self._wanted(tids):
            inp, sources = self._plan_input(tid, by_group.get(tid, []), start)
            units[tid] = _UnitPlan(tid, by_group.get(tid, []), inp, solve(inp), sources)
        self._fit_parents(units, start, solve)
        if not cut:
            for unit in units.values():
                self._keep_pause_choice(unit, now)
        return list(units.values())

    async def _plan_units_async(self, now: datetime, tids: list[str]) -> list[_UnitPlan]:
        """The refined plan; with many sessions the numpy solve runs in a worker thread so the
        event loop keeps serving stations (and can start a cut) meanwhile. Inputs are read here,
        on the loop, so the thread never sees sessions change under it."""
        if len(self.book) < THREAD_MIN_SESSIONS:
            return self._plan_units(now, tids, cut=False)
        start = now.replace(microsecond=0)
        by_group = self._sessions_by_group(ordered=True)
        inputs = [(tid, by_group.get(tid, []), *self._plan_input(tid, by_group.get(tid, []), start))
                  for tid in self._wanted(tids)]
        solved = await asyncio.to_thread(lambda: [plan(inp) for _, _, inp, _ in inputs])
        units = {tid: _UnitPlan(tid, sessions, inp, result, sources)
                 for (tid, sessions, inp, sources), result in zip(inputs, solved)}
        self._fit_parents(units, start, plan)
        for unit in units.values():
            self._keep_pause_choice(unit, now)
        return list(units.values())

    def _fit_parents(self, units: dict[str, _UnitPlan], start: datetime, solve: Callable[[PlanInput], Plan]) -> None:
        """Nested groups: when a subtree overloads an ancestor, shrink the nested EV loads
        in proportion to their planned load and plan them again (once: plans keep their caps)."""
        for ancestor in self.grid.transformers:
            below = [t for t in self.topology.descendants(ancestor) if t in units]
            if not below or ancestor not in units:
                continue
            subtree = [ancestor] + below
            n = len(units[ancestor].inp.limit_kw)
            load = [sum(units[t].plan.total_kw[i] + units[t].inp.base_load_kw[i] for t in subtree) for i in range(n)]
            over = [max(0.0, load[i] - units[ancestor].inp.limit_kw[i]) for i in range(n)]
            if max(over) <= 1e-6:
                continue
            for t in subtree:
                u = units[t]
                ev_total = [sum(units[x].plan.total_kw[i] for x in subtree) or 1.0 for i in range(n)]
                cap = [u.inp.base_load_kw[i] + max(0.0, u.plan.total_kw[i] - over[i] * u.plan.total_kw[i] / ev_total[i])
                       for i in range(n)]
                inp, sources = self._plan_input(t, u.sessions, start, cap_kw=cap)
                units[t] = _UnitPlan(t, u.sessions, inp, solve(inp), sources)

    def _keep_pause_choice(self, unit: _UnitPlan, now: datetime) -> None:
        """Sticky pauses: when the plan would pause a charging car only to resume an equivalent
        paused one (least-laxity order flips as soon as the charging car has taken some energy),
        swap their schedules back, so the car already paused stays paused and neither station
        gets a message. Safe for the limit: both cars load the same phases with the same power
        per amp, and each schedule fits the other car's current range. A paused car that is
        urgent (it must charge now to reach its need or its guarantee by departure) is resumed.
        """
        slot_h = self.grid.planning.slot_s / 3600.0
        pausing: list[SessionNeed] = []
        resuming: list[SessionNeed] = []
        rows = unit.plan.sessions
        for need in unit.inp.sessions:
            row = rows.get(need.session_id)
            if need.fixed_kw is not None or row is None or not row.current_a:
                continue
            installed = self.pusher.installed.get(parse_session_id(need.session_id))
            was = None if installed is None else installed.value_at(now)
            if was is None:
                continue
            planned = row.current_a[0]
            if was > 0 and planned == 0 and need.can_pause and need.energy_needed_kwh > 1e-3:
                pausing.append(need)
            elif was == 0 and planned > 0 and need.can_pause and not _urgent(need, slot_h):
                resuming.append(need)
        for p_need in pausing:
            for r_need in resuming:
                p_row, r_row = rows[p_need.session_id], rows[r_need.session_id]
                if _interchangeable(p_need, r_need, p_row.current_a, r_row.current_a):
                    rows[p_need.session_id] = replace(r_row, session_id=p_need.session_id)
                    rows[r_need.session_id] = replace(p_row, session_id=r_need.session_id)
                    resuming.remove(r_need)
                    self._record("pause_kept", session_id=r_need.session_id, instead_of=p_need.session_id)
                    break

    def _remember(self, unit: _UnitPlan, now: datetime) -> None:
        state = self.groups.setdefault(unit.tid, GroupState())
        state.limit_kw = float(unit.inp.limit_kw[0]) + self.grid.planning.margin_kw
        state.limit_source = unit.sources[0] if unit.sources else "capacity"
        state.base_load_kw = float(unit.inp.base_load_kw[0])
        state.planned_kw = float(unit.plan.total_kw[0])
        state.planned_at = now
        state.infeasible = 0 in unit.plan.infeasible_slots
        state.sessions = [s.session_id for s in unit.inp.sessions]
        self.m_limit.labels(unit.tid).set(state.limit_kw)
        self.m_planned.labels(unit.tid).set(state.planned_kw + state.base_load_kw)
        self.m_load.labels(unit.tid).set(self._measured_kw(unit.tid) + state.base_load_kw)

    # Pushing ---------------------------------------------------------------------------------------
    async def _send(self, station_id: str, evse_id: int, profile: dict[str, Any]) -> dict[str, Any]:
        return await self.deps.commands.set_charging_profile(station_id, evse_id, profile)

    def _launch(self, units: list[_UnitPlan], now: datetime, *, kind: str, resolve: Callable[[_LimitWatch], bool],
                reasons: list[str] | None = None, cycle_start: float | None = None) -> None:
        """Decide what to send (hysteresis) and start the wave as its own task."""
        p = self.grid.planning
        start = now.replace(microsecond=0)
        todo: list[tuple[Setpoints, StationCaps, str]] = []
        sessions: dict[tuple[str, int], Session] = {}
        for unit in units:
            self._remember(unit, now)
            by_id = {f"{s.station_id}#{s.evse_id}": s for s in unit.sessions}
            for need in unit.inp.sessions:
                session = by_id.get(need.session_id)
                if session is None or self.book.sessions.get(session.key) is not session:
                    continue
                st = self.book.station(session.station_id)
                if need.fixed_kw is not None or not st.connected or not st.ready:
                    continue  # uncontrollable, unreachable, or still being set up: budgeted, not pushed
                sp = unit.plan.sessions[need.session_id]
                todo.append((Setpoints(session.station_id, session.evse_id, session.transaction_id, start,
                                       float(p.slot_s), sp.current_a, need.phases), st.caps, unit.tid))
                sessions[session.key] = session
        headroom = {u.tid: tuple(max(0.0, kw) for kw in u.plan.headroom_kw) for u in units}  # per slot from start
        to_send, skipped = self.pusher.due(todo, headroom)
        if skipped:
            self.m_pushes.labels("skipped").inc(len(skipped))
        for r in skipped:
            installed = self.pusher.installed.get((r.station_id, r.evse_id))
            session = sessions.get((r.station_id, r.evse_id))
            if installed is not None and session is not None:
                value = installed.value_at(now)
                if value is not None:
                    session.setpoint_a = value
                    session.setpoint_kw = value * installed.phases * VOLTAGE_V / 1000.0
        wave = Wave(kind)
        self._wave = wave
        task = asyncio.get_running_loop().create_task(
            self._run_wave(wave, units, to_send, skipped, sessions, kind, resolve, reasons, cycle_start),
            name=f"grid {kind} wave")
        task.add_done_callback(self._task_done)
        self._waves.add(task)
        task.add_done_callback(self._waves.discard)

    async def _run_wave(self, wave: Wave, units: list[_UnitPlan], to_send: list[ShapedProfile],
                        skipped: list[PushResult], sessions: dict[tuple[str, int], Session], kind: str,
                        resolve: Callable[[_LimitWatch], bool], reasons: list[str] | None,
                        cycle_start: float | None) -> None:
        try:
            power_before = {key: s.power_kw for key, s in sessions.items()}
            results = await self.pusher.push(to_send, wave, chunk=len(to_send) if kind == "cut" else None)
            phases = {(sp.carried.station_id, sp.carried.evse_id): sp.carried.phases for sp in to_send}
            self._after_wave(units, results, skipped, sessions, phases, power_before, kind, reasons)
            if not wave.superseded:
                self._resolve_watches(resolve, results, kind)
        finally:
            if self._wave is wave:
                self._wave = None
            if cycle_start is not None:
                self._last_cycle_end = time.monotonic()
                self._last_cycle_s = self._last_cycle_end - cycle_start

    def _after_wave(self, units: list[_UnitPlan], results: list[PushResult], skipped: list[PushResult],
                    sessions: dict[tuple[str, int], Session], phases: dict[tuple[str, int], int],
                    power_before: dict[tuple[str, int], float | None], kind: str, reasons: list[str] | None) -> None:
        p = self.grid.planning
        for r in results:
            session = sessions.get((r.station_id, r.evse_id))
            self.m_pushes.labels(r.status).inc()
            self._record("push", trigger=kind, **r.as_dict())
            self.deps.bus.publish(ProfilePushed(station_id=r.station_id, evse_id=r.evse_id, status=r.status,
                                                limit=r.limit, unit=r.unit, limit_a=r.limit_a, trigger=kind))
            if session is None or self.book.sessions.get(session.key) is not session:
                continue
            st = self.book.station(r.station_id)
            kw = None if r.limit_a is None else r.limit_a * phases.get(session.key, 3) * VOLTAGE_V / 1000.0
            assumed = min(st.caps.max_current_a, p.fail_safe_limit_a if st.failsafe_status == "Accepted"
                          else st.caps.max_current_a) * st.caps.phases * VOLTAGE_V / 1000.0
            self._finding(self.verifier.pushed(session, r, kw, assumed, power_before.get(session.key)))
        summary = {"trigger": kind, "pushed": sum(r.status != "superseded" for r in results),
                   "skipped": len(skipped), "accepted": sum(r.status == "Accepted" for r in results),
                   "superseded": sum(r.status == "superseded" for r in results)}
        for unit in units:
            state = self.groups[unit.tid]
            planned = GroupPlanned(transformer=unit.tid, limit_kw=round(state.limit_kw, 3),
                                   limit_source=state.limit_source, planned_kw=round(state.planned_kw, 3),
                                   base_load_kw=round(state.base_load_kw, 3), sessions=len(unit.sessions),
                                   infeasible=state.infeasible, reasons=reasons or None, **summary)
            self._record(kind, **planned.data())
            self.deps.bus.publish(planned)
            if self.status is not None:
                try:
                    self.status.publish(unit.tid, self.group_snapshot(unit.tid))
                except Exception:  # noqa: BLE001 - status is informative; never block control on it
                    log.exception("status publish for %s failed", unit.tid)

    # Reading ----------------------------------------------------------------------------------------
    def _measured_kw(self, tid: str) -> float:
        return sum(s.power_kw or 0.0 for s in self._sessions_by_group().get(tid, []))

    def group_snapshot(self, tid: str) -> dict[str, Any]:
        state = self.groups.get(tid, GroupState())
        now = self.clock()
        limit, source = self.limits.limit_at(tid, now)
        sessions = self._sessions_by_group().get(tid, [])
        measured = sum(s.power_kw or 0.0 for s in sessions)
        return {
            "transformer": tid,
            "limit_kw": limit,
            "limit_source": source,
            "safe_mode": self.limits.in_safe_mode(tid),
            "measured_kw": round(measured + state.base_load_kw, 3),
            "measured_ev_kw": round(measured, 3),
            "planned_kw": round(state.planned_kw + state.base_load_kw, 3),
            "planned_ev_kw": round(state.planned_kw, 3),
            "base_load_kw": state.base_load_kw,
            "planned_at": state.planned_at.isoformat() if state.planned_at else None,
            "infeasible": state.infeasible,
            "sessions": [self._session_view(s) for s in sessions],
        }

    def _session_view(self, s: Session) -> dict[str, Any]:
        st = self.book.station(s.station_id)
        need = s.need
        return {
            "station_id": s.station_id, "evse_id": s.evse_id, "transaction_id": s.transaction_id,
            "state": s.state(), "charging_state": s.charging_state, "connected": st.connected,
            "setpoint_a": s.setpoint_a, "setpoint_kw": None if s.setpoint_kw is None else round(s.setpoint_kw, 3),
            "actual_kw": None if s.power_kw is None else round(s.power_kw, 3),
            "delivered_kwh": round(s.delivered_kwh, 3),
            "need_kwh": None if need is None else need.energy_kwh,
            "need_source": "default" if need is None else need.source,
            "departure": None if need is None else need.departure.isoformat(),
            "fixed_kw": s.fixed_kw, "fixed_reason": s.fixed_reason,
            "can_pause": s.can_pause, "no_pause_reason": s.no_pause_reason,
            "push_status": s.push_status,
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything the operator API and dashboard show, per capacity group."""
        return {
            "at": self.clock().isoformat(),
            "plans": self.plans,
            "pushes_sent": self.pusher.sent,
            "pushes_skipped": self.pusher.skipped,
            "last_reaction_s": self.reaction_s[-1] if self.reaction_s else None,
            "transformers": {tid: self.group_snapshot(tid) for tid in self.grid.transformers},
        }


def _scalars(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if isinstance(v, (int, float, str, bool, type(None)))}


def _apply_variables(caps: StationCaps, results: list[dict[str, Any]]) -> None:
    """Fold GetVariables answers into ``caps`` (unparseable values keep the safe defaults)."""
    found = False
    for r in results:
        if r.get("attributeStatus") != "Accepted" or not isinstance(r.get("attributeValue"), str):
            continue
        name, value = r["variable"]["name"], r["attributeValue"]
        if name == "RateUnit":
            units = tuple(u.strip() for u in value.split(",") if u.strip() in ("A", "W"))
            if units:
                caps.rate_units, found = units, True
        elif name in ("ProfileStackLevel", "PeriodsPerSchedule"):
            try:
                number = int(value)
            except ValueError:
                continue
            if number >= (0 if name == "ProfileStackLevel" else 1):
                found = True
                if name == "ProfileStackLevel":
                    caps.max_stack_level = number
                else:
                    caps.periods_per_schedule = number
    if found:
        caps.source = "device-model"


def _urgent(need: SessionNeed, slot_h: float) -> bool:
    """Must this car charge now to get its need (or its guarantee) in by departure?"""
    rate_kw = need.max_current_a * need.phases * VOLTAGE_V / 1000.0 * need.efficiency
    if rate_kw <= 0:
        return False
    hours = need.departure_s / 3600.0
    return hours - need.energy_needed_kwh / rate_kw < slot_h or hours - need.guaranteed_kwh / rate_kw < 2 * slot_h


def _interchangeable(a: SessionNeed, b: SessionNeed, a_row: tuple[float, ...], b_row: tuple[float, ...]) -> bool:
    """Can ``a`` and ``b`` swap schedules without changing the load on any phase or leaving a
    car's current range?"""
    if a.phases != b.phases or a.phase_wiring != b.phase_wiring or a.efficiency != b.efficiency:
        return False
    for need, row in ((a, b_row), (b, a_row)):
        for amps in row:
            if amps < 0 or (amps > 0 and not need.min_current_a - 1e-9 <= amps <= need.max_current_a + 1e-9):
                return False
    return True
