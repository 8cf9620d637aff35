"""Each capacity group's state on MQTT, for systems that follow the central system (DSO, dashboards).

Two kinds of messages go out:
- the state of a group, retained, on `<prefix>/grid/<group>/status`. Several writers fill it (the
  signal listener: limit and safe mode; the controller: measured and planned load, sessions), so
  `publish` merges the given keys into the group's last state and sends the whole state. While
  the broker is down only the latest state is kept, and sent once it is back;
- events (the verdict on each limit signal), not retained, on `<prefix>/grid/<group>/signal-status`.
  These are dropped while the broker is down: a verdict delivered minutes later misleads more
  than it helps.

`publish` never blocks and never raises because of the broker: the controller calls it inside its
planning loop. It is the :class:`csms.grid.ports.StatusSink` of the grid; the MQTT signal source
pumps it into its broker connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

log = logging.getLogger(__name__)

MAX_QUEUED_EVENTS = 1000


@dataclass(frozen=True)
class Topics:
    """The documented topic layout (see docs/grid-control.md)."""

    prefix: str = "netbewust"

    def limit(self, transformer_id: str) -> str:
        return f"{self.prefix}/grid/{transformer_id}/limit"

    def base_load(self, transformer_id: str) -> str:
        return f"{self.prefix}/grid/{transformer_id}/base-load"

    def signal_status(self, transformer_id: str) -> str:
        return f"{self.prefix}/grid/{transformer_id}/signal-status"

    def status(self, transformer_id: str) -> str:
        return f"{self.prefix}/grid/{transformer_id}/status"

    @property
    def availability(self) -> str:
        """"online"/"offline" (retained; "offline" is also the broker-sent last will)."""
        return f"{self.prefix}/csms/availability"

    @property
    def inbound_filters(self) -> tuple[str, str]:
        return f"{self.prefix}/grid/+/limit", f"{self.prefix}/grid/+/base-load"

    def parse_inbound(self, topic: str) -> tuple[str, str] | None:
        """(group id, "limit" | "base-load") for an inbound topic, else None."""
        head = f"{self.prefix}/grid/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head):].split("/")
        if len(parts) != 2 or not parts[0] or parts[1] not in ("limit", "base-load"):
            return None
        return parts[0], parts[1]


class Publisher(Protocol):
    """The slice of aiomqtt.Client the pump needs (tests may pass a fake)."""

    async def publish(self, topic: str, payload: Any = None, qos: int = 0, retain: bool = False) -> None: ...


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, default=_json_default, separators=(",", ":"), allow_nan=False).encode()


def _encode_or_log(topic: str, payload: dict[str, Any]) -> bytes | None:
    try:
        return encode(payload)
    except (TypeError, ValueError) as exc:  # e.g. NaN from a caller: never poison the pump
        log.error("not publishing %s: cannot encode the state as JSON (%s)", topic, exc)
        return None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class StatusPublisher:
    def __init__(self, topics: Topics | None, *, qos: int = 1, now: Callable[[], datetime] = utc_now) -> None:
        self.topics = topics  # None: no broker configured; state is only kept in memory
        self.qos = qos
        self._now = now
        self._states: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        self._events: deque[tuple[str, dict[str, Any]]] = deque(maxlen=MAX_QUEUED_EVENTS)
        self._wake = asyncio.Event()
        self._attached = False
        self.sent = 0  # messages handed to the broker (for tests and metrics)

    # Called by the controller and the listener --------------------------------------------------
    def publish(self, transformer_id: str, state: dict[str, Any]) -> None:
        """Merge `state` into the group's retained status and send it when the broker is reachable."""
        merged = self._states.setdefault(transformer_id, {"transformer_id": transformer_id})
        merged.update(state)
        merged["updated_at"] = self._now()
        self._dirty.add(transformer_id)
        self._wake.set()

    def event(self, topic: str, payload: dict[str, Any]) -> None:
        """Send a non-retained message now-ish; dropped when the broker is not connected."""
        if not self._attached:
            return
        self._events.append((topic, payload))
        self._wake.set()

    def signal_verdict(self, transformer_id: str, verdict: dict[str, Any]) -> None:
        """The verdict on one limit signal, on ``<prefix>/grid/<group>/signal-status`` (not retained)."""
        if self.topics is not None:
            self.event(self.topics.signal_status(transformer_id), verdict)

    def snapshot(self, transformer_id: str) -> dict[str, Any]:
        """The group's current merged state (what the retained message says or will say)."""
        return dict(self._states.get(transformer_id, {}))

    # Called by the listener's connection loop ---------------------------------------------------
    async def run(self, client: Publisher) -> None:
        """Pump states and events into `client` until cancelled or the client fails (MqttError)."""
        if self.topics is None:
            return
        self._attached = True
        self._dirty.update(self._states)  # the broker may have lost retained messages meanwhile
        try:
            while True:
                self._wake.clear()
                while self._events:
                    topic, payload = self._events.popleft()
                    body = _encode_or_log(topic, payload)
                    if body is not None:
                        await client.publish(topic, body, qos=self.qos, retain=False)
                        self.sent += 1
                while self._dirty:
                    tid = self._dirty.pop()
                    topic = self.topics.status(tid)
                    body = _encode_or_log(topic, self._states[tid])
                    if body is None:
                        continue
                    try:
                        await client.publish(topic, body, qos=self.qos, retain=True)
                    except BaseException:
                        self._dirty.add(tid)  # keep it for the next connection
                        raise
                    self.sent += 1
                await self._wake.wait()
        finally:
            self._attached = False
            self._events.clear()
