"""The MQTT signal source: limits and base loads in, each group's status and our availability out.

It subscribes to ``<prefix>/grid/+/limit`` and ``<prefix>/grid/+/base-load`` and hands every
message to the limit intake (csms/grid/intake.py), which validates it with the same rules as the
operator API. It reconnects with backoff, publishes a retained "online"/"offline" (also the
broker's last will) on ``<prefix>/csms/availability``, pumps the status publisher into the
connection, and reports an outage once the broker has been unreachable for ``broker_grace_s``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from datetime import datetime
from typing import Any, Protocol

import aiomqtt

from csms.grid.config import MqttConfig
from csms.grid.metrics import SignalMetrics
from csms.grid.model.limits import LimitSignal, SignalError
from csms.grid.sources.status import StatusPublisher, Topics
from csms.interfaces import Clock
from csms.tasks import cancel_and_wait

log = logging.getLogger("csms.grid.signals")


class SourceIntake(Protocol):
    """What a signal source hands its messages to (csms.grid.intake.LimitDesk)."""

    async def accept(self, tid: str, payload: bytes | str | dict[str, Any], *, live: bool, via: str) -> LimitSignal: ...

    def base_load(self, tid: str, payload: bytes | str) -> None: ...

    def recheck(self, source: str | None = None) -> None: ...


class MqttSignalSource:
    """A :class:`csms.interfaces.SignalSource` on an MQTT broker (a daemon component)."""

    name = "mqtt"

    def __init__(self, mqtt: MqttConfig, intake: SourceIntake, status: StatusPublisher, metrics: SignalMetrics,
                 now: Clock) -> None:
        self.mqtt = mqtt
        self.intake = intake
        self.status = status
        self.topics = Topics(mqtt.topic_prefix)
        self.metrics = metrics
        self.connected = False
        self._now = now
        self._down_since: datetime | None = None
        self._warned_down = False
        self._tasks: list[asyncio.Task[None]] = []
        self._connected_event = asyncio.Event()

    async def start(self) -> None:
        self._down_since = self._now()  # not connected yet: the grace period runs from the start
        self._tasks.append(asyncio.create_task(self._broker_loop(), name="grid mqtt"))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()

    def outage(self, now: datetime) -> str | None:
        if self._down_since is not None and (now - self._down_since).total_seconds() >= self.mqtt.broker_grace_s:
            return "MQTT broker unreachable"
        return None

    async def wait_connected(self, timeout: float) -> bool:
        """For tests and start-up ordering: whether the broker connection came up within `timeout`."""
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _set_connected(self, up: bool, detail: str = "") -> None:
        now = self._now()
        if up:
            if self.connected:
                return
            self.connected, self._down_since, self._warned_down = True, None, False
            self.metrics.broker_connected.set(1)
            self._connected_event.set()
            log.info("grid: connected to MQTT broker %s:%s", self.mqtt.host, self.mqtt.port)
            self.intake.recheck(self.name)  # clears this source's outage right away
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
        mqtt = self.mqtt
        identifier = mqtt.client_id or f"netbewust-csms-{uuid.uuid4().hex[:12]}"
        delay = mqtt.reconnect_min_s
        failures = 0
        while True:
            try:
                client = aiomqtt.Client(mqtt.host, mqtt.port, identifier=identifier, username=mqtt.username,
                                        password=mqtt.password, keepalive=mqtt.keepalive_s, timeout=10,
                                        will=aiomqtt.Will(self.topics.availability, b"offline", qos=1, retain=True),
                                        clean_session=None if mqtt.client_id is None else False)
                _acknowledge_when_handled(client)
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
        async for message in client.messages:
            try:
                await self._handle(message)
            except Exception:  # noqa: BLE001 - one bad (possibly retained) message must not end the session
                # Not acknowledged: a persistent session gets it again after the next reconnect.
                log.exception("grid: handling an MQTT message on %s failed; message dropped", message.topic.value)
                where = self.topics.parse_inbound(message.topic.value)
                self.metrics.message_errors.labels(where[1] if where else "unknown").inc()
                continue
            if message.qos > 0:
                client._client.ack(message.mid, message.qos)  # stored and in force: now the broker may forget it

    async def _handle(self, message: aiomqtt.Message) -> None:
        where = self.topics.parse_inbound(message.topic.value)
        if where is None:
            return
        tid, kind = where
        raw = message.payload
        payload: bytes | str = bytes(raw) if isinstance(raw, (bytes, bytearray)) else str(raw)
        if kind == "base-load":
            self.intake.base_load(tid, payload)
            return
        if not payload:
            return  # an empty retained message is how a publisher clears its retained signal
        try:
            await self.intake.accept(tid, payload, live=not message.retain, via="mqtt")
        except SignalError:
            pass  # already logged, counted and answered on signal-status


def _acknowledge_when_handled(client: aiomqtt.Client) -> None:
    """Persist before acknowledge: a QoS 1 signal is acknowledged only once it is stored and in
    force, so a crash in between leaves it with the broker, which delivers it again to a persistent
    session (a configured ``client_id``). aiomqtt has no switch for this; its paho client has."""
    client._client.manual_ack_set(True)


async def _quietly(coro: Any, timeout: float = 1.0) -> None:
    try:
        await asyncio.wait_for(coro, timeout)
    except (aiomqtt.MqttError, TimeoutError, OSError):
        pass
