"""Limit signals in, safe mode out: the daemon component that keeps the LimitBook current.

It subscribes to `<prefix>/grid/+/limit` and `<prefix>/grid/+/base-load`, validates every
message with the same rules as the operator API (`submit`), and runs a watchdog that puts a group
into safe mode when its signal source is quiet longer than `signal_timeout_s`, or the broker has
been unreachable longer than `mqtt.broker_grace_s`. Everything it decides is said three ways: a
log line, a metric, and a bus event (plus MQTT status when the broker is there).

Only live messages count as a sign of life: a retained message redelivered on (re)subscription is
applied if valid, but it says nothing about whether the source is still talking.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import aiomqtt
from prometheus_client import CollectorRegistry, Counter, Gauge

from csms.domain.events import LimitChanged, SafeModeChanged, SignalRejected
from csms.interfaces import Bus
from csms.grid.config import GridConfig
from csms.grid.model.limits import LimitBook, LimitSignal, SignalError, decode_payload, parse_signal
from csms.grid.sources.status import StatusPublisher, Topics, utc_now

log = logging.getLogger(__name__)

MAX_TICK_S = 1.0  # contract windows start and end on the minute: a second late is fine
MIN_TICK_S = 0.05
RECENT_REJECTIONS = 50
# Measured non-EV load beyond this many times the rated capacity is a unit mistake, not a reading.
BASE_LOAD_SANITY_FACTOR = 10.0


class GridMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.limit_kw = Gauge("csms_grid_limit_kw", "Limit in force per capacity group", ["transformer"],
                              registry=registry)
        self.safe_mode = Gauge("csms_grid_safe_mode", "1 while a capacity group is in safe mode", ["transformer"],
                               registry=registry)
        self.signals = Counter("csms_grid_signals_total", "Limit signals by outcome", ["transformer", "outcome"],
                               registry=registry)
        self.message_errors = Counter("csms_grid_message_errors_total",
                                      "Inbound MQTT messages whose handling failed unexpectedly (a bug)",
                                      ["kind"], registry=registry)
        self.broker_connected = Gauge("csms_grid_mqtt_connected", "1 while connected to the MQTT broker",
                                      registry=registry)


class SignalListener:
    """A daemon component (async start/stop). `book` and `status` are shared with the controller."""

    def __init__(self, grid: GridConfig, bus: Bus, *, registry: CollectorRegistry | None = None,
                 now: Callable[[], datetime] = utc_now) -> None:
        self.grid = grid
        self.bus = bus
        self.book = LimitBook(grid)
        self.topics = Topics(grid.mqtt.topic_prefix) if grid.mqtt else None
        self.status = StatusPublisher(self.topics, qos=grid.mqtt.qos if grid.mqtt else 1, now=now)
        self.metrics = GridMetrics(registry if registry is not None else CollectorRegistry())
        self.recent_rejections: deque[dict[str, Any]] = deque(maxlen=RECENT_REJECTIONS)
        self.connected = False
        self._now = now
        self._started_at: datetime | None = None
        self._down_since: datetime | None = None
        self._warned_down = False
        self._causes: dict[str, dict[str, str]] = {tid: {} for tid in grid.transformers}
        self._in_force: dict[str, tuple[float, str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._connected_event = asyncio.Event()

    # Lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        now = self._now()
        self._started_at = now
        self._down_since = now if self.grid.mqtt else None
        for tid in self.grid.transformers:
            self.metrics.safe_mode.labels(tid).set(0)
            self._refresh(tid, now, announce=False)
        self._tasks.append(asyncio.create_task(self._watchdog(), name="grid signal watchdog"))
        if self.grid.mqtt is not None:
            self._tasks.append(asyncio.create_task(self._broker_loop(), name="grid mqtt"))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()

    async def wait_connected(self, timeout: float) -> bool:
        """For tests and start-up ordering: whether the broker connection came up within `timeout`."""
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # The operator API's "post a limit" (csms.interfaces.LimitIntake) ------------------------------
    def knows(self, transformer_id: str) -> bool:
        return transformer_id in self.grid.transformers

    @property
    def transformer_ids(self) -> list[str]:
        return list(self.grid.transformers)

    async def submit(self, transformer_id: str, payload: bytes | str | dict[str, Any]) -> LimitSignal:
        """Validate and apply a signal exactly as if it arrived on the group's limit topic."""
        return self._accept(transformer_id, payload, live=True, via="api")

    # Signals ------------------------------------------------------------------------------------
    def _accept(self, tid: str, payload: bytes | str | dict[str, Any], *, live: bool, via: str) -> LimitSignal:
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
        if self.topics is not None:
            self.status.event(self.topics.signal_status(tid), {"transformer_id": tid, "signal_id": signal_id,
                                                               "status": outcome, "reason": reason, "at": now})

    def _base_load(self, tid: str, payload: bytes) -> None:
        now = self._now()
        group = self.grid.transformers.get(tid)
        try:
            if group is None:
                raise SignalError(f"unknown transformer {tid!r}")
            kw, at = _parse_base_load(payload, now)
            if abs(kw) > BASE_LOAD_SANITY_FACTOR * group.capacity_kw:
                raise SignalError(f"base load {kw:g} kW is implausible for capacity {group.capacity_kw:g} kW "
                                  f"(wrong unit?)")
            if (now - at).total_seconds() > group.base_load.max_age_s:
                raise SignalError(f"stale base load: measured at {at.isoformat()}, more than "
                                  f"{group.base_load.max_age_s:g} s ago")
        except SignalError as exc:
            log.warning("grid %s: ignored base-load message: %s", tid, exc.reason)
            if self.topics is not None:
                self.status.event(self.topics.signal_status(tid), {"transformer_id": tid, "kind": "base_load",
                                                                   "status": "rejected", "reason": exc.reason,
                                                                   "at": now})
            return
        at = min(at, now)  # a clock running ahead must not make the reading "fresh" for longer
        self.book.set_measured_base_load(tid, kw, at)
        self.status.publish(tid, {"base_load_kw": kw, "base_load_at": at})

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

    def _check_liveness(self, now: datetime) -> None:
        mqtt = self.grid.mqtt
        broker_down = (mqtt is not None and self._down_since is not None
                       and (now - self._down_since).total_seconds() >= mqtt.broker_grace_s)
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
            self._set_cause(tid, "broker", "MQTT broker unreachable" if broker_down else None, now)

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

    # Broker -------------------------------------------------------------------------------------
    def _set_connected(self, up: bool, detail: str = "") -> None:
        now = self._now()
        if up:
            if self.connected:
                return
            self.connected, self._down_since, self._warned_down = True, None, False
            self.metrics.broker_connected.set(1)
            self._connected_event.set()
            log.info("grid: connected to MQTT broker %s:%s", self.grid.mqtt.host, self.grid.mqtt.port)  # type: ignore[union-attr]
            self._check_liveness(now)  # clears the "broker" cause right away
            return
        if self.connected or not self._warned_down:
            log.warning("grid: MQTT broker unreachable (%s); reconnecting with backoff", detail)
            self._warned_down = True
        if self.connected or self._down_since is None:
            self._down_since = now
        self.connected = False
        self.metrics.broker_connected.set(0)
        self._connected_event.clear()

    async def _broker_loop(self) -> None:
        mqtt = self.grid.mqtt
        assert mqtt is not None and self.topics is not None
        identifier = mqtt.client_id or f"netbewust-csms-{uuid.uuid4().hex[:12]}"
        delay = mqtt.reconnect_min_s
        failures = 0
        while True:
            try:
                client = aiomqtt.Client(mqtt.host, mqtt.port, identifier=identifier, username=mqtt.username,
                                        password=mqtt.password, keepalive=mqtt.keepalive_s, timeout=10,
                                        will=aiomqtt.Will(self.topics.availability, b"offline", qos=1, retain=True))
                async with client:
                    await client.publish(self.topics.availability, b"online", qos=1, retain=True)
                    for topic_filter in self.topics.inbound_filters:
                        await client.subscribe(topic_filter, qos=mqtt.qos)
                    self._set_connected(True)
                    delay, failures = mqtt.reconnect_min_s, 0
                    try:
                        await self._serve(client)
                    except asyncio.CancelledError:
                        await _quietly(client.publish(self.topics.availability, b"offline", qos=1, retain=True))
                        raise
            except aiomqtt.MqttError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # The client's exit raised while we were being cancelled: the error replaced
                    # the CancelledError; honour the cancellation rather than reconnect.
                    raise asyncio.CancelledError from exc
                self._set_connected(False, str(exc) or type(exc).__name__)
            except Exception as exc:  # noqa: BLE001 - a bug must not end the reconnect loop
                log.exception("grid: MQTT session failed")
                self._set_connected(False, repr(exc))
            failures += 1
            if failures > 1:
                log.debug("grid: broker still unreachable after %d attempts; next in %.1f s", failures, delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, mqtt.reconnect_max_s)

    async def _serve(self, client: aiomqtt.Client) -> None:
        pump = asyncio.create_task(self.status.run(client), name="grid status pump")
        consume = asyncio.create_task(self._consume(client), name="grid mqtt consume")
        try:
            done, _ = await asyncio.wait({pump, consume}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raises the MqttError that ended the session
            raise aiomqtt.MqttError("message stream ended")
        finally:
            await cancel_and_wait([pump, consume])

    async def _consume(self, client: aiomqtt.Client) -> None:
        assert self.topics is not None
        async for message in client.messages:
            try:
                self._handle(message)
            except Exception:  # noqa: BLE001 - one bad (possibly retained) message must not end the session
                log.exception("grid: handling an MQTT message on %s failed; message dropped", message.topic.value)
                where = self.topics.parse_inbound(message.topic.value)
                self.metrics.message_errors.labels(where[1] if where else "unknown").inc()

    def _handle(self, message: aiomqtt.Message) -> None:
        assert self.topics is not None
        where = self.topics.parse_inbound(message.topic.value)
        if where is None:
            return
        tid, kind = where
        payload = message.payload if isinstance(message.payload, (bytes, bytearray)) else str(message.payload)
        if kind == "base-load":
            self._base_load(tid, bytes(payload) if isinstance(payload, bytearray) else payload)  # type: ignore[arg-type]
            return
        if not payload:
            return  # an empty retained message is how a publisher clears its retained signal
        try:
            self._accept(tid, payload, live=not message.retain, via="mqtt")
        except SignalError:
            pass  # already logged, counted and answered on signal-status


async def cancel_and_wait(tasks: list[asyncio.Task[Any]], rounds: int = 20, round_s: float = 0.25) -> None:
    """Cancel until every task has ended, re-cancelling on each round.

    On Python 3.11, `asyncio.wait_for` (used inside aiomqtt's publish/subscribe) swallows a
    cancellation that arrives just as the awaited operation completes; one `cancel()` is then lost
    and a plain gather would hang the daemon's shutdown. Bounded: gives up (and logs) after
    `rounds` x `round_s` seconds.
    """
    pending = [t for t in tasks if not t.done()]
    for _ in range(rounds):
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=round_s)
        pending = [t for t in pending if not t.done()]
    if pending:
        log.error("grid: tasks did not stop: %s", ", ".join(t.get_name() for t in pending))


async def _quietly(coro: Any, timeout: float = 1.0) -> None:
    try:
        await asyncio.wait_for(coro, timeout)
    except (aiomqtt.MqttError, TimeoutError, OSError):
        pass


def _parse_base_load(payload: bytes | str, now: datetime) -> tuple[float, datetime]:
    """A bare number (kW) or {"kw": number, "timestamp": ISO 8601}; returns (kW, measured at)."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    try:
        return _finite(float(text.strip())), now
    except ValueError:
        pass
    data = decode_payload(text)
    unknown = sorted(set(data) - {"kw", "timestamp"})
    if unknown:
        raise SignalError(f"unknown field(s) {', '.join(unknown)} (known: kw, timestamp)")
    if "kw" not in data:
        raise SignalError("kw is missing")
    kw = data["kw"]
    if isinstance(kw, bool) or not isinstance(kw, (int, float)):
        raise SignalError(f"kw must be a number, got {kw!r}")
    at = now
    if data.get("timestamp") is not None:
        raw = data["timestamp"]
        try:
            at = datetime.fromisoformat(raw) if isinstance(raw, str) else None  # type: ignore[assignment]
        except ValueError:
            at = None  # type: ignore[assignment]
        if at is None or at.tzinfo is None:
            raise SignalError(f"timestamp must be ISO 8601 with a UTC offset, got {raw!r}")
        try:
            at = at.astimezone(timezone.utc)
        except OverflowError:  # e.g. 9999-12-31T23:59-01:00 lies past year 9999 in UTC
            raise SignalError(f"timestamp is out of range once converted to UTC: {raw!r}") from None
    try:
        value = float(kw)
    except OverflowError:  # a JSON integer of hundreds of digits
        raise SignalError("kw is far too large to be a base load in kW") from None
    return _finite(value), at


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise SignalError(f"base load must be a finite number, got {value!r}")
    return value
