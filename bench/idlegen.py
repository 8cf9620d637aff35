"""One load-generator process of the idle-stations row (bench/workers.py): connects and boots a range of lean
stations from one source address and holds them until told to stop.

Why a process of its own: one process cannot hold more sockets than its file limit (20,000 here), and one source
address has only the ephemeral port range (about 28,000) of them, so 50,000 idle stations need several processes,
each on its own 127.0.0.x. The parent reads JSON lines on stdout:

- ``{"event": "progress", "booted": n, "failures": n, "seconds": s}`` now and then while connecting;
- ``{"event": "booted", "held": n, "failures": {reason: n}, "seconds": s, "fd_limit": n}`` once, when done;
- ``{"event": "alive", "open": n}`` for each ``count`` line written to its stdin (sockets still open now);
- ``{"event": "stopped", "open": n}`` when stdin closes or on SIGTERM/SIGINT: it aborts every socket and exits 0.

``python -m bench.idlegen --port P --first 0 --count 10000 --local-host 127.0.0.2``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import stat
import sys
import time
from collections import Counter
from typing import Any

import orjson

from bench import loadgen
from bench.servers import raise_nofile
from bench.wsclient import LeanStation

#: Stations per connect_many call: a progress line after each, without a hook in connect_many.
CHUNK = 2000


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(orjson.dumps({"event": event, **fields}).decode() + "\n")
    sys.stdout.flush()


async def _connect(args: argparse.Namespace, held: list[LeanStation], failures: Counter[str]) -> None:
    started = time.monotonic()
    deadline = started + args.budget_s
    last = args.first + args.count
    for first in range(args.first, last, CHUNK):
        ids = [f"{args.id_prefix}-{i:06d}" for i in range(first, min(first + CHUNK, last))]
        fleet = await loadgen.connect_many(ids, args.port, args.path_prefix, concurrency=args.concurrency,
                                           timeout=args.timeout, deadline=deadline, local_host=args.local_host)
        held += fleet.stations
        failures += fleet.failures
        emit("progress", booted=len(held), failures=sum(failures.values()), seconds=time.monotonic() - started)


async def _commands(stop: asyncio.Event, held: list[LeanStation]) -> None:
    """Answer ``count`` lines on stdin; EOF (the parent closed it, or died) means stop. Stdin that is not a pipe
    (a terminal, /dev/null) is not read: then only a signal stops it."""
    if not stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"count":
            emit("alive", open=sum(st.is_open for st in held))
    stop.set()


async def main(args: argparse.Namespace) -> int:
    fd_limit = raise_nofile()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    held: list[LeanStation] = []
    failures: Counter[str] = Counter()
    commands = asyncio.create_task(_commands(stop, held))
    started = time.monotonic()
    connecting = asyncio.create_task(_connect(args, held, failures))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if connecting.done():
            connecting.result()
            emit("booted", held=len(held), failures=dict(failures), seconds=time.monotonic() - started,
                 fd_limit=fd_limit)
            await stopping
    finally:
        for task in (connecting, commands, stopping):
            task.cancel()
        still_open = sum(st.is_open for st in held)
        loadgen.close_all(held, abort=True)
        emit("stopped", open=still_open)
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.idlegen", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path-prefix", default="/ocpp")
    p.add_argument("--id-prefix", default="WI")
    p.add_argument("--first", type=int, default=0, help="first station number of the range")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--local-host", default=None, help="source address, e.g. 127.0.0.2")
    p.add_argument("--concurrency", type=int, default=100, help="handshakes + boots in flight")
    p.add_argument("--timeout", type=float, default=60.0, help="per connect and per boot")
    p.add_argument("--budget-s", type=float, default=600.0, help="stations not started by then are skipped")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
