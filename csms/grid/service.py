"""The grid part of the daemon, assembled from its layers, and the :class:`csms.interfaces.GridService`
the operator API reads.

- domain (csms/grid/model): the limit book, the session book, the topology;
- the limit side (csms/grid/signals.py): the intake (csms/grid/intake.py) and its signal
  sources (csms/grid/sources);
- control (csms/grid/control.py): the scheduling loop, fed by the observer (bus events) and
  acting through the planner (csms/grid/planning.py, decisions in profiles/) and
- effects (csms/grid/effects): station setup, the pusher and its waves, verification.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry

from csms.domain.records import StationRecord
from csms.grid.config import GridConfig
from csms.grid.control import GridController
from csms.grid.effects.learning import ResumeLearning
from csms.grid.effects.memory import NEED, GridMemory, need_key
from csms.grid.effects.pusher import Pusher
from csms.grid.effects.rebuild import rebuild_sessions
from csms.grid.effects.setup import StationSetup
from csms.grid.effects.verify import Verification, Verifier, VerifyConfig
from csms.grid.effects.waves import WaveDispatcher
from csms.grid.history import FIELDS, HistoryRecorder, LoadHistory
from csms.grid.journal import Journal
from csms.grid.metrics import ControlMetrics
from csms.grid.model.sessions import Defaults, SessionBook, need_record
from csms.grid.model.topology import Topology
from csms.grid.observer import Observer, Versioned
from csms.grid.planning import GroupPlanner
from csms.grid.records import GridRecords
from csms.grid.signals import Signals
from csms.grid.views import GroupViews
from csms.interfaces import Bus, Clock, GridCommands, LimitIntake, Spawner
from csms.store.base import DocumentStore, SmartChargingStore, StationStore, TransactionStore
from profiles.hysteresis import Hysteresis

if TYPE_CHECKING:
    from csms.grid.sources.uftp.service import UftpSource

log = logging.getLogger("csms.grid")


class Registered(Protocol):
    """Where the grid's metrics go (the daemon's, or with several nodes one registry per leadership term)."""

    @property
    def registry(self) -> CollectorRegistry: ...


class GridDeps(Spawner, Protocol):
    """What the grid uses of the daemon around it (the daemon has all of it)."""

    @property
    def bus(self) -> Bus: ...

    @property
    def metrics(self) -> Registered: ...

    @property
    def commands(self) -> GridCommands: ...

    @property
    def connections(self) -> Mapping[str, Versioned]:
        """The stations connected when the grid starts (with several nodes: on any node)."""
        ...


class GridStore(DocumentStore, TransactionStore, SmartChargingStore, StationStore, Protocol):
    """What the grid keeps and reads back across a restart: its own state (limits, safe mode,
    operators' needs, which cars do not resume) and the running transactions, their readings, needs
    and pushed profiles, and the models of their stations."""


class Grid:
    """One component (start/stop) built from the parts below; each gets only what it uses.
    Without a ``store`` nothing survives a restart (tests of the control loop alone)."""

    def __init__(self, config: GridConfig, deps: GridDeps, clock: Clock, store: GridStore | None = None) -> None:
        self.config = config
        self.deps = deps
        self.store = store
        self.memory = GridMemory(store) if store is not None else None
        registry = deps.metrics.registry
        p = config.planning
        d = config.session_defaults
        # Domain
        self.sessions = SessionBook(Defaults(energy_kwh=d.energy_kwh, dwell_s=d.dwell_h * 3600.0,
                                             guaranteed_kwh=d.guaranteed_kwh, v2g_guaranteed_kwh=d.v2g_guaranteed_kwh))
        self.topology = Topology(config)
        self.journal = Journal(clock)
        # Limits in (the intake and its sources), each group's state out (the status publisher)
        self.signals = Signals(config, deps.bus, registry, clock, self.memory)
        self.limit_book = self.signals.book
        self.status = self.signals.status
        # Control and effects
        self.metrics = ControlMetrics(registry)
        self.views = GroupViews(config, self.limit_book, self.sessions, self.topology, self.metrics, clock)
        # Installed steps are compared exactly from two re-plan intervals ahead (at least two spacings
        # of the plans actually made, on the grid's clock: WaveDispatcher paces it). Only the slot in force
        # is judged for differences (a plan's next slot starts exactly a slot ahead); later slots
        # are budgeted against the plan's headroom and sent once they are in force (see Hysteresis).
        near_s = max(60.0, 2 * p.replan_interval_s)
        self.pusher = Pusher(deps.commands.set_charging_profile,
                             Hysteresis(current_a=p.hysteresis_a, refresh_s=p.slot_s * p.horizon_slots / 2,
                                        min_interval_s=p.min_push_interval_s, near_s=near_s,
                                        defer_s=max(float(p.slot_s), near_s)),
                             clock=clock, stack_level=p.stack_level)
        self.learning = ResumeLearning(self.sessions, self.memory, self.journal)
        self.planner = GroupPlanner(config, self.limit_book, self.sessions, self.topology, self.pusher.installed,
                                    self.journal, judge=self.learning.judge_all)
        self.verification = Verification(Verifier(VerifyConfig(apply_grace_s=p.verify_after_s,
                                                               overdraw_fraction=p.verify_tolerance,
                                                               resume_grace_s=p.resume_timeout_s)),
                                         self.sessions, self.journal, deps.bus, self.metrics,
                                         self._replan, clock, self.learning)
        self.dispatcher = WaveDispatcher(config, self.sessions, self.pusher, self.verification, self.views,
                                         self.journal, deps.bus, self.metrics, self.status)
        self.controller = GridController(config, self.limit_book, self.planner, self.dispatcher, self.verification,
                                         self.views, self.journal, self.metrics, clock)
        self.setup = StationSetup(config, self.sessions, deps.commands, deps, self.journal, self._replan,
                                  self.pusher, clock, memory=self.memory, stations=store)
        self.records = GridRecords(self.memory, self.topology, self.sessions.defaults, clock) \
            if self.memory is not None else None
        self.observer = Observer(config, self.sessions, self.setup, self.pusher, self.verification, self.controller,
                                 self.journal, clock, transactions=store, spawner=deps, memory=self.memory,
                                 records=self.records)
        self._unsubscribe_records: Callable[[], None] | None = None
        self.loads = LoadHistory(config.history, config.transformers, clock, store)
        self.recorder = HistoryRecorder(self.loads, self.views.samples, clock)
        self.clock = clock
        self.uftp = self._uftp(store)
        if self.signals.openadr is not None:  # usage reports the DSO asks for measure the group's load
            self.signals.openadr.meter = self._group_load_kw

    def _uftp(self, store: GridStore | None) -> UftpSource | None:
        """The UFTP aggregator role when ``grid.uftp`` is configured (the library is imported only then)."""
        if self.config.uftp is None:
            return None
        try:
            from csms.grid.sources.uftp.aggregator import Aggregator
            from csms.grid.sources.uftp.fleet import GridFleet
            from csms.grid.sources.uftp.service import UftpSource
        except ImportError as exc:
            raise RuntimeError(f"grid.uftp needs the UFTP library: pip install '.[grid-interfaces]' ({exc})") from exc
        fleet = GridFleet(self.config, self.sessions, self.topology, self.limit_book)
        aggregator = Aggregator(self.config.uftp, self.config, self.signals.desk, fleet, self.memory, store,
                                self.deps.metrics.registry, self.clock)
        source = UftpSource(self.config.uftp, aggregator)
        self.signals.add(source)
        return source

    def _group_load_kw(self, tid: str) -> float:
        return self.views.measured_kw(tid) + self.limit_book.base_load_kw(tid, self.clock())

    def _replan(self, reason: str) -> None:
        self.controller.request(reason)

    async def start(self, listed: list[StationRecord] | None = None,
                    listening: Callable[[], object] | None = None) -> None:
        """Read the grid's state back and start; ``listed``: the stations as the caller just listed
        them (else listed here, once); ``listening``: called once the grid listens to its bus, before
        its controller starts (a new leader delivers there the other nodes' events it held while
        reading back, so the stations that reconnected meanwhile are in its first plan)."""
        await self.signals.start()  # limits and safe mode as they were before a restart
        learnt = await self.learning.load()  # which cars and station models do not resume after a pause
        if learnt:
            log.info("grid: %d resume records of cars and station models read back", learnt)
        if self.store is not None:
            started = time.monotonic()
            rebuilt = await rebuild_sessions(self.store, self.store, self.sessions, self.pusher, self.memory,
                                             self.config, self.clock())
            if rebuilt:
                log.info("grid: %d running sessions rebuilt from the store in %.1f s", rebuilt,
                         time.monotonic() - started)
            started = time.monotonic()
            if listed is None:
                listed = await self.store.list_stations()
            self._station_models(listed)
            recalled = await self.setup.load(listed)
            if recalled:
                log.info("grid: the set-ups of %d stations read back in %.1f s (not asked again until they boot)",
                         recalled, time.monotonic() - started)
        self.observer.attach(self.deps.bus, self.deps.connections)
        if self.records is not None:
            self._unsubscribe_records = self.deps.bus.subscribe(self.records.on_event, "grid.finding")
        if listening is not None:
            listening()
        await self.controller.start()
        await self.recorder.start()

    def _station_models(self, listed: list[StationRecord]) -> None:
        """Vendor and model of the stations of rebuilt sessions, until they boot again (what the
        resume knowledge of their model is judged on). From one listing of the stations, not a read
        per station: 30,000 reads took a new leader's takeover 15 s."""
        stations = {s.station_id: self.sessions.station(s.station_id) for s in self.sessions}
        unknown = {sid for sid, st in stations.items() if st.vendor is None and st.model is None}
        if not unknown:
            return
        for record in listed:
            if record.station_id in unknown:
                stations[record.station_id].vendor = record.vendor
                stations[record.station_id].model = record.model

    async def stop(self) -> None:
        try:
            self.observer.detach()
            if self._unsubscribe_records is not None:
                self._unsubscribe_records()
            await self.recorder.stop()
            await self.controller.stop()
        finally:
            await self.signals.stop()
            if self.memory is not None:
                await self.memory.flush()

    # csms.interfaces.GridService ----------------------------------------------------------------
    @property
    def limits(self) -> LimitIntake:
        return self.signals.desk

    def snapshot(self) -> dict[str, Any]:
        last = self.controller.reaction_s
        snapshot = self.views.snapshot(plans=self.controller.plans, pushes_sent=self.pusher.sent,
                                       pushes_skipped=self.pusher.skipped, pushes_identical=self.pusher.identical,
                                       last_reaction_s=last[-1] if last else None)
        snapshot["sources"] = self.signals.source_status()
        return snapshot

    def recent_events(self, limit: int) -> list[dict[str, Any]]:
        return self.journal.recent(limit)

    def load_history(self, transformer_id: str, since: datetime | None = None) -> dict[str, Any]:
        """The group's load history, one column per field (raises KeyError for an unknown group)."""
        h = self.loads
        if transformer_id not in h.rings:
            raise KeyError(transformer_id)
        points = h.points(transformer_id, since)
        return {"transformer": transformer_id, "resolution_s": h.resolution_s, "span_s": h.capacity * h.resolution_s,
                **{name: [p[name] for p in points] for name in ("t", *FIELDS)}}

    def set_session_need(self, station_id: str, evse_id: int, energy_kwh: float | None = None,
                         departure: datetime | None = None, guaranteed_kwh: float | None = None) -> dict[str, Any]:
        """Set what a running session needs (raises KeyError for no such session, ValueError for bad values)."""
        session = self.sessions.set_api_need(station_id, evse_id, self.clock(), energy_kwh, departure, guaranteed_kwh)
        need = session.need
        assert need is not None
        if self.memory is not None:
            self.memory.put(NEED, need_key(station_id, session.transaction_id), need_record(need))
        self.journal.record("need", station_id=station_id, evse_id=evse_id, energy_kwh=need.energy_kwh,
                            departure=need.departure.isoformat(), guaranteed_kwh=need.guaranteed_kwh)
        self.controller.request("need set by operator")
        return {"station_id": station_id, "evse_id": evse_id, "energy_kwh": need.energy_kwh,
                "departure": need.departure.isoformat(), "guaranteed_kwh": need.guaranteed_kwh}

    async def stored(self) -> None:
        if self.memory is not None:
            await self.memory.flush()
