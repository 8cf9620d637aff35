"""Rate limits of the edge: failed logins per address and identity, and CALLs per station.

Both use token buckets on ``time.monotonic()``: a bucket holds up to ``capacity`` tokens and
refills continuously, so a check is a few float operations and no timers or tasks are involved.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from csms.interfaces import GatedSession
from csms.metrics import Metrics
from csms.protocol import frames
from csms.security.config import AuthFailureLimits, MessageRateLimits

log = logging.getLogger("csms.security")

MAX_TRACKED_KEYS = 100_000  # memory bound against an attacker cycling addresses or identities
KNOWN_GOOD_PER_IDENTITY = 4


class TokenBucket:
    __slots__ = ("capacity", "rate", "tokens", "stamp")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity, self.rate = capacity, rate
        self.tokens, self.stamp = capacity, now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until one token is available (0 if one is)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity


class _Buckets:
    """Lazily created buckets per key, pruned when too many are tracked."""

    def __init__(self, capacity: float, rate: float, clock: Callable[[], float]) -> None:
        self.capacity, self.rate, self.clock = capacity, rate, clock
        self.buckets: dict[str, TokenBucket] = {}

    def get(self, key: str) -> TokenBucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_TRACKED_KEYS:
                self.prune()
            bucket = self.buckets[key] = TokenBucket(self.capacity, self.rate, self.clock())
        return bucket

    def peek(self, key: str) -> TokenBucket | None:
        return self.buckets.get(key)

    def prune(self) -> None:
        now = self.clock()
        for key in [k for k, b in self.buckets.items() if b.full(now)]:
            del self.buckets[key]
        while len(self.buckets) >= MAX_TRACKED_KEYS:  # all busy: forget the oldest
            del self.buckets[next(iter(self.buckets))]


class FailureLimiter:
    """Failed station logins, in budgets that no one can spend on another party's behalf.

    - ``per_address`` failures per ``window_s`` for identities without credentials (someone
      scanning for ids); when that budget is empty, only such identities are refused, so a bad
      actor behind a site's NAT address cannot lock out the registered stations behind it;
    - ``per_identity`` failures per ``window_s`` for one registered identity from anywhere
      (guessing its password); an address the identity logged in from keeps access while it is
      spent, so a guesser elsewhere cannot lock a working station out;
    - ``per_identity`` failures per ``window_s`` for one registered identity from one address,
      known-good or not (guessing from the station's own address is limited too).

    When a budget is spent, attempts are refused with 429 before the password is checked.
    """

    def __init__(self, limits: AuthFailureLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.by_address = _Buckets(limits.per_address, limits.per_address / limits.window_s, clock)
        self.by_identity = _Buckets(limits.per_identity, limits.per_identity / limits.window_s, clock)
        self.by_pair = _Buckets(limits.per_identity, limits.per_identity / limits.window_s, clock)
        self.known_good: dict[str, list[str]] = {}

    def retry_after(self, address: str, identity: str, registered: bool) -> float:
        """Seconds this attempt must wait (0: go ahead and check the credentials); ``registered``:
        whether the identity has credentials (a station record with a password or profile 3)."""
        now = self.clock()
        if not registered:
            bucket = self.by_address.peek(address)
            return 0.0 if bucket is None else bucket.wait(now)
        wait = 0.0
        bucket = self.by_pair.peek(_pair(address, identity))
        if bucket is not None:
            wait = bucket.wait(now)
        bucket = self.by_identity.peek(identity)
        if bucket is not None and address not in self.known_good.get(identity, ()):
            wait = max(wait, bucket.wait(now))
        return wait

    def failure(self, address: str, identity: str, registered: bool) -> None:
        now = self.clock()
        if registered:
            self.by_identity.get(identity).take(now)
            self.by_pair.get(_pair(address, identity)).take(now)
        else:
            self.by_address.get(address).take(now)

    def success(self, address: str, identity: str) -> None:
        good = self.known_good.get(identity)
        if good is None:
            if len(self.known_good) >= MAX_TRACKED_KEYS:
                del self.known_good[next(iter(self.known_good))]
            good = self.known_good[identity] = []
        if address not in good:
            good.append(address)
            del good[:-KNOWN_GOOD_PER_IDENTITY]


def _pair(address: str, identity: str) -> str:
    return f"{address}\x00{identity}"  # neither an address nor an identity contains NUL


class MessageGate:
    """The per-station CALL rate cap, checked once per incoming CALL by StationConnection.serve.

    Excess CALLs are not processed: each is answered with CALLERROR ``GenericError`` (the station
    may retry later), and after ``close_after`` refusals in a row the socket is closed with 1008
    (policy violation). The buckets also record each station's last CALL for the idle timeout.
    """

    def __init__(self, limits: MessageRateLimits, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.metrics = metrics
        self.clock = clock
        self._buckets = _Buckets(limits.burst, limits.per_second, clock)
        self._refused_in_a_row: dict[str, int] = {}
        self.last_call: dict[str, float] = {}
        self.hooked = False  # set by the first admit(): StationConnection reports CALLs to this gate

    def admit(self, station_id: str) -> bool:
        """True if the station may send this CALL now (hot path: a dict lookup and a refill)."""
        now = self.clock()
        self.last_call[station_id] = now
        self.hooked = True
        bucket = self._buckets.buckets.get(station_id) or self._buckets.get(station_id)
        tokens = bucket.tokens + (now - bucket.stamp) * bucket.rate  # TokenBucket.take, inlined
        bucket.tokens, bucket.stamp = (tokens if tokens < bucket.capacity else bucket.capacity), now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            if self._refused_in_a_row:
                self._refused_in_a_row.pop(station_id, None)
            return True
        return False

    async def refuse(self, conn: GatedSession, unique_id: str) -> None:
        """Answer an excess CALL; close the socket when the station keeps flooding."""
        n = self._refused_in_a_row[conn.station_id] = self._refused_in_a_row.get(conn.station_id, 0) + 1
        self.metrics.frame_error("RateLimited")
        if n == 1:
            log.warning("%s exceeds %g CALLs/s (burst %d): excess CALLs are refused", conn.station_id,
                        self.limits.per_second, self.limits.burst)
        if n >= self.limits.close_after:
            log.warning("%s kept flooding (%d CALLs refused in a row): closing its socket", conn.station_id, n)
            self._refused_in_a_row.pop(conn.station_id, None)
            await conn.close(1008, "message rate limit exceeded")
            return
        wait = math.ceil(self._buckets.get(conn.station_id).wait(self.clock()))
        try:
            await conn.send_text(frames.error_frame(unique_id, "GenericError",
                                                  f"message rate limit exceeded ({self.limits.per_second:g}/s); "
                                                  f"retry in {max(wait, 1)} s"))
        except Exception:  # noqa: BLE001 - the reader notices a closed socket
            pass

    def forget_others(self, connected: Any) -> None:
        """Drop state of stations that are no longer connected (called by the idle sweeper)."""
        for station_id in [s for s in self.last_call if s not in connected]:
            self.last_call.pop(station_id, None)
            self._refused_in_a_row.pop(station_id, None)
        if len(self._buckets.buckets) > len(connected) * 2 + 1000:
            self._buckets.prune()
