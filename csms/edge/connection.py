"""One websocket connection of one charging station.

Station-initiated CALLs are handled strictly in order, inline on the reader (a station sends the
next CALL only after our answer, and a reader task per station is the cheapest way to hold tens of
thousands of them). Responses to our own calls are matched by message id: only the call in
flight can be resolved, so a late answer to a call that already timed out is logged and dropped,
never matched to the next request. Handlers must therefore never await a call to their own
station; they schedule it with :meth:`StationConnection.after` to run once the answer is sent.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from csms.domain.events import Event
from csms.errorlog import ErrorLog
from csms.interfaces import Bus, MessageGate, Spawner
from csms.metrics import Metrics
from csms.ocpp.package import Router
from csms.protocol import frames, schemas
from csms.protocol.errors import CallTimeout, OcppError, StationOffline
from csms.protocol.redaction import redact_frame, redact_payload
from csms.protocol.version import ProtocolVersion
from csms.store.base import CommandLog, CommandOutcome

log = logging.getLogger("csms.connection")

_ids = itertools.count(1)


@dataclass(slots=True)
class EdgeContext:
    """What every connection of one daemon shares (one object, so an idle connection stays small)."""

    bus: Bus
    metrics: Metrics
    spawner: Spawner
    command_log: CommandLog
    trace: Trace
    last_seen: dict[str, datetime]  # in memory on the hot path; the daemon flushes it to the store
    call_timeout_s: float
    gate: MessageGate | None = None  # per-station CALL rate cap (security config)
    errors: ErrorLog = field(default_factory=ErrorLog)  # one traceback per incident, then counts


class StationConnection:
    """The protocol session with one station over one websocket (a :class:`csms.interfaces.StationLink`)."""

    def __init__(self, edge: EdgeContext, router: Router, websocket: Any, station_id: str,
                 remote: str = "") -> None:
        self.edge = edge
        self.router = router
        self.ws = websocket
        self.station_id = station_id
        self.version = router.version
        self.remote = remote
        self.accepted = False  # may send more than BootNotification (set from the store at connect)
        self.connected_at = datetime.now(timezone.utc)
        self._call_lock = asyncio.Lock()
        self._pending: tuple[str, str, asyncio.Future[dict[str, Any]]] | None = None
        self._after: list[Callable[[], Coroutine[Any, Any, Any]]] = []
        self._events: list[Event] = []
        self.closed = False

    # Reading -----------------------------------------------------------------------------------
    async def serve(self) -> None:
        """Read frames until the socket closes (or the station sends a binary frame)."""
        async for raw in self.ws:
            if not isinstance(raw, str):
                await self._refuse_binary(len(raw))
                return
            await self._on_frame(raw)
            del raw  # an idle station must not keep its last frame alive while we wait

    async def _refuse_binary(self, size: int) -> None:
        """OCPP-J (2.0.1, section 3.1) carries its messages in text frames only: close with 1003."""
        self.edge.metrics.frame_error("BinaryFrame")
        log.warning("%s sent a binary frame (%d bytes); OCPP-J uses text frames only: closing with 1003",
                    self.station_id, size)
        await self.ws.close(1003, "OCPP-J uses text frames only")

    async def _on_frame(self, raw: str) -> None:
        edge = self.edge
        edge.last_seen[self.station_id] = datetime.now(timezone.utc)
        edge.trace.add(self.station_id, "in", raw)
        try:
            frame = frames.parse(raw)
        except frames.FrameError as exc:
            edge.metrics.frame_error(exc.code)
            log.warning("%s sent an unusable frame: %s", self.station_id, exc)
            if exc.answers:  # a broken response: fail the call it answers, never reply to it
                self._resolve(frames.CallError(exc.unique_id, exc.code, f"station sent a malformed response: "
                                               f"{exc.description}", {}))
            else:
                await self._send(frames.error_frame(exc.unique_id, self.version.error_code(exc.code), exc.description))
            return
        if isinstance(frame, frames.Call):
            gate = edge.gate
            if gate is not None and not gate.admit(self.station_id):
                await gate.refuse(self, frame.unique_id)
                return
            await self._handle_call(frame)
        else:
            self._resolve(frame)

    async def _handle_call(self, call: frames.Call) -> None:
        started = time.perf_counter()
        code: str | None = None
        try:
            response = await self._dispatch(call)
            out = frames.result_frame(call.unique_id, response)
        except OcppError as exc:
            code = exc.code
            out = frames.error_frame(call.unique_id, self.version.error_code(exc.code), exc.description, exc.details)
            log.info("%s %s -> CALLERROR %s: %s", self.station_id, call.action, exc.code, exc.description)
        except Exception as exc:  # noqa: BLE001 - a handler bug must not close the station's connection
            code = "InternalError"
            # An outage fails every message alike: one traceback per incident and class, then counts.
            self.edge.errors.failed(log, f"{call.action} handler", exc, f"failed for {self.station_id}")
            out = frames.error_frame(call.unique_id, "InternalError", "the central system failed to process the request")
        await self._send(out)
        edge = self.edge
        if code is None and edge.errors.active:
            edge.errors.succeeded(log, f"{call.action} handler")
        # A station chooses the action string: only known actions become metric labels (no memory
        # grows with the names a fuzzer or a broken station makes up).
        action = call.action if call.action in schemas.known_actions(self.version.schema_dir) else "unknown"
        edge.metrics.handled(action, code, time.perf_counter() - started)
        if self._events:
            events, self._events = self._events, []
            for event in events:
                edge.bus.publish(event)
        if self._after:
            pending, self._after = self._after, []
            for job in pending:
                edge.spawner.spawn(job(), name=f"after {call.action} {self.station_id}")

    async def _dispatch(self, call: frames.Call) -> dict[str, Any]:
        sd = self.version.schema_dir
        handler = self.router.handler(call.action)
        if handler is None:
            # OCPP-J 4.2.3: NotImplemented = "Requested Action is not known by receiver",
            # NotSupported = "Requested Action is recognized but not supported by the receiver".
            if call.action in schemas.known_actions(sd):
                raise OcppError("NotSupported", f"{call.action} is not a message a charging station sends to the CSMS")
            raise OcppError("NotImplemented", f"unknown action {call.action!r}")
        if not self.accepted and call.action != "BootNotification":
            raise OcppError("SecurityError", f"{call.action} refused: the station is not accepted "
                            "(send BootNotification and wait for Accepted)")
        schemas.validate(sd, call.action, "Request", call.payload)
        response = await handler(self, call.payload)
        try:
            schemas.validate(sd, call.action, "Response", response)
        except OcppError as exc:  # our bug: never send a schema-invalid answer
            log.error("%s %s: handler produced an invalid response: %s", self.station_id, call.action, exc)
            raise OcppError("InternalError", "the central system produced an invalid response") from None
        return response

    def after(self, job: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run ``job`` once the answer to the current CALL has been sent (for calls to this station)."""
        self._after.append(job)

    def publish(self, event: Event) -> None:
        """Publish a domain event once the answer to the current CALL has been sent.

        Events describe acknowledged facts, and a subscriber that reacts with a call to this
        station must not overtake our answer on the wire.
        """
        self._events.append(event)

    def _resolve(self, frame: frames.CallResult | frames.CallError) -> None:
        pending = self._pending
        if pending is None or pending[0] != frame.unique_id:
            log.warning("%s answered message %s, which is not the call in flight; dropped", self.station_id,
                        frame.unique_id)
            self.edge.metrics.frame_error("UnmatchedResponse")
            return
        _, action, fut = pending
        if fut.done():
            return
        if isinstance(frame, frames.CallError):
            fut.set_exception(OcppError(frame.code, frame.description, frame.details))
            return
        try:
            schemas.validate(self.version.schema_dir, action, "Response", frame.payload)
        except OcppError as exc:
            fut.set_exception(OcppError(exc.code, f"station answered with an invalid payload: {exc.description}",
                                        exc.details))
            return
        fut.set_result(frame.payload)

    # Writing -----------------------------------------------------------------------------------
    async def _send(self, text: str) -> None:
        self.edge.trace.add(self.station_id, "out", text)
        try:
            await self.ws.send(text)
        except Exception as exc:  # noqa: BLE001 - the reader notices the closed socket
            log.debug("%s: send failed: %s", self.station_id, exc)

    async def send_text(self, text: str) -> None:
        """Send a frame as it is, bypassing the trace (the rate gate's refusals)."""
        await self.ws.send(text)

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (the reader then ends the connection)."""
        await self.ws.close(code, reason)

    async def call(self, action: str, payload: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send a CSMS-initiated CALL and return the station's response payload.

        Raises InvalidRequest (not sent), OcppError (the station's CALLERROR or an invalid answer),
        CallTimeout or StationOffline. Calls queue behind the one in flight; every outcome of a
        request that was valid is recorded in the store.
        """
        check_request(self.version, action, payload)
        timeout = self.edge.call_timeout_s if timeout is None else timeout
        sent_at = datetime.now(timezone.utc)
        started = time.perf_counter()
        outcome: CommandOutcome = "result"
        response: dict[str, Any] | None = None
        try:
            async with self._call_lock:
                if self.closed:
                    raise StationOffline(self.station_id)
                uid = f"{next(_ids):x}"
                fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self._pending = (uid, action, fut)
                try:
                    await self._send(frames.call_frame(uid, action, payload))
                    response = await asyncio.wait_for(fut, timeout)
                except asyncio.TimeoutError:
                    raise CallTimeout(f"{self.station_id} did not answer {action} within {timeout:g} s") from None
                finally:
                    self._pending = None
            return response
        except OcppError as exc:
            outcome, response = "callerror", {"errorCode": exc.code, "errorDescription": exc.description,
                                              "errorDetails": exc.details}
            raise
        except CallTimeout:
            outcome = "timeout"
            raise
        except StationOffline:
            outcome = "offline"
            raise
        except asyncio.CancelledError:  # the caller gave up (its own timeout, shutdown)
            outcome = "cancelled"
            raise
        finally:
            self.edge.metrics.command(action, outcome, time.perf_counter() - started)
            # Written behind on SQLite (see CommandLog): a fan-out of thousands of calls must
            # not wait for as many commits.
            await self.edge.command_log.record_command(
                self.station_id, action, redact_payload(action, payload), outcome,
                None if response is None else redact_payload(action, response), sent_at, datetime.now(timezone.utc))

    def abort_pending(self) -> None:
        """Fail the call in flight (the socket closed or was replaced)."""
        self.closed = True
        if self._pending is not None and not self._pending[2].done():
            self._pending[2].set_exception(StationOffline(self.station_id))


class ProfileRequestCheck:
    """Validate SetChargingProfile requests against the official schema, cheaply for a wave.

    The full check costs ~2 us per schedule period, most of a fan-out's per-station work, while
    the profiles of one wave share a few schedules and differ in ids. The schema has no rule
    linking fields (no dependencies, oneOf, uniqueItems), so a period list valid in one request
    is valid in any: once a request passed the full check, its period lists (keyed by their JSON,
    which is also what goes on the wire) are known good, and a later request carrying the same
    lists is checked in full except that each list is cut to its first item. Every other field,
    ids included, is still checked by the compiled schema.
    """

    MAX_KNOWN = 4096  # distinct period lists remembered (a wave has a handful)

    def __init__(self) -> None:
        self._known: set[tuple[str, bytes]] = set()

    def __call__(self, version: ProtocolVersion, payload: dict[str, Any]) -> None:
        key = self._key(version, payload)
        if key is None or key not in self._known:
            schemas.check_outgoing(version, "SetChargingProfile", payload)
            if key is not None:
                if len(self._known) >= self.MAX_KNOWN:
                    self._known.clear()
                self._known.add(key)
            return
        profile = payload["chargingProfile"]
        short = [{**s, "chargingSchedulePeriod": s["chargingSchedulePeriod"][:1]} for s in profile["chargingSchedule"]]
        schemas.check_outgoing(version, "SetChargingProfile", {**payload, "chargingProfile": {**profile,
                                                                                             "chargingSchedule": short}})

    @staticmethod
    def _key(version: ProtocolVersion, payload: Any) -> tuple[str, bytes] | None:
        """The request's period lists as JSON, or None when its shape is not the usual one."""
        try:
            schedules = payload["chargingProfile"]["chargingSchedule"]
            if not isinstance(schedules, list) or not all(
                    isinstance(s, dict) and isinstance(s.get("chargingSchedulePeriod"), list) and s["chargingSchedulePeriod"]
                    for s in schedules):
                return None
            return version.schema_dir, orjson.dumps([s["chargingSchedulePeriod"] for s in schedules])
        except (KeyError, TypeError, orjson.JSONEncodeError):
            return None


check_profile_request = ProfileRequestCheck()


def check_request(version: ProtocolVersion, action: str, payload: dict[str, Any]) -> None:
    """Refuse an invalid CSMS-initiated request before it is sent (raises InvalidRequest)."""
    if action == "SetChargingProfile" and isinstance(payload, dict):
        check_profile_request(version, payload)
    else:
        schemas.check_outgoing(version, action, payload)


class Trace:
    """The last frames of every station, in memory, for the operator's message trace.

    Adding is on the per-message path, so it stores the raw frame and a float time; decoding,
    redaction and formatting happen when someone reads the trace. Memory is bounded two ways
    (300 ids that each sent 16 frames of 64 KB and left once kept 150 MB for good): a station's
    trace is dropped ``ttl_s`` after it disconnected unless it came back (:meth:`sweep`), and
    the frames of all stations together stay under ``max_bytes`` (the traces of the least
    recently active stations go first).
    """

    FRAME_OVERHEAD = 120  # bytes a kept frame costs besides its text (tuple, float, deque slot)

    def __init__(self, size: int, ttl_s: float = 600.0, max_bytes: int = 64 * 1024 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.ttl_s, self.max_bytes, self.clock = size, ttl_s, max_bytes, clock
        # station -> its last frames, least recently active first (re-inserted on every frame)
        self._frames: dict[str, deque[tuple[float, str, str]]] = {}
        self._departed: dict[str, float] = {}  # station -> when it disconnected, oldest first
        self.bytes = 0  # text plus overhead of every kept frame

    def add(self, station_id: str, direction: str, frame: str) -> None:
        if self.size <= 0:
            return
        q = self._frames.pop(station_id, None)
        if q is None:
            q = deque(maxlen=self.size)
        elif len(q) == self.size:
            self.bytes -= len(q[0][2]) + self.FRAME_OVERHEAD
        self._frames[station_id] = q
        q.append((time.time(), direction, frame))
        self.bytes += len(frame) + self.FRAME_OVERHEAD
        if self.bytes > self.max_bytes:
            self._shrink()

    def _shrink(self) -> None:
        """Drop whole traces, least recently active first, until the frames fit ``max_bytes``."""
        while self.bytes > self.max_bytes and len(self._frames) > 1:
            self._drop(next(iter(self._frames)))

    def _drop(self, station_id: str) -> None:
        q = self._frames.pop(station_id, None)
        self._departed.pop(station_id, None)
        if q:
            self.bytes -= sum(len(f) for _, _, f in q) + self.FRAME_OVERHEAD * len(q)

    def arrived(self, station_id: str) -> None:
        """The station (re)connected: its trace stays."""
        self._departed.pop(station_id, None)

    def departed(self, station_id: str) -> None:
        """The station disconnected: its trace goes ``ttl_s`` from now unless it comes back."""
        if station_id in self._frames:
            self._departed.pop(station_id, None)
            self._departed[station_id] = self.clock()

    def sweep(self) -> int:
        """Drop the traces of stations gone for longer than ``ttl_s``; returns how many."""
        cutoff = self.clock() - self.ttl_s
        gone = []
        for station_id, since in self._departed.items():
            if since > cutoff:
                break  # oldest first: the rest left later
            gone.append(station_id)
        for station_id in gone:
            self._drop(station_id)
        return len(gone)

    def __len__(self) -> int:
        return len(self._frames)

    def get(self, station_id: str) -> list[tuple[str, str, str]]:
        out = []
        for at, direction, frame in list(self._frames.get(station_id, ())):
            out.append((datetime.fromtimestamp(at, timezone.utc).isoformat(), direction, redact_frame(frame)))
        return out
