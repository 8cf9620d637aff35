"""Load patterns over lean stations: connect/boot a fleet, closed-loop throughput, fixed-rate latency.

Every pattern is bounded in time and returns plain numbers; errors (CALLERROR, unmatched or
missing replies, failed connects) are counted, never raised, so a weak server yields a result
instead of a crash.
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import messages as msg
from bench.wsclient import CallHandler, LeanStation, open_station


@dataclass
class Fleet:
    stations: list[LeanStation] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    connect_s: float = 0.0


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def connect_many(ids: Sequence[str], port: int, prefix: str, *, concurrency: int = 200,
                       handlers: dict[str, CallHandler] | None = None, timeout: float = 30.0,
                       deadline: float | None = None, boot: bool = True, local_host: str | None = None) -> Fleet:
    """Open (and boot) stations with at most `concurrency` handshakes in flight (from ``local_host``, the
    source address, when given)."""
    fleet = Fleet()
    sem = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one(sid: str) -> None:
        async with sem:
            if deadline is not None and time.monotonic() > deadline:
                fleet.failures["skipped: time budget"] += 1
                return
            try:
                st = await open_station(sid, "127.0.0.1", port, prefix, handlers, timeout, local_host)
                if boot:
                    reply = await st.request("BootNotification", msg.boot(), timeout)
                    if reply[0] != 3 or reply[2].get("status") != "Accepted":
                        fleet.failures[f"boot: {reply[2] if reply[0] == 3 else reply[2]}"] += 1
                        st.abort()
                        return
                fleet.stations.append(st)
            except Exception as exc:  # noqa: BLE001 - counted: the server's limits are the result
                fleet.failures[f"connect: {type(exc).__name__}: {str(exc)[:80]}"] += 1

    await asyncio.gather(*(one(s) for s in ids))
    fleet.connect_s = time.perf_counter() - started
    return fleet


async def start_transactions(stations: Sequence[LeanStation], power_w: float = 11000.0,
                             timeout: float = 60.0, concurrency: int = 500) -> int:
    """StatusNotification Occupied + TransactionEvent Started on every station; returns how many succeeded."""
    sem = asyncio.Semaphore(concurrency)
    ok = 0

    async def one(st: LeanStation) -> None:
        nonlocal ok
        async with sem:
            tx = f"TX-{st.station_id}"
            st.state.update(tx=tx, seq=0, wh=0.0, w=power_w)
            try:
                a = await st.request("StatusNotification", msg.status("Occupied"), timeout)
                b = await st.request("TransactionEvent", msg.transaction_event(
                    "Started", tx, 0, "CablePluggedIn", 0.0, power_w), timeout)
            except (asyncio.TimeoutError, ConnectionError):
                return
            ok += a[0] == 3 and b[0] == 3

    await asyncio.gather(*(one(s) for s in stations))
    return ok


def next_payload(st: LeanStation, step: int) -> tuple[str, str]:
    """The station's next message of the realistic mix (TransactionEvent seqNo counts up)."""
    action = msg.MIX[step % len(msg.MIX)]
    s = st.state
    s["wh"] = s.get("wh", 0.0) + 3.0
    if action == "MeterValues":
        return action, msg.meter_values(s["wh"], s.get("w", 11000.0))
    if action == "TransactionEvent":
        s["seq"] = s.get("seq", 0) + 1
        return action, msg.transaction_event("Updated", s.get("tx", f"TX-{st.station_id}"), s["seq"],
                                             "MeterValuePeriodic", s["wh"], s.get("w", 11000.0))
    if action == "StatusNotification":
        return action, msg.status("Occupied")
    return action, msg.heartbeat()


@dataclass
class Throughput:
    messages: int
    seconds: float
    errors: Counter[str]
    loadgen_cpu_s: float
    server_cpu_s: float = 0.0

    @property
    def per_server_cpu_s(self) -> float:
        """Messages per second of server CPU: the per-core figure even when the core was not saturated."""
        return self.messages / self.server_cpu_s if self.server_cpu_s > 0 else float("nan")

    @property
    def per_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


async def closed_loop(stations: Sequence[LeanStation], warmup_s: float, measure_s: float,
                      server_cpu: Callable[[], float] | None = None) -> Throughput:
    """Every station sends its next message as soon as the previous one is answered."""
    counting = False
    count = 0
    errors: Counter[str] = Counter()
    stop = False
    steps = {id(st): i for i, st in enumerate(stations)}

    def send_next(st: LeanStation) -> None:
        i = steps[id(st)] + 1
        steps[id(st)] = i
        action, payload = next_payload(st, i)
        st.call(action, payload, on_reply)

    def on_reply(st: LeanStation, frame: list[Any], _: float) -> None:
        nonlocal count
        if counting:
            count += 1
            if frame[0] == 4:
                errors[f"CallError:{frame[2]}"] += 1
        if not stop and st.is_open:
            send_next(st)

    for st in stations:
        send_next(st)
    await asyncio.sleep(warmup_s)
    s0 = server_cpu() if server_cpu else 0.0
    counting, t0, c0 = True, time.perf_counter(), cpu_self()
    await asyncio.sleep(measure_s)
    counting, elapsed, cpu = False, time.perf_counter() - t0, cpu_self() - c0
    s1 = server_cpu() if server_cpu else 0.0
    stop = True
    await _drain(stations, 10.0)
    return Throughput(count, elapsed, errors, cpu, s1 - s0)


async def _drain(stations: Sequence[LeanStation], timeout: float) -> int:
    """Wait until no call is outstanding; returns how many are still unanswered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = sum(st.busy for st in stations)
        if busy == 0:
            return 0
        await asyncio.sleep(0.02)
    return sum(st.busy for st in stations)


@dataclass
class RateResult:
    rate: float
    sent: int
    answered: int
    latencies_ms: list[float]
    unanswered: int
    errors: Counter[str]
    seconds: float

    @property
    def achieved(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0


async def fixed_rate(stations: Sequence[LeanStation], rate: float, duration_s: float,
                     tick_s: float = 0.001, drain_s: float = 10.0) -> RateResult:
    """Open loop at `rate` msgs/s spread round-robin; latency counts from the *scheduled* send time,
    so a call queued behind its station's previous one (OCPP: one in flight) is not flattered."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    backlog: dict[int, deque[float]] = {id(st): deque() for st in stations}
    steps = dict.fromkeys(backlog, 0)
    scheduled_at: dict[int, float] = {}
    answered = 0

    def send(st: LeanStation, t_sched: float) -> None:
        key = id(st)
        steps[key] += 1
        action, payload = next_payload(st, steps[key])
        scheduled_at[key] = t_sched
        st.call(action, payload, on_reply)

    def on_reply(st: LeanStation, frame: list[Any], _: float) -> None:
        nonlocal answered
        now = time.perf_counter()
        key = id(st)
        answered += 1
        latencies.append((now - scheduled_at[key]) * 1000.0)
        if frame[0] == 4:
            errors[f"CallError:{frame[2]}"] += 1
        q = backlog[key]
        if q and st.is_open:
            send(st, q.popleft())

    rr = itertools.cycle(stations)
    t0 = time.perf_counter()
    sent = 0
    end = t0 + duration_s
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        due = int((now - t0) * rate) + 1 - sent  # message j is due at t0 + j / rate
        for k in range(due):
            st = next(rr)
            t_sched = t0 + (sent + k) / rate
            if st.busy or backlog[id(st)]:
                backlog[id(st)].append(t_sched)
            else:
                send(st, t_sched)
        sent += max(due, 0)
        await asyncio.sleep(tick_s)
    # Everything scheduled gets the chance to be answered, within the drain bound.
    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline and (any(st.busy for st in stations) or any(backlog.values())):
        await asyncio.sleep(0.02)
    unanswered = sent - answered
    for q in backlog.values():
        q.clear()
    return RateResult(rate, sent, answered, latencies, unanswered, errors, duration_s)


def close_all(stations: Sequence[LeanStation], abort: bool = False) -> None:
    for st in stations:
        st.abort() if abort else st.close()


async def wait_closed(stations: Sequence[LeanStation], timeout: float) -> None:
    pending = [st.closed for st in stations if not st.closed.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout)


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(n)]


Progress = Callable[[str], None]
