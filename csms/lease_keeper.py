"""Leases renewed from a thread of their own, so a busy event loop does not lose them.

A node's lease and the grid leader's key were renewed by tasks on the event loop. While a new leader
took over 30,000 stations (its loop busy for seconds at a time with reads, set-ups and a reconnect
storm), a renewal came more than a lease late: the node lost its stations and the leadership moved
again, so the next node started the whole takeover anew (measured: 30 s lost in one failover).

Here one daemon thread renews every registered lease three times per lease on its own Redis
connection, whatever the loop is doing, but only while the loop still turns: a pulse callback stamps
the time on the loop, and when it is older than ``stall_s`` (a hung loop, not a busy one) nothing is
renewed, so the leases lapse and the others take over as before. A frozen process (SIGSTOP) freezes
this thread too. What a renewal finds (a lapsed lease to claim back, a leader key someone else holds)
is handed to the loop; the thread itself only writes the keys.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import redis

from csms.store.redis_clients import sync_client

log = logging.getLogger("csms.cluster")

#: Renews one lease with the keeper's client (runs in the keeper's thread; raises on a Redis failure).
Renewal = Callable[[redis.Redis], None]
#: What a round found of one lease: its label and its renewal's failure (None: renewed).
Outcome = tuple[str, BaseException | None]
PULSE_S = 0.25  # how often the loop stamps its pulse


class LoopPulse:
    """Proof that the event loop still runs callbacks: a stamp every :data:`PULSE_S`."""

    def __init__(self) -> None:
        self._at = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._stamp()

    def _stamp(self) -> None:
        self._at = time.monotonic()
        assert self._loop is not None
        self._handle = self._loop.call_later(PULSE_S, self._stamp)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def age(self) -> float:
        """Seconds since the loop last ran the stamp."""
        return time.monotonic() - self._at


class LeaseKeeper:
    """One thread renewing the registered leases every ``interval_s`` while the loop's pulse is
    younger than ``stall_s``. Each round's outcomes go to ``on_error`` on the loop, every lease under
    its own label, so a log says which renewal failed."""

    def __init__(self, redis_url: str, interval_s: float, stall_s: float,
                 on_error: Callable[[list[Outcome]], None]) -> None:
        self.interval_s = interval_s
        self.stall_s = stall_s
        timeout = max(0.5, interval_s)
        self._client = sync_client(redis_url, timeout)
        self._renewals: tuple[tuple[str, Renewal], ...] = ()
        self._on_error = on_error
        self._pulse = LoopPulse()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.skipped = 0  # rounds left out because the loop was stalled (tests, logs)

    @property
    def client(self) -> redis.Redis:
        """The keeper's own (synchronous) client, for scripts a renewal registers on it."""
        return self._client

    def add(self, where: str, renewal: Renewal) -> None:
        """Renew this lease too, from the next round on (safe while the thread runs); its failures are
        reported under ``where``."""
        self._renewals = (*self._renewals, (where, renewal))

    def start(self) -> None:
        """Start the pulse on the running loop and the thread, unless they run already (the cluster
        starts its keeper at open, and at start again for a node that was not opened)."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._pulse.start(self._loop)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lease keeper", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        self._pulse.stop()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
            self._thread = None
        self._client.close()

    def _run(self) -> None:
        stalled = False
        while not self._stop.wait(self.interval_s):
            if self._pulse.age() > self.stall_s:
                if not stalled:
                    log.warning("cluster: the event loop has not run for %.1f s; leases are no longer renewed",
                                self._pulse.age())
                stalled = True
                self.skipped += 1
                continue
            stalled = False
            self.renew_all()

    def renew_all(self) -> None:
        """One round: every lease, each on its own (one failing does not keep the others from renewing)."""
        outcomes: list[Outcome] = []
        for where, renewal in self._renewals:
            failure: BaseException | None = None
            try:
                renewal(self._client)
            except Exception as exc:  # noqa: BLE001 - reported; tried again next round
                failure = exc
            outcomes.append((where, failure))
        self.on_loop(self._on_error, outcomes)

    def on_loop(self, callback: Callable[..., None], *args: object) -> None:
        """Run ``callback(*args)`` on the event loop (what a renewal found is acted on there)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed meanwhile
            pass
