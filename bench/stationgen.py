"""One station process of the failover row (bench/cluster.py): charging lean stations spread over the cluster's
nodes, from one source address, answering the grid controller as part 2's fleet does (bench/fleet.py), and on
command moving the stations of a killed node to the survivors.

Why a process of its own: one process holds at most its file limit (20,000 here) of sockets, and one source
address only the ephemeral port range (about 28,000), so a failover of a node holding 10,000 stations (30,000
over three nodes) needs several. Station ``i`` of the range is ``<id-prefix>-<i:06d>`` on node ``i mod
len(ports)``. Times are ``time.perf_counter()`` (CLOCK_MONOTONIC, the same clock in every process) minus the
``t0`` the parent sends, so they are seconds after the parent's own moment.

The parent reads JSON lines on stdout:

- ``{"event": "progress", "booted": n, "failures": n, "seconds": s}`` now and then while connecting;
- ``{"event": "booted", "held": n, "transactions": n, "failures": {reason: n}, "seconds": s, "fd_limit": n,
  "profiles": n}`` once every station is connected, booted and charging (or the budget ran out);
- ``{"event": "quiet", "profiles": n}`` answering ``{"cmd": "quiet", "quiet_s": s, "timeout": s}``: no profile
  arrived for ``quiet_s`` and no call of ours is unanswered;
- ``{"event": "armed", "moved": n}`` answering ``{"cmd": "failover", "t0": t, "node": k, "to": [port, ...],
  "timeout": s, "concurrency": n}``: the stations on node ``k`` reconnect, once their socket is gone, to the
  ports in ``to`` in turn (no new boot: a lost link), every station's first TxProfile acknowledgement is timed;
- ``{"event": "tick", "acks": [[id, s], ...], "back": [[id, s], ...], "retries": n, "final": false}`` every
  ``TICK_S`` while armed, with what is new since the last one; ``{"cmd": "disarm"}`` stops it with a last tick
  (``"final": true``);
- ``{"event": "alive", "open": n}`` for a ``count`` line; ``{"event": "stopped", "open": n}`` when stdin closes
  or on SIGTERM/SIGINT (it aborts every socket and exits 0).

``python -m bench.stationgen --ports 9001,9002,9003 --first 0 --count 10000 --local-host 127.0.0.2``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import stat
import sys
import time
from collections import Counter
from typing import Any

import orjson

from bench import loadgen
from bench.fleet import CAR_W, Fleet, connect_spread, quiet
from bench.idlegen import CHUNK, emit
from bench.servers import raise_nofile
from bench.wsclient import LeanStation, open_station

TICK_S = 0.25


class Stations:
    """This process's stations and what it is told to do with them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.fleet = Fleet()
        self.where: dict[str, int] = {}  # station -> node index
        self.back: dict[str, float] = {}  # moved station -> seconds after t0 it was connected again
        self.retries = 0
        self.moving: list[asyncio.Task[None]] = []
        self.ticker: asyncio.Task[None] | None = None
        self._sent = (0, 0)  # acks and back already reported
        self.nodes = len(args.ports.split(","))
        self.connected = asyncio.Event()  # set up: commands may run

    async def connect(self) -> None:
        a, fleet = self.args, self.fleet
        ports = [int(p) for p in a.ports.split(",")]
        assert len(ports) == self.nodes
        started = time.monotonic()
        deadline = started + a.budget_s
        failures: Counter[str] = Counter()
        last = a.first + a.count
        for first in range(a.first, last, CHUNK):
            by_node: list[list[str]] = [[] for _ in ports]
            for i in range(first, min(first + CHUNK, last)):
                by_node[i % len(ports)].append(self.station_id(i))
            where, failed = await connect_spread(fleet, by_node, ports, a.path_prefix, concurrency=a.concurrency,
                                                 deadline=deadline, local_host=a.local_host)
            self.where.update(where)
            failures += failed
            emit("progress", booted=len(fleet.stations), failures=sum(failures.values()),
                 seconds=time.monotonic() - started)
        fleet.charging()
        started_tx = await loadgen.start_transactions(fleet.stations, power_w=CAR_W, timeout=a.timeout)
        emit("booted", held=len(fleet.stations), transactions=started_tx, failures=dict(failures),
             seconds=time.monotonic() - started, fd_limit=raise_nofile(), profiles=fleet.profiles)
        self.connected.set()

    def station_id(self, i: int) -> str:
        return f"{self.args.id_prefix}-{i:06d}"

    async def command(self, cmd: dict[str, Any]) -> None:
        kind = cmd.get("cmd")
        if kind == "count":
            emit("alive", open=sum(st.is_open for st in self.fleet.stations))
        elif kind == "quiet":
            await quiet(self.fleet, float(cmd["quiet_s"]), float(cmd["timeout"]))
            emit("quiet", profiles=self.fleet.profiles)
        elif kind == "failover":
            self.failover(float(cmd["t0"]), int(cmd["node"]), [int(p) for p in cmd["to"]], float(cmd["timeout"]),
                          int(cmd.get("concurrency", 300)))
        elif kind == "disarm":
            await self.disarm()

    def failover(self, t0: float, node: int, to: list[int], timeout: float, concurrency: int) -> None:
        """Time every station's first TxProfile acknowledgement from ``t0``; move node ``node``'s stations."""
        fleet = self.fleet
        fleet.arm(0.0, t0)  # the aggregate power is the whole fleet's, not one process's: not judged here
        self.back, self.retries, self._sent = {}, 0, (0, 0)
        end = time.monotonic() + timeout
        sem = asyncio.Semaphore(concurrency)
        index = {st.station_id: k for k, st in enumerate(fleet.stations)}
        prefix = self.args.path_prefix

        async def reconnect(i: int, gone: LeanStation) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(gone.closed), max(0.1, end - time.monotonic()))
            for attempt in itertools.count():
                if time.monotonic() >= end:
                    return
                try:
                    async with sem:
                        st = await open_station(gone.station_id, "127.0.0.1", to[(i + attempt) % len(to)], prefix,
                                                fleet.handlers(), timeout=10, local_host=self.args.local_host)
                except (OSError, TimeoutError):
                    self.retries += 1
                    await asyncio.sleep(min(2.0, 0.05 * 2 ** (attempt + 1)))
                    continue
                st.state.update(gone.state)
                fleet.stations[index[st.station_id]] = st
                self.back[st.station_id] = time.perf_counter() - t0
                return

        moved = [st for st in fleet.stations if self.where.get(st.station_id) == node]
        # alternately over the survivors: the moved stations' numbers step by the node count
        self.moving = [asyncio.ensure_future(reconnect(int(st.station_id.rsplit("-", 1)[1]) // self.nodes, st))
                       for st in moved]
        self.ticker = asyncio.ensure_future(self._tick())
        emit("armed", moved=len(moved))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._emit_tick(final=False)

    def _emit_tick(self, final: bool) -> None:
        acks, back = self._sent
        new_acks = list(itertools.islice(self.fleet.acks.items(), acks, None))
        new_back = list(itertools.islice(self.back.items(), back, None))
        self._sent = (acks + len(new_acks), back + len(new_back))
        emit("tick", acks=new_acks, back=new_back, retries=self.retries, final=final)

    async def disarm(self) -> None:
        self.fleet.armed = False
        tasks = [*self.moving, *([self.ticker] if self.ticker else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.moving, self.ticker = [], None
        self._emit_tick(final=True)


async def _commands(stop: asyncio.Event, stations: Stations) -> None:
    """Run the commands on stdin in order once the stations are set up; EOF (the parent closed it, or died)
    means stop at once, set up or not. Stdin that is not a pipe is not read: then only a signal stops it."""
    if not stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def run() -> None:
        await stations.connected.wait()
        while True:
            await stations.command(await queue.get())

    runner = asyncio.create_task(run())
    try:
        while line := await reader.readline():
            if line.strip() == b"count":
                queue.put_nowait({"cmd": "count"})
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                queue.put_nowait(orjson.loads(line))
    finally:
        runner.cancel()
        stop.set()


async def main(args: argparse.Namespace) -> int:
    raise_nofile()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stations = Stations(args)
    commands = asyncio.create_task(_commands(stop, stations))
    connecting = asyncio.create_task(stations.connect())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if connecting.done():
            connecting.result()
            await stopping
    finally:
        for task in (connecting, stopping, commands, *stations.moving, stations.ticker):
            if task is not None:
                task.cancel()
        still_open = sum(st.is_open for st in stations.fleet.stations)
        loadgen.close_all(stations.fleet.stations, abort=True)
        emit("stopped", open=still_open)
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.stationgen", description=__doc__.split("\n\n")[0])
    p.add_argument("--ports", required=True, help="the nodes' websocket ports, comma separated, in node order")
    p.add_argument("--path-prefix", default="/ocpp")
    p.add_argument("--id-prefix", default="GF", help="the grid's members are G*")
    p.add_argument("--first", type=int, default=0, help="first station number of the range")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--local-host", default=None, help="source address, e.g. 127.0.0.2")
    p.add_argument("--concurrency", type=int, default=120, help="handshakes + boots in flight, over all nodes")
    p.add_argument("--timeout", type=float, default=120.0, help="per connect, boot and transaction start")
    p.add_argument("--budget-s", type=float, default=600.0, help="stations not started by then are skipped")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
