"""The grid controller: the scheduling loop that keeps every capacity group under its limit.

It decides *when* to act, nothing else: what the grid knows comes from the observer
(csms/grid/observer.py), what to do from the planner (csms/grid/planning.py, decisions in
profiles/), and how it reaches the stations from the wave dispatcher (csms/grid/effects/waves.py).

1. a stricter limit gets an immediate safe cut first (proportional, no look-ahead), pushed to
   every station at once, superseding whatever wave is in flight;
2. then the refined plan, also after sessions start or end, needs arrive, stations connect or
   drop, verification findings, and periodically; re-plans are coalesced (a debounce, then at
   most one plan computing or pushing, spaced by how long the last one took); a wave still in
   flight after ``OVERLAP_AFTER_S`` lets a plan for the newcomers (if any) go out beside it (every session
   holding a schedule keeps it, budgeted at its peak), at most one per ``OVERLAP_AFTER_S``; the
   full plan follows once the wave has ended.

The reaction time (limit received -> every affected station answered) is measured here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from csms.grid.config import GridConfig
from csms.grid.effects.pusher import PushResult, Wave
from csms.grid.effects.verify import Verification
from csms.grid.effects.waves import Dispatch, WaveDispatcher
from csms.grid.journal import Journal
from csms.grid.metrics import ControlMetrics
from csms.grid.model.limits import LimitBook
from csms.grid.planning import GroupPlan, GroupPlanner
from csms.grid.views import GroupViews
from csms.interfaces import Clock

log = logging.getLogger("csms.grid")

DEBOUNCE_S = 0.02  # coalesce a burst of events into one plan
MAX_COALESCE_S = 5.0  # a re-plan waits at most this long after the previous cycle ended
#: A wave in flight longer than this no longer holds the newcomers' plan back (one overlapping wave at
#: most, and at most one plan beside it per this many seconds).
OVERLAP_AFTER_S = MAX_COALESCE_S
SLOW_WAVE_S = 5.0  # a wave longer than this holds up the next plan noticeably: worth a warning


@dataclass
class _LimitWatch:
    received_mono: float
    tid: str | None
    kind: str


class GridController:
    """Component: start()/stop(); ``request()`` asks for a re-plan, ``limit_changed()`` for a cut."""

    def __init__(self, grid: GridConfig, limits: LimitBook, planner: GroupPlanner, dispatcher: WaveDispatcher,
                 verification: Verification, views: GroupViews, journal: Journal, metrics: ControlMetrics,
                 clock: Clock) -> None:
        self.grid = grid
        self.limits = limits
        self.planner = planner
        self.dispatcher = dispatcher
        self.verification = verification
        self.views = views
        self.journal = journal
        self.metrics = metrics
        self.clock = clock
        self.plans = 0
        self.reaction_s: deque[float] = deque(maxlen=100)
        self._wake = asyncio.Event()
        self._reasons: set[str] = set()
        self._watches: list[_LimitWatch] = []  # limit changes not yet answered (for the reaction time)
        self._unchecked: list[_LimitWatch] = []  # limit changes the cut has not looked at yet
        self._generation = 0  # bumped by every cut: a plan computed before it is dropped
        self._limits_seen = 0  # bumped by every limit change: a plan computed for older limits is stale
        self._stale_dropped = False  # the last plan was dropped as stale (the next one is never dropped)
        self._first_request: float | None = None
        self._last_cycle_end = 0.0
        self._last_cycle_s = 0.0
        self._planning: asyncio.Task[None] | None = None
        self._live: dict[Wave, float] = {}  # waves in flight -> when each was launched (monotonic)
        self._beside_at = 0.0  # when the last plan beside a wave in flight started (monotonic)
        self._waves: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._idle = asyncio.Event()

    # Lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="grid controller")
        self.request("start")

    async def stop(self) -> None:
        self._stopping = True
        tasks = [t for t in (self._task, self._planning, *self._waves) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._planning = None
        self._live.clear()

    def request(self, reason: str) -> None:
        """Ask for a re-plan soon (coalesced)."""
        if not self._reasons:
            self._first_request = time.monotonic()
        self._reasons.add(reason)
        self._idle.clear()
        self._wake.set()

    def limit_changed(self, tid: str | None, kind: str) -> None:
        """A limit (or safe mode) changed for ``tid`` (None: unknown group, check all): cut if stricter."""
        watch = _LimitWatch(time.monotonic(), tid, kind)
        self._limits_seen += 1
        self._watches.append(watch)
        self._unchecked.append(watch)
        if self._live and self._stricter([watch]):
            self._supersede()  # nothing more of the old waves goes out, not even the next chunk
        self.request(kind)

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until no re-plan is pending (for tests, the demo and the API's "apply now")."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    # The loop ------------------------------------------------------------------------------------
    async def _run(self) -> None:
        """Orchestrates, never waits on stations: cuts start at once (superseding any wave in
        flight), re-plans are coalesced (a debounce, then at most one plan computing, none while a
        wave younger than ``OVERLAP_AFTER_S`` is in flight, spaced by how long the last cycle took,
        always from the latest state)."""
        interval = self.grid.planning.replan_interval_s
        next_periodic = time.monotonic() + interval
        while not self._stopping:
            wake_at = next_periodic
            if self._plan_ready():
                wake_at = min(wake_at, self._plan_at())
            elif self._reasons and self._planning is None and len(self._live) == 1:
                wake_at = min(wake_at, self._overlap_at())
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
            if not (self._reasons or self._unchecked or self._planning is not None or self._live):
                self._idle.set()

    def _busy(self) -> bool:
        """A plan is computing, or a wave holds the next plan back: a wave holds it until it ends,
        unless it has been in flight for ``OVERLAP_AFTER_S`` (then a plan for the newcomers may go
        out beside it, one per ``OVERLAP_AFTER_S``). So one slow or silent station delays the
        others' next plan by seconds, not by its call timeout, and a large wave (30,000 pushes after
        a failover) does not keep stations that got ready meanwhile waiting for all of it."""
        if self._planning is not None:
            return True
        if len(self._live) > 1:
            return True
        return bool(self._live) and time.monotonic() < self._overlap_at()

    def _overlap_at(self) -> float:
        """When a plan may go out beside the wave in flight (the one wave of ``_live``)."""
        launched = max(self._live.values(), default=0.0)
        return max(launched, self._beside_at) + OVERLAP_AFTER_S

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

    # Cuts ----------------------------------------------------------------------------------------
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
        self._supersede()
        units = self.planner.cut(now, stricter)
        groups = set(stricter)
        self._launch(self.dispatcher.decide(units, now, "cut"),
                     resolve=lambda w: w.received_mono <= started and (w.tid is None or w.tid in groups))
        self.request("cut")

    def _supersede(self) -> None:
        """Nothing more of the waves in flight goes out; they hold no plan back any more (only their
        calls already on the wire finish)."""
        for wave in self._live:
            wave.supersede()
        self._live.clear()

    def _stricter(self, watches: list[_LimitWatch]) -> list[str]:
        """Groups named by ``watches`` whose limit in force is now below what was planned (cheap)."""
        now = self.clock()
        tids = {w.tid for w in watches}
        if None in tids:
            tids = set(self.grid.transformers)
        stricter = []
        for tid in sorted(t for t in tids if t is not None):
            limit, _ = self.limits.limit_at(tid, now)
            state = self.views.groups.get(tid)
            if state is None or state.planned_at is None or limit < state.limit_kw - 1e-9 \
                    or state.planned_kw + state.base_load_kw > limit + 1e-6:
                stricter.append(tid)
        return stricter

    # Plans ---------------------------------------------------------------------------------------
    async def _plan_and_push(self, reasons: list[str]) -> None:
        generation, limits_seen = self._generation, self._limits_seen
        cycle_start = time.monotonic()
        self.verification.check_resumes()
        now = self.clock()
        started = time.perf_counter()
        # Beside a wave still in flight (a slow one, see _busy) only the newcomers are planned: every
        # session that holds a schedule, or has one on the wire, keeps it (budgeted at its peak).
        beside = bool(self._live)
        if beside:
            self._beside_at = cycle_start
        hold = self.dispatcher.holding(now) if beside else None
        if hold is not None and not self.dispatcher.newcomers(hold):
            self._reasons.update(reasons)  # nobody to plan beside the wave: the full plan follows it
            self._first_request = self._first_request or time.monotonic()
            return
        units: list[GroupPlan] = await self.planner.refine(now, list(self.grid.transformers), hold)
        self.metrics.plan_s.observe(time.perf_counter() - started)
        stale = limits_seen != self._limits_seen and not self._stale_dropped
        if generation != self._generation or stale or self._stopping:
            # A limit changed while planning: plan again from the new state. A looser limit needs no
            # cut, but a whole wave for the old one would delay the plan for the new one by as much;
            # dropped once in a row at most, so limits changing faster than plans cannot starve them.
            self._stale_dropped = stale and generation == self._generation
            self._reasons.update(reasons)
            self._first_request = self._first_request or time.monotonic()
            return
        self._stale_dropped = False
        self.plans += 1
        if beside:
            # The held sessions still run an older plan: the full plan follows once the wave has ended,
            # for the same reasons, and it (not this one) answers the limit changes.
            self._reasons.update(reasons)
            self._first_request = self._first_request or time.monotonic()
            self._launch(self.dispatcher.decide(units, now, "plan", reasons, newcomers=True),
                         cycle_start=cycle_start, resolve=lambda w: False)
            return
        self._launch(self.dispatcher.decide(units, now, "plan", reasons),
                     cycle_start=cycle_start, resolve=lambda w: w.received_mono <= cycle_start)

    # Waves ---------------------------------------------------------------------------------------
    def _launch(self, dispatch: Dispatch, *, resolve: Callable[[_LimitWatch], bool],
                cycle_start: float | None = None) -> None:
        """Start the wave as its own task (the loop goes on; a stricter limit may supersede it)."""
        wave = Wave(dispatch.kind)
        self._live[wave] = time.monotonic()
        task = asyncio.get_running_loop().create_task(self._run_wave(wave, dispatch, resolve, cycle_start),
                                                      name=f"grid {dispatch.kind} wave")
        task.add_done_callback(self._task_done)
        self._waves.add(task)
        task.add_done_callback(self._waves.discard)

    async def _run_wave(self, wave: Wave, dispatch: Dispatch, resolve: Callable[[_LimitWatch], bool],
                        cycle_start: float | None) -> None:
        started = time.monotonic()
        try:
            results = await self.dispatcher.run(dispatch, wave)
            self._timed(dispatch.kind, time.monotonic() - started, results)
            if not wave.superseded:
                self._resolve_watches(resolve, results, dispatch.kind)
        finally:
            self._live.pop(wave, None)
            if cycle_start is not None:
                self._last_cycle_end = time.monotonic()
                self._last_cycle_s = self._last_cycle_end - cycle_start

    def _timed(self, kind: str, seconds: float, results: list[PushResult]) -> None:
        """Record how long the wave took; a slow one says which push held it (it held the next plan
        back for ``OVERLAP_AFTER_S``, and everything beyond the newcomers until it ended)."""
        self.metrics.wave_s.labels(kind).observe(seconds)
        if seconds < SLOW_WAVE_S or not results:
            return
        slowest = max(results, key=lambda r: r.seconds)
        failed = sum(r.status not in ("Accepted", "Rejected", "superseded") for r in results)
        log.warning("grid %s wave took %.1f s: %d pushes (%d failed), slowest %.1f s to %s (%s)", kind, seconds,
                    len(results), failed, slowest.seconds, slowest.station_id, slowest.status)

    def _resolve_watches(self, covered: Callable[[_LimitWatch], bool], results: list[PushResult], by: str) -> None:
        """Limit changes now answered by pushes: record the reaction time (received -> all answered)."""
        done = time.monotonic()
        keep = []
        for w in self._watches:
            if not covered(w):
                keep.append(w)
                continue
            seconds = done - w.received_mono
            self.metrics.reaction.observe(seconds)
            self.reaction_s.append(seconds)
            self.journal.record("reaction", transformer=w.tid, seconds=round(seconds, 4), by=by, pushes=len(results),
                                accepted=sum(r.status == "Accepted" for r in results))
        self._watches = keep
