"""Station-side load figures: connections, message rates, call latency, errors.

One `LinkStats` is shared by every station of a fleet (single event loop, no locks needed).
Latencies are kept in a bounded reservoir so a long run's memory stays flat.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

_RESERVOIR = 200_000


@dataclass
class LinkStats:
    connections_up: int = 0
    peak_connections_up: int = 0
    connects: int = 0
    disconnects: int = 0
    calls_sent: int = 0
    calls_received: int = 0
    auth_failures: int = 0  # handshakes refused with 401/403/429
    errors: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _seen: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    def latency(self, seconds: float) -> None:
        """Reservoir sampling (Vitter's algorithm R) keeps an unbiased sample of every latency."""
        self._seen += 1
        if len(self.latencies_s) < _RESERVOIR:
            self.latencies_s.append(seconds)
        else:
            slot = self._rng.randrange(self._seen)
            if slot < _RESERVOIR:
                self.latencies_s[slot] = seconds

    def connection_up(self) -> None:
        self.connections_up += 1
        self.peak_connections_up = max(self.peak_connections_up, self.connections_up)

    def auth_failure(self, status: int) -> None:
        self.auth_failures += 1
        self.errors[f"auth:HTTP{status}"] += 1

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def snapshot(self) -> dict:
        elapsed = max(1e-9, time.monotonic() - self.started)
        pcts = (np.percentile(np.asarray(self.latencies_s), [50, 95, 99]) * 1000).round(2).tolist() \
            if self.latencies_s else [None, None, None]
        return {
            "connections_up": self.connections_up, "peak_connections_up": self.peak_connections_up,
            "connects": self.connects, "disconnects": self.disconnects,
            "calls_sent": self.calls_sent, "calls_received": self.calls_received,
            "auth_failures": self.auth_failures,
            "messages_per_s": round((self.calls_sent + self.calls_received) / elapsed, 1),
            "latency_ms_p50": pcts[0], "latency_ms_p95": pcts[1], "latency_ms_p99": pcts[2],
            "errors": dict(self.errors), "error_count": sum(self.errors.values()),
            "elapsed_s": round(elapsed, 1),
        }
