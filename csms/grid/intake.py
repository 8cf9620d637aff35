"""The limit intake: the one door every limit signal goes through, and the safe-mode watchdog.

Signal sources (MQTT, the OpenADR 3 VEN, the UFTP aggregator) and the operator API hand signals to
:meth:`LimitDesk.accept` / :meth:`LimitDesk.submit`; each is validated with the same rules
(csms.grid.model.limits.parse_signal), applied to the limit book under its ``source`` name, and
answered on the status channel. A watchdog puts a group into safe mode when it expects signals
and none came for ``signal_timeout_s``, or when a source reports an outage (its broker has been
unreachable longer than its grace period); every group that expects signals depends on every
source. Everything decided is said three ways: a log line, a metric and a bus event (plus the
status channel).

Only live messages count as a sign of life: a retained message redelivered on (re)subscription is
applied if valid, but says nothing about whether the source is still talking.

What it decides is durable (csms/grid/effects/memory.py): every accepted signal and each group's
safe-mode causes and last sign of life are stored, the operator API answers only once they are,
and :meth:`LimitDesk.restore` puts them back before the first plan after a start. A group that was
in safe mode for silence stays in it until a live signal arrives (no fresh grace period); one that
was in safe mode because a source was unreachable stays until that source reports back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import datetime
from typing import Any

from csms.domain.events import LimitChanged, SafeModeChanged, SignalRejected
from csms.grid.config import GridConfig
from csms.grid.effects.memory import SAFE_MODE, SIGNAL, GridMemory, signal_key
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
                 now: Clock, memory: GridMemory | None = None) -> None:
        self.grid = grid
        self.memory = memory
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
        self._restored_silence: set[str] = set()  # in safe mode for silence before the restart
        self._unconfirmed: dict[str, set[str]] = {}  # restored source causes, held until the source is back

    async def restore(self) -> None:
        """Before :meth:`start`: put back the signals in force and the safe-mode state stored before
        the last stop (or crash). Ended signals and records that no longer fit the config are dropped."""
        if self.memory is None:
            return
        now = self._now()
        for key, record in (await self.memory.load(SIGNAL)).items():
            try:
                signal = LimitSignal.from_record(record)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("grid: stored limit signal %s is unreadable (%s); dropped", key, exc)
                self.memory.delete(SIGNAL, key)
                continue
            if signal.transformer_id not in self.grid.transformers or (signal.ends_at is not None
                                                                       and signal.ends_at <= now):
                self.memory.delete(SIGNAL, key)
                continue
            self.book.restore(signal)
            log.info("grid %s: restored limit signal %r of %s (until %s)", signal.transformer_id, signal.signal_id,
                     signal.source, signal.ends_at.isoformat() if signal.ends_at else "replaced")
        for tid, record in (await self.memory.load(SAFE_MODE)).items():
            group = self.grid.transformers.get(tid)
            if group is None or not group.expects_signals or not isinstance(record, dict):
                self.memory.delete(SAFE_MODE, tid)
                continue
            heard = record.get("last_heard")
            if isinstance(heard, str):
                try:
                    self.book.mark_heard(tid, datetime.fromisoformat(heard))
                except ValueError:
                    pass
            causes = {str(k): str(v) for k, v in (record.get("causes") or {}).items()}
            if not causes:
                continue
            self._causes[tid].update(causes)
            for cause in causes:
                if cause == "silence":
                    self._restored_silence.add(tid)
                elif cause.startswith("source:"):
                    self._unconfirmed.setdefault(tid, set()).add(cause)
            text = "; ".join(causes.values())
            self.book.set_safe_mode(tid, True, text)
            self.metrics.safe_mode.labels(tid).set(1)
            log.warning("grid %s: SAFE MODE ON, restored (%s): safe limit %g kW applies", tid, text,
                        group.safe_limit_kw)

    async def start(self) -> None:
        now = self._now()
        self._started_at = now
        for tid in self.grid.transformers:
            self.metrics.safe_mode.labels(tid).set(1 if self.book.in_safe_mode(tid) else 0)
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
        """Validate, apply and store a signal exactly as if it arrived live from a source."""
        return await self.accept(transformer_id, payload, live=True, via="api")

    async def clear(self, transformer_id: str, source: str) -> LimitSignal | None:
        """Take the signal of ``source`` out of force for good (stored); None when there was none.
        Raises KeyError for an unknown group."""
        if not self.knows(transformer_id):
            raise KeyError(f"unknown transformer {transformer_id!r}")
        removed = self.book.remove(transformer_id, source)
        if removed is None:
            return None
        log.info("grid %s: limit signal %r of %s cleared", transformer_id, removed.signal_id, source)
        write = self.memory.delete(SIGNAL, signal_key(transformer_id, source)) if self.memory else None
        self._refresh(transformer_id, self._now(), force=True)
        if write is not None:
            await write
        return removed

    # Signals ------------------------------------------------------------------------------------
    async def accept(self, tid: str, payload: bytes | str | dict[str, Any], *, live: bool, via: str) -> LimitSignal:
        """Validate and apply one signal, then store it; ``live``: a live message (a sign of life of its
        source), not a retained one redelivered on (re)subscription. Raises SignalError (already
        reported)."""
        try:
            signal = parse_signal(payload, tid, self._now(), grid=self.grid)
        except SignalError as exc:
            self._reject(tid, exc.reason, exc.signal_id, via)
            raise
        await self._admit(tid, signal, live=live, via=via)
        return signal

    async def put_signal(self, signal: LimitSignal, *, via: str) -> bool:
        """Apply, then store a signal a source built and validated itself (a UFTP order: its source
        ``uftp:<order>`` is outside what a JSON payload may name, so no MQTT or API sender can
        touch it); False for an identical re-send. Not a sign of life for silence (that is the live
        channels' business). Raises SignalError (reported)."""
        return await self._admit(signal.transformer_id, signal, live=False, via=via)

    async def _admit(self, tid: str, signal: LimitSignal, *, live: bool, via: str) -> bool:
        """In force at once, answered once stored. A limit must not wait for the store (its write
        may queue behind others; at 10,000 sessions that cost seconds), and acting on it early is
        safe: a crash before it is stored restores the previous limit, and the source, not answered,
        sends it again (docs/decisions.md). Nothing awaits between the check, the apply and the
        queued write, so signals land in the store in the order they took effect."""
        try:
            applied = self.book.apply(signal)
        except SignalError as exc:
            self._reject(tid, exc.reason, exc.signal_id, via)
            raise
        write = None
        if applied and self.memory is not None:
            write = self.memory.put(SIGNAL, signal_key(tid, signal.source), signal.to_record())
        self._take_effect(tid, signal, applied, live=live)  # the controller hears of it here
        not_stored = await self._stored(write)
        self._answer(tid, signal, applied, via)
        if not_stored is not None:
            raise not_stored  # in force, but a restart would forget it: the caller must not acknowledge
        return applied

    async def _stored(self, write: asyncio.Future[None] | None) -> Exception | None:
        """Wait for the signal's write and the safe-mode write it caused (the limit lane only);
        the signal's store failure, if any (the grid comes first: it stays in force)."""
        if self.memory is None:
            return None
        failed: Exception | None = None
        if write is not None:
            try:
                await write
            except Exception as exc:  # noqa: BLE001 - reported to the caller, after the answer
                failed = exc
        await self.memory.flush_limits()
        return failed

    def _take_effect(self, tid: str, signal: LimitSignal, applied: bool, *, live: bool) -> None:
        now = self._now()
        if live:
            self.book.mark_heard(tid, now)
            self._restored_silence.discard(tid)
            self._set_cause(tid, "silence", None, now)
            if self.grid.transformers[tid].expects_signals:
                self._save_safe_mode(tid)
        if applied:
            self._refresh(tid, now, signal_id=signal.signal_id, force=True)

    def _answer(self, tid: str, signal: LimitSignal, applied: bool, via: str) -> None:
        """The verdict on the status channel, the metric and the log line: once the signal is stored."""
        now = self._now()
        outcome = "accepted" if applied else "duplicate"
        self.metrics.signals.labels(tid, outcome).inc()
        self._signal_status(tid, signal.signal_id, outcome, None, now)
        if applied:
            current = signal.limit_at(now)
            log.info("grid %s: %s signal %r from %s via %s (now %s kW)", tid, outcome, signal.signal_id,
                     signal.source, via, "-" if current is None else f"{current:g}")

    def refuse(self, tid: str, reason: str, signal_id: str | None, via: str) -> None:
        """Report a message a source refused before it became a signal (same log, metric, event)."""
        self._reject(tid, reason, signal_id, via)

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
    def _set_cause(self, tid: str, cause: str, reason: str | None, now: datetime) -> None:
        """Add or clear one cause of safe mode; the switch itself follows once the new causes are
        stored (a few milliseconds), so what the operator sees is what a restart would restore."""
        causes = self._causes[tid]
        if reason is None:
            if causes.pop(cause, None) is None:
                return
        elif causes.get(cause) == reason:
            return
        else:
            causes[cause] = reason
        write = self._save_safe_mode(tid)
        if write is None:
            self._switch(tid, cause)
        else:
            write.add_done_callback(lambda _: self._switch(tid, cause))

    def _switch(self, tid: str, cause: str) -> None:
        """Put the group in (or out of) safe mode as its causes now say; said loudly."""
        causes = self._causes[tid]
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
        self._refresh(tid, self._now())

    def _save_safe_mode(self, tid: str) -> asyncio.Future[None] | None:
        if self.memory is None:
            return None
        heard = self.book.last_heard(tid)
        return self.memory.put(SAFE_MODE, tid, {"causes": dict(self._causes[tid]),
                                                "last_heard": None if heard is None else heard.isoformat()})

    def recheck(self, source: str | None = None) -> None:
        """Judge liveness now (a source calls this when it (re)connects, naming itself, to clear its
        outage at once, including one restored from before a restart)."""
        for held in self._unconfirmed.values():
            if source is None:
                held.clear()
            else:
                held.discard(f"source:{source}")
        self._check_liveness(self._now())

    def _check_liveness(self, now: datetime) -> None:
        outages = [(source.name, source.outage(now)) for source in self.sources]
        for tid, group in self.grid.transformers.items():
            if not group.expects_signals:
                continue
            # Silent before the restart: no new grace period, only a live signal ends it.
            since = None if tid in self._restored_silence else self._started_at
            if self.book.is_silent(tid, now, since=since):
                heard = self.book.last_heard(tid)
                what = f"last at {heard.isoformat()}" if heard else "none since start"
                self._set_cause(tid, "silence", f"no limit signal for more than {group.signal_timeout_s:g} s "
                                                f"({what})", now)
            else:
                self._set_cause(tid, "silence", None, now)
            for name, outage in outages:
                cause = f"source:{name}"
                if outage is None and cause in self._unconfirmed.get(tid, ()):
                    continue  # restored: held until the source reports back (recheck)
                self._set_cause(tid, cause, outage, now)

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
                for gone in self.book.prune(now):
                    if self.memory is not None:
                        self.memory.delete(SIGNAL, signal_key(gone.transformer_id, gone.source))
                for tid in self.grid.transformers:
                    self._refresh(tid, now)
            except Exception:  # noqa: BLE001 - the watchdog must outlive a bug in one pass
                log.exception("grid watchdog pass failed")
            await asyncio.sleep(tick)
