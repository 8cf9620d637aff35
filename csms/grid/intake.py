"""The limit intake: the one door every limit signal goes through, and the safe-mode watchdog.

Signal sources (MQTT today; OpenADR 3 and UFTP next) and the operator API hand signals to
:meth:`LimitDesk.accept` / :meth:`LimitDesk.submit`; each is validated with the same rules
(csms.grid.model.limits.parse_signal), applied to the limit book under its ``source`` name, and
answered on the status channel. A watchdog puts a group into safe mode when it expects signals
and none came for ``signal_timeout_s``, or when a source reports an outage (its broker has been
unreachable longer than its grace period); every group that expects signals depends on every
source. Everything decided is said three ways: a log line, a metric and a bus event (plus the
status channel).

Only live messages count as a sign of life: a retained message redelivered on (re)subscription is
applied if valid, but says nothing about whether the source is still talking.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import datetime
from typing import Any

from csms.domain.events import LimitChanged, SafeModeChanged, SignalRejected
from csms.grid.config import GridConfig
from csms.grid.metrics import SignalMetrics
from csms.grid.model.limits import LimitBook, LimitSignal, SignalError, parse_base_load, parse_signal
from csms.grid.ports import StatusSink
from csms.interfaces import Bus, Clock, SignalSource
from csms.tasks import cancel_and_wait

log = logging.getLogger("csms.grid.signals")

MAX_TICK_S = 1.0  # contract windows start and end on the minute: a second late is fine
MIN_TICK_S = 0.05
RECENT_REJECTIONS = 50
# Measured non-EV load beyond this many times the rated capacity is a unit mistake, not a reading.
BASE_LOAD_SANITY_FACTOR = 10.0


class LimitDesk:
    """Component (start/stop: the watchdog) and :class:`csms.interfaces.LimitIntake`."""

    def __init__(self, grid: GridConfig, book: LimitBook, bus: Bus, status: StatusSink, metrics: SignalMetrics,
                 now: Clock) -> None:
        self.grid = grid
        self.book = book
        self.bus = bus
        self.status = status
        self.metrics = metrics
        self.sources: list[SignalSource] = []  # whose outages count (added by the assembly)
        self.recent_rejections: deque[dict[str, Any]] = deque(maxlen=RECENT_REJECTIONS)
        self._now = now
        self._started_at: datetime | None = None
        self._causes: dict[str, dict[str, str]] = {tid: {} for tid in grid.transformers}
        self._in_force: dict[str, tuple[float, str]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        now = self._now()
        self._started_at = now
        for tid in self.grid.transformers:
            self.metrics.safe_mode.labels(tid).set(0)
            self._refresh(tid, now, announce=False)
        self._tasks.append(asyncio.create_task(self._watchdog(), name="grid signal watchdog"))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()

    # csms.interfaces.LimitIntake (the operator API's "post a limit") -----------------------------
    def knows(self, transformer_id: str) -> bool:
        return transformer_id in self.grid.transformers

    @property
    def transformer_ids(self) -> list[str]:
        return list(self.grid.transformers)

    async def submit(self, transformer_id: str, payload: bytes | str | dict[str, Any]) -> LimitSignal:
        """Validate and apply a signal exactly as if it arrived live from a source."""
        return self.accept(transformer_id, payload, live=True, via="api")

    # Signals ------------------------------------------------------------------------------------
    def accept(self, tid: str, payload: bytes | str | dict[str, Any], *, live: bool, via: str) -> LimitSignal:
        """Validate and apply one signal; ``live``: a live message (a sign of life of its source),
        not a retained one redelivered on (re)subscription. Raises SignalError (already reported)."""
        now = self._now()
        try:
            signal = parse_signal(payload, tid, now, grid=self.grid)
            applied = self.book.apply(signal)
        except SignalError as exc:
            self._reject(tid, exc.reason, exc.signal_id, via)
            raise
        if live:
            self.book.mark_heard(tid, now)
            self._set_cause(tid, "silence", None, now)
        outcome = "accepted" if applied else "duplicate"
        self.metrics.signals.labels(tid, outcome).inc()
        self._signal_status(tid, signal.signal_id, outcome, None, now)
        if applied:
            current = signal.limit_at(now)
            log.info("grid %s: %s signal %r from %s via %s (now %s kW)", tid, outcome, signal.signal_id,
                     signal.source, via, "-" if current is None else f"{current:g}")
            self._refresh(tid, now, signal_id=signal.signal_id, force=True)
        return signal

    def _reject(self, tid: str, reason: str, signal_id: str | None, via: str) -> None:
        now = self._now()
        known = tid in self.grid.transformers
        log.warning("grid %s: rejected limit signal %s via %s: %s", tid, repr(signal_id) if signal_id else "(no id)",
                    via, reason)
        self.metrics.signals.labels(tid if known else "unknown", "rejected").inc()
        self.recent_rejections.append({"transformer_id": tid, "signal_id": signal_id, "reason": reason, "at": now,
                                       "via": via})
        self.bus.publish(SignalRejected(transformer_id=tid, reason=reason, signal_id=signal_id))
        self._signal_status(tid, signal_id, "rejected", reason, now)

    def _signal_status(self, tid: str, signal_id: str | None, outcome: str, reason: str | None, now: datetime) -> None:
        self.status.signal_verdict(tid, {"transformer_id": tid, "signal_id": signal_id, "status": outcome,
                                         "reason": reason, "at": now})

    def base_load(self, tid: str, payload: bytes | str) -> None:
        """A measured non-EV load (a bare number in kW, or {"kw", "timestamp"}); a bad one is reported and ignored."""
        now = self._now()
        group = self.grid.transformers.get(tid)
        try:
            if group is None:
                raise SignalError(f"unknown transformer {tid!r}")
            kw, at = parse_base_load(payload, now)
            if abs(kw) > BASE_LOAD_SANITY_FACTOR * group.capacity_kw:
                raise SignalError(f"base load {kw:g} kW is implausible for capacity {group.capacity_kw:g} kW "
                                  f"(wrong unit?)")
            if (now - at).total_seconds() > group.base_load.max_age_s:
                raise SignalError(f"stale base load: measured at {at.isoformat()}, more than "
                                  f"{group.base_load.max_age_s:g} s ago")
        except SignalError as exc:
            log.warning("grid %s: ignored base-load message: %s", tid, exc.reason)
            self.status.signal_verdict(tid, {"transformer_id": tid, "kind": "base_load", "status": "rejected",
                                             "reason": exc.reason, "at": now})
            return
        at = min(at, now)  # a clock running ahead must not make the reading "fresh" for longer
        self.book.set_measured_base_load(tid, kw, at)
        self.status.publish(tid, {"base_load_kw": kw, "base_load_at": at})

    # Safe mode ----------------------------------------------------------------------------------
    # Safe mode ----------------------------------------------------------------------------------
    def _set_cause(self, tid: str, cause: str, reason: str | None, now: datetime) -> None:
        causes = self._causes[tid]
        if reason is None:
            if causes.pop(cause, None) is None:
                return
        elif causes.get(cause) == reason:
            return
        else:
            causes[cause] = reason
        on = bool(causes)
        text = "; ".join(causes.values()) if on else f"{cause} cleared"
        if not self.book.set_safe_mode(tid, on, text):
            return
        self.metrics.safe_mode.labels(tid).set(1 if on else 0)
        group = self.grid.transformers[tid]
        if on:
            log.warning("grid %s: SAFE MODE ON (%s): safe limit %g kW applies", tid, text, group.safe_limit_kw)
        else:
            log.warning("grid %s: safe mode off (%s)", tid, text)
        self.bus.publish(SafeModeChanged(transformer_id=tid, on=on, reason=text))
        self._refresh(tid, now)

    def recheck(self) -> None:
        """Judge liveness now (a source calls this when it (re)connects, to clear its outage at once)."""
        self._check_liveness(self._now())

    def _check_liveness(self, now: datetime) -> None:
        outages = [(source.name, source.outage(now)) for source in self.sources]
        for tid, group in self.grid.transformers.items():
            if not group.expects_signals:
                continue
            if self.book.is_silent(tid, now, since=self._started_at):
                heard = self.book.last_heard(tid)
                what = f"last at {heard.isoformat()}" if heard else "none since start"
                self._set_cause(tid, "silence", f"no limit signal for more than {group.signal_timeout_s:g} s "
                                                f"({what})", now)
            else:
                self._set_cause(tid, "silence", None, now)
            for name, outage in outages:
                self._set_cause(tid, f"source:{name}", outage, now)

    # Limit in force -------------------------------------------------------------------------------
    def _refresh(self, tid: str, now: datetime, *, signal_id: str | None = None, force: bool = False,
                 announce: bool = True) -> None:
        """Recompute the limit in force; publish status, metric and (on change) the bus event."""
        kw, source = self.book.limit_at(tid, now)
        changed = self._in_force.get(tid) != (kw, source)
        if not (changed or force):
            return
        self._in_force[tid] = (kw, source)
        self.metrics.limit_kw.labels(tid).set(kw)
        signals = [{"signal_id": s.signal_id, "source": s.source, "limit_kw": s.limit_at(now), "until": s.ends_at}
                   for s in self.book.signals(tid)]
        self.status.publish(tid, {"capacity_kw": self.grid.transformers[tid].capacity_kw, "limit_kw": kw,
                                  "limit_source": source, "safe_mode": self.book.in_safe_mode(tid),
                                  "safe_mode_reason": self.book.safe_mode_reason(tid), "signals": signals,
                                  "last_signal_at": self.book.last_heard(tid)})
        if announce:
            if changed:
                log.info("grid %s: limit in force %g kW (%s)", tid, kw, source)
            self.bus.publish(LimitChanged(transformer_id=tid, limit_kw=kw, source=source, signal_id=signal_id))

    def _tick_s(self) -> float:
        candidates = [MAX_TICK_S]
        for group in self.grid.transformers.values():
            if group.signal_timeout_s is not None:
                candidates.append(group.signal_timeout_s / 4)
        if self.grid.mqtt is not None:
            candidates.append(self.grid.mqtt.broker_grace_s / 4)
        return max(MIN_TICK_S, min(candidates))

    async def _watchdog(self) -> None:
        """Silence and source outages put groups in safe mode; contract windows start and end."""
        tick = self._tick_s()
        while True:
            now = self._now()
            try:
                self._check_liveness(now)
                self.book.prune(now)
                for tid in self.grid.transformers:
                    self._refresh(tid, now)
            except Exception:  # noqa: BLE001 - the watchdog must outlive a bug in one pass
                log.exception("grid watchdog pass failed")
            await asyncio.sleep(tick)
