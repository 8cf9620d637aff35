"""Failures of a cluster of daemon nodes on one Redis (issue 15, item 4), from the outside: real
`python -m csms serve` processes, stations on lean websocket clients (bench/wsclient.py), loopback only.

- Redis restarted (SIGKILL, down past the nodes' leases, started again on its append-only file):
  nothing the stations got an acknowledgement for is lost, nothing sent while Redis was down is
  acknowledged, and the nodes recover (leases, directory, forwarded commands) without restarting.
- A node SIGKILLed while its stations send transaction events and meter values: everything acknowledged
  before the kill is stored; the stations reconnect to the other node, which knows their running
  transactions and stores their end.
- A reconnect storm: every station of a killed node reconnects to the two remaining nodes at once, and
  both serve them all (directory, messages, commands forwarded between them).
- The sweep of dead nodes' stations, in process: a node renewing its lease at the same moment keeps its own,
  and a sweep of 10,000 stations does not hold up the sweeping node's lease; a node whose claim after a
  lapsed lease failed claims its stations at the next renewal; one with no station connected claims nothing.

A node frozen past its lease (SIGSTOP, SIGCONT) is tested in tests/test_cluster.py.
Each test is bounded in time and in the number of stations and messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bench import messages as msg
from bench.wsclient import CallHandler, LeanStation, open_station
from csms.cluster import Cluster
from csms.domain.records import StationRecord
from csms.errorlog import ErrorLog
from csms.store.redis_store import RedisStore
from tests.grid_outside import REDIS_URL, Api, Daemon, Site, daemon, free_port
from tests.redis_kit import delete_prefix
from tests.spawning import LoopSpawner

LEASE_S = 2.0
ANSWER_TIMEOUT_S = 15.0  # a station waits this long for an answer (far above any seen: "no answer" is a failure)


def node(tmp: Path, prefix: str, node_id: str, redis_url: str | None = None) -> Site:
    (tmp / node_id).mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {"cluster": {"node_id": node_id, "lease_s": LEASE_S, "forward_timeout_s": 5.0}}
    if redis_url is not None:
        extra["store"] = {"redis_url": redis_url}
    return Site(tmp / node_id, grid=None, backend="redis", redis_prefix=prefix, extra=extra)  # type: ignore[arg-type]


def _accept(_: LeanStation, __: str, ___: dict[str, Any]) -> dict[str, Any]:
    return {"status": "Accepted"}


HANDLERS: dict[str, CallHandler] = {"Reset": _accept}


# A station that charges one car ---------------------------------------------------------------------
@dataclass
class Sent:
    action: str
    seq: int | None  # a TransactionEvent's seqNo
    wh: float | None  # a MeterValues message's energy register (unique per message)
    sent_at: float  # monotonic
    answered_at: float | None = None
    outcome: str = "none"  # "ack", a CALLERROR code, or "none" (connection lost / no answer in time)


@dataclass
class Charger:
    """One station with one car charging, over a lean socket: a transaction, then alternately an
    Updated TransactionEvent and a MeterValues message; it remembers every message and its answer."""

    station_id: str
    seq: int = 0
    wh: float = 0.0
    ws: LeanStation | None = None
    booted: bool = False
    log: list[Sent] = field(default_factory=list)
    reconnects: int = 0
    attempts: int = 0  # connection attempts after the first connection, failed ones included

    @property
    def tx(self) -> str:
        return f"TX-{self.station_id}"

    @property
    def connected(self) -> bool:
        return self.ws is not None and self.ws.is_open

    async def connect(self, port: int, timeout: float = 10.0) -> None:
        self.ws = await open_station(self.station_id, "127.0.0.1", port, "/ocpp", HANDLERS, timeout)
        if not self.booted:
            reply = await self.ask("BootNotification", msg.boot())
            assert reply is not None and reply[0] == 3 and reply[2]["status"] == "Accepted", reply
            self.booted = True

    async def reconnect(self, ports: Sequence[int], deadline: float) -> None:
        """Try the ports in turn (with a short, jittered pause) until one takes the station."""
        attempt = 0
        while True:
            port = ports[attempt % len(ports)]
            attempt += 1
            self.attempts += 1
            try:
                await self.connect(port, timeout=5.0)
                self.reconnects += 1
                return
            except (OSError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.station_id} could not reconnect: {exc}") from exc
                await asyncio.sleep(0.1 + random.random() * 0.3)

    def abort(self) -> None:
        if self.ws is not None:
            self.ws.abort()

    async def ask(self, action: str, payload: str, timeout: float = ANSWER_TIMEOUT_S) -> list[Any] | None:
        """The answer frame, or None when the connection ended first or nothing came in time."""
        ws = self.ws
        if ws is None or not ws.is_open:
            return None
        answer: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

        def done(_: LeanStation, frame: list[Any], __: float) -> None:
            if not answer.done():
                answer.set_result(frame)

        ws.call(action, payload, done)
        waits: list[asyncio.Future[Any]] = [answer, ws.closed]
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return answer.result() if answer.done() else None

    async def send(self, action: str, payload: str, *, seq: int | None = None, wh: float | None = None) -> Sent:
        sent = Sent(action, seq, wh, time.monotonic())
        self.log.append(sent)
        reply = await self.ask(action, payload)
        if reply is not None:
            sent.answered_at = time.monotonic()
            sent.outcome = "ack" if reply[0] == 3 else str(reply[2])
        return sent

    def _event(self, kind: str, seq: int, trigger: str, state: str = "Charging") -> str:
        return msg.transaction_event(kind, self.tx, seq, trigger, self.wh, 11000.0, state)

    async def start(self) -> None:
        reply = await self.ask("StatusNotification", msg.status("Occupied"))
        assert reply is not None and reply[0] == 3, reply
        sent = await self.send("TransactionEvent", self._event("Started", 0, "CablePluggedIn"), seq=0)
        assert sent.outcome == "ack", sent

    async def step(self) -> Sent:
        self.wh += 1.0
        if len(self.log) % 2:
            self.seq += 1
            return await self.send("TransactionEvent", self._event("Updated", self.seq, "MeterValuePeriodic"),
                                   seq=self.seq)
        return await self.send("MeterValues", msg.meter_values(self.wh, 11000.0), wh=self.wh)

    async def resend_unanswered_events(self) -> None:
        """What a station does after a reconnect: transaction events nobody answered go out again
        (same seqNo; OCPP 2.0.1 E04)."""
        for lost in [s for s in self.log if s.action == "TransactionEvent" and s.outcome != "ack"]:
            assert lost.seq is not None
            again = await self.send("TransactionEvent", self._event("Updated", lost.seq, "MeterValuePeriodic"),
                                    seq=lost.seq)
            assert again.outcome == "ack", again

    async def end(self) -> Sent:
        self.seq += 1
        self.wh += 1.0
        return await self.send("TransactionEvent", self._event("Ended", self.seq, "EVCommunicationLost", "Idle"),
                               seq=self.seq)

    def acked(self, before: float = float("inf")) -> tuple[set[int], set[float]]:
        """seqNos and MeterValues registers the CSMS acknowledged (answered before ``before``)."""
        ok = [s for s in self.log if s.outcome == "ack" and s.answered_at is not None and s.answered_at < before]
        return ({s.seq for s in ok if s.seq is not None}, {s.wh for s in ok if s.wh is not None})


async def steady_traffic(chargers: Sequence[Charger], messages: int = 8, timeout: float = 30.0) -> None:
    """Until every charger has had ``messages`` messages acknowledged (instead of a fixed warm-up)."""
    async with asyncio.timeout(timeout):
        while not all(sum(1 for s in c.log if s.outcome == "ack") >= messages for c in chargers):
            await asyncio.sleep(0.05)


async def drive(charger: Charger, stop: asyncio.Event, period_s: float, failover: Sequence[int] = ()) -> None:
    """Send at most one message per ``period_s`` until ``stop``; after a lost connection, reconnect to
    the ``failover`` ports and send the unanswered transaction events again."""
    while not stop.is_set():
        if not charger.connected:
            if not failover:
                await asyncio.sleep(period_s)
                continue
            await charger.reconnect(failover, time.monotonic() + 30.0)
            await charger.resend_unanswered_events()
        began = time.monotonic()
        await charger.step()
        await asyncio.sleep(max(0.0, period_s - (time.monotonic() - began)))


async def stored(api: Api, charger: Charger) -> tuple[dict[str, Any], set[int], set[float]]:
    """The transaction as the API shows it, its stored seqNos and the energy registers of its samples."""
    status, detail = await api.request("GET", f"/api/transactions/{charger.station_id}/{charger.tx}")
    assert status == 200, (status, detail)
    seqs = {int(e["seqNo"]) for e in detail["events"]}
    registers = {round(float(p["energy_wh"]), 1) for p in detail["energy_series"]}
    return detail, seqs, registers


async def assert_nothing_acked_lost(api: Api, chargers: Sequence[Charger]) -> None:
    for c in chargers:
        _, seqs, registers = await stored(api, c)
        acked_seqs, acked_registers = c.acked()
        assert acked_seqs <= seqs, (c.station_id, sorted(acked_seqs - seqs))
        assert acked_registers <= registers, (c.station_id, sorted(acked_registers - registers))


async def connected_on(api: Api) -> set[str]:
    return {s["station_id"] for s in (await api.get("/api/stations"))["stations"] if s["connected"]}


async def until_connected(api: Api, station_ids: set[str], timeout: float) -> float:
    """Seconds until the node's API shows every one of ``station_ids`` as connected."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(AssertionError, OSError):  # a node may answer 5xx while Redis is away
                if station_ids <= await connected_on(api):
                    return time.monotonic() - started
            await asyncio.sleep(0.2)


async def reset_through(api: Api, station_id: str, within_s: float = 0.0) -> None:
    """A Reset through ``api``'s node; with ``within_s``, a 409 or 504 is tried again until then (a node
    whose lease lapsed claims its stations back at its next renewal)."""
    deadline = time.monotonic() + within_s
    while True:
        status, answer = await api.post(f"/api/stations/{station_id}/commands/reset", {})
        if status not in (409, 504) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert status == 200, (station_id, status, answer)
    assert answer["response"]["status"] == "Accepted", answer


def alive(*procs: Daemon) -> None:
    for p in procs:
        assert p.proc.returncode is None, "a node died:\n" + p.text()[-3000:]


# Our own Redis server, so the test may kill and restart it --------------------------------------------
@dataclass
class OwnRedis:
    """A redis-server with an append-only file fsynced on every write and no RDB snapshots."""

    dir: Path
    port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        client = aioredis.from_url(self.url)
        try:
            async with asyncio.timeout(15):
                while True:
                    assert self.proc.returncode is None, (self.dir / "redis.log").read_text()[-2000:]
                    with contextlib.suppress(OSError, aioredis.RedisError):
                        if await client.ping():  # also false while it is still loading the AOF (error)
                            return
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        await asyncio.wait_for(self.proc.wait(), 15)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@contextlib.asynccontextmanager
async def own_redis(tmp: Path) -> AsyncIterator[OwnRedis]:
    (tmp / "redis").mkdir()
    server = OwnRedis(tmp / "redis")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# 1. Redis restart --------------------------------------------------------------------------------------
@pytest.mark.timeout(180)
async def test_redis_restart_loses_nothing_acknowledged_and_the_nodes_recover(tmp_path: Path) -> None:
    """Redis SIGKILLed under load and kept down past the nodes' leases, then started again on its AOF.
    While it is down, the stations get CALLERRORs (or no answer), never an acknowledgement; afterwards
    every acknowledged event and meter value is stored, both nodes show every station connected again,
    commands are forwarded again, and no node process died."""
    prefix = f"nbfail:{uuid.uuid4().hex}:"
    on_a = [Charger(f"RR-A{i}") for i in range(4)]
    on_b = [Charger(f"RR-B{i}") for i in range(4)]
    everyone = {c.station_id for c in on_a + on_b}
    stop = asyncio.Event()
    loops: list[asyncio.Task[None]] = []
    async with own_redis(tmp_path) as server:
        site_a, site_b = node(tmp_path, prefix, "node-a", server.url), node(tmp_path, prefix, "node-b", server.url)
        try:
            async with asyncio.timeout(150), daemon(site_a) as proc_a, daemon(site_b) as proc_b, \
                    Api(site_a) as api_a, Api(site_b) as api_b:
                for c in on_a:
                    await c.connect(site_a.ws_port)
                for c in on_b:
                    await c.connect(site_b.ws_port)
                for c in on_a + on_b:
                    await c.start()
                await until_connected(api_a, everyone, 10)
                loops = [asyncio.create_task(drive(c, stop, 0.2)) for c in on_a + on_b]
                await steady_traffic(on_a + on_b)

                await server.kill(signal.SIGKILL)
                down_at = time.monotonic()
                # Commands meanwhile (what they answer is shown, not asserted): run locally, forwarded.
                assert on_a[0].ws is not None
                resets_before = on_a[0].ws.calls_in
                commands = {via: (await asyncio.wait_for(api.post(f"/api/stations/{on_a[0].station_id}/commands/reset",
                                                                  {}), 10))[0]
                            for via, api in (("local", api_a), ("forwarded", api_b))}
                commands["reached the station"] = on_a[0].ws.calls_in - resets_before
                await asyncio.sleep(max(0.0, down_at + LEASE_S + 2.0 - time.monotonic()))  # past the leases
                up_at = time.monotonic()
                await server.start()
                # The stations' messages are acknowledged again, each station's within a bound.
                async with asyncio.timeout(30):
                    while not all(any(s.outcome == "ack" and s.sent_at > up_at for s in c.log) for c in on_a + on_b):
                        await asyncio.sleep(0.1)
                acked_again_s = max(min(s.answered_at or 0.0 for s in c.log if s.outcome == "ack" and s.sent_at > up_at)
                                    for c in on_a + on_b) - up_at
                await asyncio.sleep(1.0)
                stop.set()
                await asyncio.gather(*loops)

                # Nothing sent while Redis was down was acknowledged before it came back.
                during = [s for c in on_a + on_b for s in c.log
                          if s.sent_at > down_at and s.answered_at is not None and s.answered_at < up_at]
                assert during, "no message was answered while Redis was down"
                assert all(s.outcome != "ack" for s in during), [s for s in during if s.outcome == "ack"]
                outcomes = Counter(s.outcome for c in on_a + on_b for s in c.log if down_at < s.sent_at < up_at)
                refused_within = max((s.answered_at or 0.0) - s.sent_at for s in during)
                at_kill = Counter(s.outcome for c in on_a + on_b for s in c.log  # in flight when Redis died
                                  if s.sent_at < down_at and (s.answered_at is None or s.answered_at > down_at))

                # The nodes recover by themselves: leases, directory, forwarded commands.
                shown_a = await until_connected(api_a, everyone, 15)
                shown_b = await until_connected(api_b, everyone, 15)
                for api in (api_a, api_b):
                    assert (await api.get("/health/ready"))["checks"]["cluster_lease"] is True
                for c in on_a:
                    await reset_through(api_b, c.station_id)
                for c in on_b:
                    await reset_through(api_a, c.station_id)
                alive(proc_a, proc_b)
                assert "lease had lapsed" in proc_a.text() and "lease had lapsed" in proc_b.text()

                # Every acknowledged event and meter value is stored, read through the other node.
                await assert_nothing_acked_lost(api_b, on_a)
                await assert_nothing_acked_lost(api_a, on_b)
                active = {t["station_id"] for t in (await api_a.get("/api/transactions?active=true"))["transactions"]}
                assert everyone <= active
                acked = sum(len(c.acked()[0]) + len(c.acked()[1]) for c in on_a + on_b)
                print(f"Redis down {up_at - down_at:.1f} s: {acked} messages acknowledged and all stored; in flight "
                      f"at the kill: {dict(at_kill)}; sent while down: {dict(outcomes)} (each answered within "
                      f"{refused_within:.2f} s); commands meanwhile: {commands}; every station acknowledged again "
                      f"within {acked_again_s:.1f} s of the restart; all shown connected on A after {shown_a:.1f} s, "
                      f"on B after {shown_b:.1f} s")
        finally:
            stop.set()
            for task in loops:
                task.cancel()
            for c in on_a + on_b:
                c.abort()
            await site_a.cleanup()


# 2. A node SIGKILLed under load -------------------------------------------------------------------------
@pytest.mark.redis
@pytest.mark.timeout(120)
async def test_node_killed_under_load_loses_nothing_and_its_sessions_continue_on_the_other(tmp_path: Path) -> None:
    """Ten stations send transaction events and meter values to node A (about 50 messages/s in all);
    A is SIGKILLed. Everything acknowledged before is stored; the stations reconnect to B, send the
    events nobody answered again, and B knows their running transactions and stores their end."""
    prefix = f"nbfail:{uuid.uuid4().hex}:"
    site_a, site_b = node(tmp_path, prefix, "node-a"), node(tmp_path, prefix, "node-b")
    chargers = [Charger(f"NK-{i}") for i in range(10)]
    ids = {c.station_id for c in chargers}
    stop = asyncio.Event()
    loops: list[asyncio.Task[None]] = []
    try:
        async with asyncio.timeout(100), daemon(site_a) as proc_a, daemon(site_b) as proc_b, Api(site_b) as api_b:
            for c in chargers:
                await c.connect(site_a.ws_port)
                await c.start()
            loops = [asyncio.create_task(drive(c, stop, 0.2, failover=[site_b.ws_port])) for c in chargers]
            await steady_traffic(chargers)
            await proc_a.stop(signal.SIGKILL, timeout=10)
            killed = time.monotonic()
            acked_before = {c.station_id: c.acked(before=killed) for c in chargers}
            in_flight = sum(1 for c in chargers for s in c.log if s.sent_at < killed and s.outcome == "none")
            async with asyncio.timeout(20):
                while not all(c.reconnects and any(s.outcome == "ack" and s.sent_at > killed for s in c.log)
                              for c in chargers):
                    await asyncio.sleep(0.1)
            back_s = time.monotonic() - killed
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*loops)
            shown_s = await until_connected(api_b, ids, 10)

            for c in chargers:  # B knows every running session, and stores its end
                active = (await api_b.get(f"/api/transactions?station_id={c.station_id}&active=true"))["transactions"]
                assert [t["transaction_id"] for t in active] == [c.tx], active
            for c in chargers:
                ended = await c.end()
                assert ended.outcome == "ack", ended
            for c in chargers:
                detail, seqs, registers = await stored(api_b, c)
                assert detail["active"] is False and detail["ended_at"] is not None, detail
                seqs_before, registers_before = acked_before[c.station_id]
                assert seqs_before <= seqs and registers_before <= registers, c.station_id
                assert seqs == set(range(c.seq + 1)), (c.station_id, sorted(set(range(c.seq + 1)) - seqs))
            await assert_nothing_acked_lost(api_b, chargers)
            await reset_through(api_b, chargers[0].station_id)
            alive(proc_b)
            total = sum(len(s) + len(r) for s, r in acked_before.values())
            print(f"node A SIGKILLed with {total} messages acknowledged (all stored) and {in_flight} in flight; "
                  f"all 10 stations acknowledged on B {back_s:.1f} s after the kill, shown connected {shown_s:.1f} s "
                  f"later; their transactions continued and ended on B")
    finally:
        stop.set()
        for task in loops:
            task.cancel()
        for c in chargers:
            c.abort()
        await site_a.cleanup()


# 3. A reconnect storm -----------------------------------------------------------------------------------
STORM = 1000


def _lone_node(prefix: str) -> Cluster:
    """Node "node-a" on ``prefix`` (lease 1 s), in process."""
    return _node(prefix, "node-a", lease_s=1.0)


def _node(prefix: str, node_id: str, lease_s: float = LEASE_S) -> Cluster:
    """A cluster node in process, marking released stations in the store on ``prefix``."""
    return Cluster(REDIS_URL, prefix, node_id, lease_s=lease_s, forward_timeout_s=2.0, spawner=LoopSpawner(),
                   errors=ErrorLog(), station_key=RedisStore(REDIS_URL, prefix).keys.station)


def storm_size() -> int:
    """STORM, or fewer where the file limit cannot hold that many sockets: this process holds every
    station's, node A all of them (the nodes inherit this process's limit, raised here to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return min(STORM, soft - 300)


@pytest.mark.redis
@pytest.mark.timeout(150)
async def test_reconnect_storm_onto_the_remaining_nodes(tmp_path: Path) -> None:
    """1000 stations on node A; A is SIGKILLed and all of them reconnect at once, half to B and half to
    C. Both serve them all: every station is shown connected on both, answers a message, and commands
    for a sample reach them through either node."""
    prefix = f"nbfail:{uuid.uuid4().hex}:"
    site_a, site_b, site_c = (node(tmp_path, prefix, n) for n in ("node-a", "node-b", "node-c"))
    size = storm_size()
    assert size >= 300, f"the file limit leaves room for {size} stations only"
    chargers = [Charger(f"ST-{i:04d}") for i in range(size)]
    ids = {c.station_id for c in chargers}
    try:
        async with asyncio.timeout(130), daemon(site_a) as proc_a, daemon(site_b) as proc_b, \
                daemon(site_c) as proc_c, Api(site_b) as api_b, Api(site_c) as api_c:
            gate = asyncio.Semaphore(100)

            async def first(c: Charger) -> None:
                async with gate:
                    await c.connect(site_a.ws_port)

            await asyncio.gather(*(first(c) for c in chargers))
            await until_connected(api_b, ids, 30)

            await proc_a.stop(signal.SIGKILL, timeout=10)
            killed = time.monotonic()
            deadline = killed + 60.0

            async def back(i: int, c: Charger) -> None:
                # A station notices its socket is gone, then tries B or C (as a load balancer would spread them).
                assert c.ws is not None
                await asyncio.wait_for(asyncio.shield(c.ws.closed), 10)
                ports = [site_b.ws_port, site_c.ws_port] if i % 2 == 0 else [site_c.ws_port, site_b.ws_port]
                await c.reconnect(ports, deadline)
                reply = await c.ask("StatusNotification", msg.status("Available"), timeout=30.0)
                assert reply is not None and reply[0] == 3, (c.station_id, reply, c.connected, [  # what the nodes said
                    line for line in (proc_b.text() + proc_c.text()).splitlines() if c.station_id in line])

            await asyncio.gather(*(back(i, c) for i, c in enumerate(chargers)))
            reconnected_s = time.monotonic() - killed


            def notes(station_id: str = "") -> str:  # what the nodes said of leases, releases, the station
                lines = [" ".join(line.split()) for line in (proc_b.text() + proc_c.text()).splitlines()
                         if any(word in line for word in ("lapsed", "released", "cluster", "ERROR"))
                         or (station_id and station_id in line)]
                return f"{time.monotonic() - killed:.1f} s after the kill; " + "\n".join(lines[-40:])

            for api in (api_b, api_c):
                try:
                    await until_connected(api, ids, 30)
                except TimeoutError:
                    missing = sorted(ids - await connected_on(api))
                    raise AssertionError(f"{api.site.ws_port}: {len(missing)} not shown, e.g. {missing[:5]}; "
                                         f"{notes()}") from None
            shown_s = time.monotonic() - killed
            for c in random.Random(15).sample(chargers, 10):
                try:
                    await reset_through(api_b, c.station_id, within_s=2 * LEASE_S)
                    await reset_through(api_c, c.station_id, within_s=2 * LEASE_S)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; {notes(c.station_id)}") from None
            alive(proc_b, proc_c)
            attempts = sum(c.attempts for c in chargers)
            lapses = (proc_b.text() + proc_c.text()).count("lease had lapsed")
            print(f"{size} stations of SIGKILLed node A reconnected to B and C within {reconnected_s:.1f} s "
                  f"({attempts} connection attempts); B and C showed all connected {shown_s:.1f} s after the kill; "
                  f"leases lapsed on the way: {lapses}")
    finally:
        for c in chargers:
            c.abort()
        await site_a.cleanup()


# 4. The sweep against a node renewing at the same moment ----------------------------------------------
@pytest.mark.redis
async def test_a_sweep_keeps_the_stations_of_a_node_that_renewed_its_lease_meanwhile() -> None:
    """After a Redis outage every node finds its lease lapsed; node B's sweep may read the leases just
    before node A renews and claims its stations again. B must not then release A's stations (they
    would stay shown disconnected: A claims only once, when it finds its lease lapsed)."""
    prefix = f"nbfail:{uuid.uuid4().hex}:"
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    store = RedisStore(REDIS_URL, prefix=prefix)
    await store.open()
    b = _node(prefix, "node-b")
    try:
        for station_id in ("S-A", "S-DEAD"):
            await store.put_station(StationRecord(station_id=station_id, connected=True))
        await client.hset(f"{prefix}cluster:owners", mapping={"S-A": "node-a", "S-DEAD": "node-dead"})
        leases_read = b._live

        async def node_a_renews_right_after(nodes: Any) -> set[str]:
            live = await leases_read(nodes)  # neither A nor the dead node has a lease at this instant ...
            await client.set(f"{prefix}cluster:lease:node-a", "1", px=int(LEASE_S * 1000))  # ... then A renews
            return live

        b._live = node_a_renews_right_after  # type: ignore[method-assign]
        assert await b.sweep() == ["S-DEAD"]
        assert await client.hgetall(f"{prefix}cluster:owners") == {"S-A": "node-a"}
        assert [(s.station_id, s.connected) for s in await store.list_stations()] == [("S-A", True),
                                                                                     ("S-DEAD", False)]
    finally:
        await b.close()
        await store.close()
        await client.aclose()
        await delete_prefix(prefix)


@pytest.mark.redis
@pytest.mark.timeout(90)
async def test_the_lease_is_renewed_while_a_sweep_releases_thousands_of_stations() -> None:
    """A dead node held 10,000 stations: the sweep releases them and marks each one disconnected in the
    store (seconds when it marked one at a time, longer than the lease here). The sweeping node's own
    lease must be renewed meanwhile, or the other nodes would release its stations in turn."""
    prefix = f"nbfail:{uuid.uuid4().hex}:"
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    store = RedisStore(REDIS_URL, prefix=prefix)
    await store.open()
    b = _node(prefix, "node-b")
    try:
        await b.open()
        await asyncio.gather(*(store.put_station(StationRecord(station_id=f"D-{i:05d}", connected=True))
                               for i in range(10_000)))
        await client.hset(f"{prefix}cluster:owners", mapping={f"D-{i:05d}": "node-dead" for i in range(10_000)})
        b.start()
        looks = lapsed = 0
        started = time.monotonic()
        async with asyncio.timeout(60):
            while b._sweeping is None or not b._sweeping.done():  # the heartbeat's first sweep
                looks += 1
                lapsed += not await client.exists(f"{prefix}cluster:lease:node-b")
                await asyncio.sleep(0.05)
        assert lapsed == 0, f"node-b's lease was gone at {lapsed} of {looks} looks during its sweep"
        assert await client.hlen(f"{prefix}cluster:owners") == 0
        assert not any(s.connected for s in await store.list_stations())
        print(f"10,000 stations of a dead node released and marked within {time.monotonic() - started:.1f} s "
              f"(lease {LEASE_S:g} s): the lease was there at all {looks} looks")
    finally:
        await b.close()
        await store.close()
        await client.aclose()
        await delete_prefix(prefix)


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_a_claim_that_failed_after_a_lapse_is_tried_again() -> None:
    """A node finds its lease lapsed (renewed now) and claims its stations back; if that claim fails
    (Redis went away again between the two), the next renewal finds the lease alive, and the stations
    must still be claimed: the claim is due until it succeeded."""
    prefix = f"nbfail:{uuid.uuid4().hex}:"
    client = aioredis.from_url(REDIS_URL, decode_responses=True)

    a = _lone_node(prefix)
    a.local = lambda: ["S-1", "S-2"]
    claim = a._reclaim
    failures = 0

    async def fails_once(**kwargs: Any) -> Any:
        nonlocal failures
        if not failures:
            failures += 1
            raise aioredis.ConnectionError("Redis went away again")
        return await claim(**kwargs)

    a._reclaim = fails_once  # type: ignore[assignment]
    try:
        a.start()  # no lease taken: the first renewal finds it lapsed
        async with asyncio.timeout(10):
            while await client.hgetall(f"{prefix}cluster:owners") != {"S-1": "node-a", "S-2": "node-a"}:
                await asyncio.sleep(0.05)
        assert failures == 1
    finally:
        await a.close()
        await client.aclose()
        await delete_prefix(prefix)


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_a_lapsed_lease_with_no_stations_connected_claims_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """After the 30,000-station failover the survivors, whose stations had all just left, logged "lease had
    lapsed; claiming its 0 station(s) again" at every lapse while they worked through the departures: a
    warning of a claim that was no claim. With nothing connected the lapse is noted (how long since the
    last renewal) and no claim is made; with stations connected it still warns and claims them."""
    prefix = f"nbfail:{uuid.uuid4().hex}:"
    client = aioredis.from_url(REDIS_URL, decode_responses=True)

    a = _lone_node(prefix)
    claims: list[Any] = []
    claim = a._reclaim

    async def counted(**kwargs: Any) -> Any:
        claims.append(kwargs["args"][2:])
        return await claim(**kwargs)

    a._reclaim = counted  # type: ignore[assignment]
    caplog.set_level("INFO", logger="csms.cluster")
    try:
        await a.renew()  # no lease taken yet: this renewal finds it lapsed, with nothing connected
        assert not claims and not a._claim_due
        lapses = [r for r in caplog.records if "lease had lapsed" in r.getMessage()]
        assert len(lapses) == 1 and lapses[0].levelname == "INFO", [r.getMessage() for r in caplog.records]
        assert "none to claim" in lapses[0].getMessage() and "claiming" not in lapses[0].getMessage()
        await a.renew()  # the lease lives now: nothing more is logged or claimed (no claim is left due)
        assert not claims and [r for r in caplog.records if "lapsed" in r.getMessage()] == lapses

        await client.delete(f"{prefix}cluster:lease:node-a")  # it lapses again, now with a station here
        a.local = lambda: ["S-1"]
        await a.renew()
        assert claims == [["S-1"]] and await client.hgetall(f"{prefix}cluster:owners") == {"S-1": "node-a"}
        warned = [r for r in caplog.records if r.levelname == "WARNING" and "lease had lapsed" in r.getMessage()]
        assert len(warned) == 1 and "claiming its 1 station(s) again" in warned[0].getMessage()
        assert "last renewed" in warned[0].getMessage()
    finally:
        await a.close()
        await client.aclose()
        await delete_prefix(prefix)


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_a_sweep_does_not_announce_gone_a_station_that_reconnected_elsewhere_while_it_marked() -> None:
    """The sweep releases a dead node's stations, marks each disconnected in the store (seconds for
    thousands), then announces them gone. One that reconnected to a third node meanwhile was claimed
    and announced connected there; announced gone after that, the grid leader on the sweeping node
    took it as gone for good (1,261 of 10,000 moved stations never controlled again in a failover)."""
    prefix = f"nbfail:{uuid.uuid4().hex}:"
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    c = _node(prefix, "node-c")
    b = _node(prefix, "node-b")
    mark = b._mark_unheld

    async def reconnects_while_marking(**kwargs: Any) -> Any:
        await c.arrived("S-1")  # reconnected to node C while node B was still marking
        return await mark(**kwargs)

    b._mark_unheld = reconnects_while_marking  # type: ignore[assignment]
    announced: list[str] = []
    b.on_release = announced.extend
    try:
        await c.open()
        await b.open()
        await client.hset(f"{prefix}cluster:owners", mapping={"S-1": "node-dead", "S-2": "node-dead"})
        assert sorted(await b.sweep()) == ["S-1", "S-2"]
        assert announced == ["S-2"]
        assert await client.hget(f"{prefix}cluster:owners", "S-1") == "node-c"
    finally:
        await b.close()
        await c.close()
        await client.aclose()
        await delete_prefix(prefix)


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_a_sweep_does_not_mark_disconnected_a_station_that_reconnected_elsewhere_after_its_release() -> None:
    """The sweep releases a dead node's stations in the directory, then marks their records disconnected
    in the store. A station that reconnects to node C in between is claimed there and its record
    written connected (as a node does: the directory first, then the record); the sweep's mark must not
    overwrite that, or the store says disconnected for a connected station until it reconnects."""
    prefix = f"nbfail:{uuid.uuid4().hex}:"
    store = RedisStore(REDIS_URL, prefix=prefix)
    await store.open()
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    c = _node(prefix, "node-c")
    b = _node(prefix, "node-b")
    release = b._release_dead

    async def reconnects_right_after_the_release(**kwargs: Any) -> Any:
        released = await release(**kwargs)
        assert "S-MOVED" in released
        await c.arrived("S-MOVED")
        await store.set_connection_state("S-MOVED", True, datetime.now(UTC))
        return released

    b._release_dead = reconnects_right_after_the_release  # type: ignore[assignment]
    try:
        await c.open()
        await b.open()
        for station_id in ("S-MOVED", "S-GONE"):
            await store.put_station(StationRecord(station_id=station_id, connected=True))
        await client.hset(f"{prefix}cluster:owners", mapping={"S-MOVED": "node-dead", "S-GONE": "node-dead",
                                                              "S-NO-RECORD": "node-dead"})
        assert sorted(await b.sweep()) == ["S-GONE", "S-MOVED", "S-NO-RECORD"]
        assert [(s.station_id, s.connected) for s in await store.list_stations()] == [("S-GONE", False),
                                                                                     ("S-MOVED", True)]
        assert await store.get_station("S-NO-RECORD") is None  # a mark never creates a record
        assert await client.hgetall(f"{prefix}cluster:owners") == {"S-MOVED": "node-c"}
    finally:
        await b.close()
        await c.close()
        await store.close()
        await client.aclose()
        await delete_prefix(prefix)


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_a_departure_does_not_mark_disconnected_a_station_that_reconnected_elsewhere_at_once() -> None:
    """A station leaves node B and reconnects to node C right after B released it in the directory:
    C wrote its record connected, and B's mark of the departure must not overwrite that. A plain
    departure is still marked."""
    prefix = f"nbfail:{uuid.uuid4().hex}:"
    store = RedisStore(REDIS_URL, prefix=prefix)
    await store.open()
    c = _node(prefix, "node-c")
    b = _node(prefix, "node-b")
    release = b._release

    async def reconnects_right_after_the_release(**kwargs: Any) -> Any:
        released = await release(**kwargs)
        if "S-MOVED" in kwargs["args"]:
            await c.arrived("S-MOVED")
            await store.set_connection_state("S-MOVED", True, datetime.now(UTC))
        return released

    b._release = reconnects_right_after_the_release  # type: ignore[assignment]
    try:
        await c.open()
        await b.open()
        for station_id in ("S-MOVED", "S-LEFT"):
            await store.put_station(StationRecord(station_id=station_id, connected=True))
            await b.arrived(station_id)
        assert await b.departed("S-MOVED")  # released here; C holds it now
        assert await b.departed("S-LEFT")
        assert [(s.station_id, s.connected) for s in await store.list_stations()] == [("S-LEFT", False),
                                                                                     ("S-MOVED", True)]
        assert await c.owner("S-MOVED") == "node-c"
    finally:
        await b.close()
        await c.close()
        await store.close()
        await delete_prefix(prefix)
