"""A simulated station on the wire: OCPP-J over websockets via the third-party `ocpp` package.

`SimStation` wraps a `StationCore` with the things only a network has: the websocket session,
BootNotification (Accepted / Pending / Rejected), heartbeats, one CALL in flight at a time,
retries of transaction messages, reconnects with jittered exponential backoff and an offline
queue. The station model's `ocpp_version` (1.6, 2.0.1 or 2.1) decides the subprotocol it offers
and the messages (`simulators.versions`); this module is the same for all of them. It never
imports the central system: anything speaking that OCPP version on a URL will do.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from typing import Any

import websockets
from ocpp.exceptions import OCPPError
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from simulators.clock import Clock
from simulators.ev import EV, EVSession
from simulators.link import OcppLink
from simulators.models import StationModel
from simulators.security import StationCredentials, install_log_redaction
from simulators.station_core import Outgoing, StationCore
from simulators.stats import LinkStats

LOG = logging.getLogger("simulators.station")
_QUIET = logging.getLogger("simulators.ocpp")  # the package logs every frame at INFO
SUBPROTOCOL = "ocpp2.0.1"  # the default model's; a station offers `model.subprotocol`
AUTH_REFUSALS = (401, 403, 429)  # handshake answers that mean "not with these credentials / not now"
RETRY_AFTER_MAX_S = 3600.0
install_log_redaction(_QUIET.name, "websockets.client")  # frames and headers carry passwords


class _Waker:
    """A sleep that another task can cut short (new profile, plug-in, queued message)."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._future = future
        handle = loop.call_later(max(0.0, seconds), _resolve, future)
        try:
            await future
        finally:
            handle.cancel()
            self._future = None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SimStation:
    """One simulated charging station. `await run()` until `stop()`; read `power_w` any time.

    Network timers (heartbeat, call timeout, retries, reconnect backoff) are real seconds;
    the charging itself runs on `clock` (see `simulators.clock`).
    """

    def __init__(self, station_id: str, url: str, model: StationModel | None = None,
                 ev_sessions: list[EVSession] | tuple[EVSession, ...] = (), clock: Clock | None = None, *,
                 stats: LinkStats | None = None, validate: bool = True, call_timeout_s: float = 10.0,
                 reconnect_base_s: float = 1.0, reconnect_max_s: float = 60.0, boot_retry_s: float = 10.0,
                 connect_timeout_s: float = 10.0, ping_interval_s: float | None = None, seed: int | None = None) -> None:
        self.station_id = station_id
        self.url = url.rstrip("/")
        self.model = model or StationModel()
        self.clock = clock or Clock()
        self.core = StationCore(station_id, self.model, self.clock, ev_sessions)
        self.core.on_outbox = self._kick
        self.core.on_reset = self._on_reset
        self.stats = stats or LinkStats()
        self.validate = validate
        self.call_timeout_s = call_timeout_s
        self.reconnect_base_s = reconnect_base_s
        self.reconnect_max_s = reconnect_max_s
        self.boot_retry_s = boot_retry_s
        self.connect_timeout_s = connect_timeout_s
        self.ping_interval_s = ping_interval_s
        self.heartbeat_interval_s = 300.0
        self.boot_status: str | None = None
        self.accepted = asyncio.Event()
        self.reconnects = 0
        self._rng = random.Random(seed if seed is not None else station_id)
        self._boot_reason = "PowerUp"
        self._accepted_reason = "PowerUp"
        self._running = False
        self._session_open = False
        self._ws: Any = None
        self._sim_waker = _Waker()
        self._send_waker = _Waker()
        self._stop_event = asyncio.Event()
        self.core.device.on_set("OCPPCommCtrlr", "HeartbeatInterval", self._set_heartbeat)
        self.credentials: StationCredentials | None = None
        self._password_changed = False
        if self.model.security is not None:
            self.credentials = StationCredentials(station_id, self.model.security)
            problem = self.credentials.check_url(self.url)
            if problem is not None:
                raise ValueError(f"{station_id}: {problem}")
            if self.model.security.uses_password:
                self.core.device.on_set("SecurityCtrlr", "BasicAuthPassword", self._set_password)

    # ------------------------------------------------------------------ test/benchmark API

    @property
    def power_w(self) -> dict[int, float]:
        return self.core.power_w

    def plug_in(self, evse_id: int, ev: EV | EVSession) -> None:
        self.core.plug_in(evse_id, ev)

    def unplug(self, evse_id: int) -> None:
        self.core.unplug(evse_id)

    def stop(self) -> None:
        self._running = False
        self._stop_event.set()
        self._sim_waker.wake()
        self._send_waker.wake()
        if self._ws is not None:
            asyncio.get_running_loop().create_task(self._ws.close())

    def drop_connection(self) -> None:
        """Close the socket as a network fault would; the station reconnects by itself."""
        if self._ws is not None:
            asyncio.get_running_loop().create_task(self._ws.close())

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        self._running = True
        self._stop_event.clear()
        simulate = asyncio.create_task(self._simulate(), name=f"sim:{self.station_id}")
        attempt = 0
        try:
            while self._running:
                retry_after = 0.0
                try:
                    connect_kwargs = self.credentials.connect_kwargs() if self.credentials is not None else {}
                except (OSError, ssl.SSLError) as exc:  # unreadable or mismatched certificate/key: no retry heals it
                    self.stats.error(f"tls_setup:{type(exc).__name__}")
                    LOG.error("%s: cannot set up TLS: %s", self.station_id, exc)
                    break
                try:
                    was_accepted = await self._session(connect_kwargs)
                    attempt = 0 if was_accepted else attempt + 1
                except InvalidStatus as exc:
                    retry_after = self._refused(exc.response)
                    attempt += 1
                except (TimeoutError, OSError, websockets.exceptions.WebSocketException) as exc:
                    self.stats.error(f"{'tls' if isinstance(exc, ssl.SSLError) else 'connect'}:{type(exc).__name__}")
                    attempt += 1
                if not self._running:
                    break
                self.reconnects += 1
                delay = min(self.reconnect_max_s, self.reconnect_base_s * 2 ** min(attempt, 16))
                delay *= 0.5 + self._rng.random()  # jitter: a fleet must not reconnect in lock-step
                await self._sleep_unless_stopped(max(delay, retry_after))
        finally:
            simulate.cancel()
            await asyncio.gather(simulate, return_exceptions=True)

    def _refused(self, response: Any) -> float:
        """Count an HTTP refusal of the handshake; returns the server's Retry-After in seconds (0 if none)."""
        status = response.status_code
        if status not in AUTH_REFUSALS:
            self.stats.error(f"connect:HTTP{status}")
            return 0.0
        self.stats.auth_failure(status)
        LOG.info("%s: handshake refused with HTTP %d", self.station_id, status)
        try:
            return min(RETRY_AFTER_MAX_S, max(0.0, float(response.headers.get("Retry-After", 0))))
        except (TypeError, ValueError):  # an HTTP-date or garbage: fall back to our own backoff
            return 0.0

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop_event.wait(), seconds)
        except TimeoutError:
            pass

    async def _simulate(self) -> None:
        while True:
            self.core.advance(self.clock.now())
            wait = self.clock.real_seconds(self.core.next_wake())
            await self._sim_waker.sleep(wait)

    async def _session(self, connect_kwargs: dict[str, Any]) -> bool:
        """One websocket connection, from handshake until it closes. True if boot was accepted."""
        uri = f"{self.url}/{self.station_id}"
        subprotocol = self.model.subprotocol
        ws = await websockets.connect(uri, subprotocols=[Subprotocol(subprotocol)], compression=None,
                                      open_timeout=self.connect_timeout_s, ping_interval=self.ping_interval_s,
                                      max_queue=16, **connect_kwargs)
        self._ws = ws
        self.stats.connects += 1
        link = OcppLink(self, ws, self.call_timeout_s, _QUIET, self.model.ocpp_version)
        self._session_open = True
        tasks: list[asyncio.Task] = []
        accepted = False
        try:
            if ws.subprotocol != subprotocol:
                self.stats.error("subprotocol_mismatch")
                return False
            reader = asyncio.create_task(link.start(), name=f"recv:{self.station_id}")
            tasks.append(reader)
            stop = asyncio.create_task(self._stop_event.wait())
            tasks.append(stop)
            boot = asyncio.create_task(self._boot(link))
            tasks.append(boot)
            await asyncio.wait({reader, boot, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not boot.done() or boot.exception() is not None or not boot.result():
                return False
            accepted = True
            self.stats.connection_up()
            self.core.set_online(True)
            self.core.on_boot_accepted(self._accepted_reason)
            self.accepted.set()
            LOG.info("%s: connected as OCPP %s; %s", self.station_id, self.model.ocpp_version, self.clock.describe())
            sender = asyncio.create_task(self._send_loop(link), name=f"send:{self.station_id}")
            heartbeat = asyncio.create_task(self._heartbeat_loop(), name=f"hb:{self.station_id}")
            tasks += [sender, heartbeat]
            done, _ = await asyncio.wait({reader, sender, stop}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    if not isinstance(exc, websockets.exceptions.ConnectionClosed):
                        self.stats.error(f"session:{type(exc).__name__}")
                        LOG.warning("%s: session failed: %r", self.station_id, exc)
            return True
        finally:
            if accepted:
                self.stats.connections_up -= 1
                self.stats.disconnects += 1
            self.accepted.clear()
            self.core.set_online(False)
            self._session_open = False
            for task in tasks:
                task.cancel()
            self._send_waker.wake()
            # Python 3.11's wait_for can swallow a cancel that races a reply: loops also check the flag.
            await asyncio.wait(tasks, timeout=self.call_timeout_s + 1)
            self._ws = None
            await ws.close()

    async def _boot(self, link: OcppLink) -> bool:
        """BootNotification until Accepted; Pending/Rejected wait the interval the CSMS gave."""
        while self._running:
            sent = time.monotonic()
            try:
                answer = await link.call_raw("BootNotification", self.core.boot_payload(self._boot_reason),
                                             self.call_timeout_s, self.validate)
            except OCPPError as exc:
                self.stats.error(f"CallError:{type(exc).__name__}:BootNotification")
                await self._sleep_unless_stopped(self.boot_retry_s)
                continue
            except TimeoutError:
                self.stats.error("timeout:BootNotification")
                continue
            self.stats.calls_sent += 1
            self.stats.latency(time.monotonic() - sent)
            self.boot_status = answer.get("status")
            interval = answer.get("interval", 0)
            if self.boot_status == "Accepted":
                if interval > 0:
                    self.heartbeat_interval_s = float(interval)
                    self.core.device.vars[("OCPPCommCtrlr", "HeartbeatInterval", None)].value = str(interval)
                self._accepted_reason = self._boot_reason
                self._boot_reason = "Unknown"  # a later BootNotification is a reconnect, not a power-up
                return True
            self.stats.error(f"boot:{self.boot_status}")
            await self._sleep_unless_stopped(interval if interval > 0 else self.boot_retry_s)
        return False

    async def _send_loop(self, link: OcppLink) -> None:
        """Send the core's outbox in order, one CALL in flight; retry transaction messages per the spec."""
        core = self.core
        while self._session_open:
            if not core.outbox:
                await self._send_waker.sleep(60.0)
                continue
            item = core.outbox[0]
            payload = item.prepare(item.payload) if item.prepare is not None else item.payload
            if payload is None:  # nothing left to say (e.g. a 1.6 stop for a transaction without an id)
                self.stats.error(f"gave_up:{item.action}")
                _discard(core, item)
                continue
            sent = time.monotonic()
            result: dict | None = None
            try:
                result = await link.call_raw(item.action, payload, self.call_timeout_s, self.validate)
                self.stats.calls_sent += 1
                self.stats.latency(time.monotonic() - sent)
            except OCPPError as exc:
                self.stats.error(f"CallError:{exc.code if hasattr(exc, 'code') else type(exc).__name__}")
                LOG.info("%s: %s answered with error %r", self.station_id, item.action, exc)
            except TimeoutError:
                self.stats.error(f"timeout:{item.action}")
            if result is None and item.transactional and item.attempts + 1 < self._attempts():
                item.attempts += 1
                await asyncio.sleep(self._attempt_interval() * item.attempts)
                continue
            if result is None:
                self.stats.error(f"gave_up:{item.action}")
            _discard(core, item)
            if item.on_result is not None:
                item.on_result(result)

    def _attempts(self) -> int:
        return int(self.core.device.value("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"))

    def _attempt_interval(self) -> float:
        return float(self.core.device.value("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent"))

    async def _heartbeat_loop(self) -> None:
        while self._session_open:
            await asyncio.sleep(self.heartbeat_interval_s)
            self.core.outbox.append(Outgoing("Heartbeat", {}))
            self._kick()

    def _kick(self) -> None:
        self._send_waker.wake()
        self._sim_waker.wake()

    def _set_password(self, value: str) -> None:
        assert self.credentials is not None
        self.credentials.set_password(value)
        self._password_changed = True

    def after_call(self, action: str) -> None:
        """A central system request has been answered (the answer is on the wire)."""
        self.reconnect_if_password_changed()

    def reconnect_if_password_changed(self) -> None:
        """After the SetVariables answer is on the wire: log in again, now with the new password."""
        if self._password_changed and self._ws is not None:
            self._password_changed = False
            LOG.info("%s: new BasicAuthPassword, reconnecting with it", self.station_id)
            asyncio.get_running_loop().create_task(self._ws.close())

    def _set_heartbeat(self, value: str) -> None:
        self.heartbeat_interval_s = max(1.0, float(value))

    def _on_reset(self, kind: str) -> None:
        self._boot_reason = "RemoteReset"
        ws = self._ws
        if ws is not None:  # after the CALLRESULT has gone out
            asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(ws.close()))


def _discard(core: StationCore, item: Outgoing) -> None:
    if core.outbox and core.outbox[0] is item:
        core.outbox.popleft()
        return
    try:
        core.outbox.remove(item)
    except ValueError:
        pass  # already dropped by a full offline queue


__all__ = ["SUBPROTOCOL", "OcppLink", "SimStation"]
