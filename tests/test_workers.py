"""`python -m csms serve --workers N` as an operator runs it: one supervisor, N worker processes on one
station port and one API port (SO_REUSEPORT), each a cluster node on one Redis prefix. Stations from
the `ocpp` package land on both workers, commands reach them whichever worker the API request hits,
a SIGKILLed worker is restarted and its stations come back, SIGTERM stops everything cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from csms.config import ConfigError, parse_config
from csms.workers import Ports, worker_config, workers_config
from tests.grid_outside import ENV, REPO, Api, Daemon, Site
from tests.ocpp_station import LibStation
from tests.test_cluster import profile_through

READY = re.compile(r"all (\d+) workers ready: stations on ws://127\.0\.0\.1:(\d+)/ocpp/<stationId>, "
                   r"operator API on http://127\.0\.0\.1:(\d+)/")
WORKER_READY = re.compile(r"worker (\d+) \(pid (\d+)\) ready")
MAX_STATIONS = 40  # connected one by one until both workers hold some (all on one: 2 ** -39)


def site(tmp: Path, **extra: Any) -> Site:
    """Port 0 in the config: the supervisor picks one port each and every worker shares it."""
    return Site(tmp, grid=None, backend="redis", ws_port=0, api_port=0,  # type: ignore[arg-type]
                extra={"cluster": {"node_id": "wk", "lease_s": 2.0, "forward_timeout_s": 3.0}, **extra})


def worker_pids(lines: list[str]) -> dict[int, int]:
    """The latest pid of each worker, from the supervisor's log."""
    pids: dict[int, int] = {}
    for line in lines:
        for index, pid in WORKER_READY.findall(line):
            pids[int(index)] = int(pid)
    return pids


async def ready_count(lines: list[str], count: int, timeout: float) -> None:
    """Until the supervisor has said ``all N workers ready`` ``count`` times."""
    async with asyncio.timeout(timeout):
        while sum(bool(READY.search(line)) for line in lines) < count:
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def supervisor(s: Site, workers: int = 2, timeout: float = 60.0) -> AsyncIterator[Daemon]:
    """`csms serve --workers N` for the site; the site's ports become the ones the supervisor chose."""
    config = s.write_config()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "csms", "serve", "--config", str(config),
                                                "--workers", str(workers), cwd=REPO, env=ENV,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    lines: list[str] = []
    running = Daemon(proc, lines)

    async def drain() -> None:  # a full pipe would block the processes' logging
        assert proc.stderr is not None
        async for line in proc.stderr:
            lines.append(line.decode())

    running.drain = asyncio.create_task(drain())
    try:
        async with asyncio.timeout(timeout):
            while not (ready := next((m for line in lines if (m := READY.search(line))), None)):
                assert proc.returncode is None, "supervisor exited before its workers were ready:\n" + "".join(lines)
                await asyncio.sleep(0.1)
        assert int(ready.group(1)) == workers
        s.ws_port, s.api_port = int(ready.group(2)), int(ready.group(3))
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        running.drain.cancel()


async def owners(api: Api) -> dict[str, str | None]:
    """Station -> the node the API names for it (None: no live node holds it)."""
    return {s["station_id"]: s["node"] for s in (await api.get("/api/stations"))["stations"] if s["connected"]}


async def until_held(api: Api, stations: list[LibStation], timeout: float) -> dict[str, str | None]:
    """Until the API (whichever worker answers) shows every station connected to a live node."""
    async with asyncio.timeout(timeout):
        while True:
            held = await owners(api)
            if all(held.get(st.station_id) for st in stations):
                return held
            await asyncio.sleep(0.1)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def test_two_workers_share_the_port_route_commands_and_restart_a_killed_worker(tmp_path: Path) -> None:
    s = site(tmp_path)
    stations: list[LibStation] = []
    try:
        async with asyncio.timeout(150), supervisor(s) as sup, Api(s) as api:
            pids = worker_pids(sup.log)
            assert sorted(pids) == [0, 1] and len(set(pids.values())) == 2, sup.text()
            # Stations connect to the one port until both workers hold some.
            held: dict[str, str | None] = {}
            while len(set(held.values())) < 2 and len(stations) < MAX_STATIONS:
                station = LibStation(f"WK-{len(stations):02d}")
                await station.connect(s.ws_url)
                stations.append(station)
                held = await until_held(api, stations, 10)
            assert set(held.values()) == {"wk-w0", "wk-w1"}, held
            # A command through the API (answered by either worker) reaches every station wherever it is.
            for i, station in enumerate(stations):
                await profile_through(api, station, 100 + i)

            # SIGKILL worker 1: the supervisor restarts it; its stations reconnect and are reachable again.
            victim = [st for st in stations if held[st.station_id] == "wk-w1"]
            os.kill(pids[1], signal.SIGKILL)
            killed = time.monotonic()
            for station in victim:
                await station.wait_gone(10)
            await ready_count(sup.log, 2, 30)
            restarted_s = time.monotonic() - killed
            new_pids = worker_pids(sup.log)
            assert new_pids[0] == pids[0] and new_pids[1] != pids[1] and alive(new_pids[1]), sup.text()
            assert "worker 1 (pid %d) died unexpectedly (killed by SIGKILL)" % pids[1] in sup.text()
            for station in victim:
                await station.connect(s.ws_url)
            held = await until_held(api, stations, 10)
            assert set(held.values()) <= {"wk-w0", "wk-w1"}, held
            for i, station in enumerate(stations):
                await profile_through(api, station, 200 + i)

            # SIGTERM to the supervisor: both workers stop gracefully, nothing left behind.
            code = await sup.stop(signal.SIGTERM, timeout=40)
            assert code == 0, sup.text()[-3000:]
            assert not any(alive(pid) for pid in new_pids.values()), new_pids
            assert "all workers stopped" in sup.text() and sup.text().count("csms: stopped") >= 2
            for station in stations:
                await station.wait_gone(5)
        print(f"{len(stations)} stations over 2 workers ({len(victim)} on the killed one); worker 1 ready again "
              f"{restarted_s:.1f} s after its SIGKILL")
    finally:
        for station in stations:
            await station.stop()
        await s.cleanup()


async def serve_once(config: Path, *args: str, timeout: float = 60.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "csms", "serve", "--config", str(config),
                                                *args, cwd=REPO, env=ENV, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_workers_need_the_redis_store(tmp_path: Path) -> None:
    s = Site(tmp_path, grid=None)  # type: ignore[arg-type]  # SQLite
    code, err = await serve_once(s.write_config(), "--workers", "2")
    assert code == 3, err
    assert "store.backend" in err and "--workers 2 needs store.backend: redis" in err, err
    code, err = await serve_once(s.write_config(), "--workers", "0")
    assert code == 2 and "expected a whole number of at least 1" in err, err


async def test_a_worker_that_keeps_dying_at_start_stops_the_supervisor(tmp_path: Path) -> None:
    """Redis unreachable: every worker dies before it is ready; the supervisor gives up with exit 1."""
    s = site(tmp_path, store={"redis_url": "redis://127.0.0.1:1/0"})
    started = time.monotonic()
    code, err = await serve_once(s.write_config(), "--workers", "2", timeout=90)
    assert code == 1, err[-3000:]
    assert "died 3 times in a row before it was ready" in err, err[-3000:]
    assert time.monotonic() - started < 80


def test_workers_config_implies_a_cluster() -> None:
    redis = {"store": {"backend": "redis"}, "websocket": {"port": 0}}
    config = workers_config(parse_config(redis, "<t>"), 3)
    assert config.cluster is not None and config.cluster.node_id is None
    worker = worker_config(config, 2, Ports(4100, 4101))
    assert worker.cluster is not None and worker.cluster.node_id.endswith("-w2")  # type: ignore[union-attr]
    assert (worker.websocket.port, worker.api.port) == (4100, 4101)
    named = workers_config(parse_config({**redis, "cluster": {"node_id": "edge"}}, "<t>"), 2)
    assert worker_config(named, 0, Ports(4100)).cluster.node_id == "edge-w0"  # type: ignore[union-attr]
    assert workers_config(parse_config({}, "<t>"), 1).cluster is None  # one worker: as before
    with pytest.raises(ConfigError) as err:
        workers_config(parse_config({"store": {"backend": "postgres"}}, "<t>"), 2)
    assert [i.key for i in err.value.issues] == ["store.backend"]
    with_grid = workers_config(parse_config({**redis, "grid": {"transformers": {"T1": {"capacity_kw": 100}}}},
                                            "<t>"), 2)
    assert with_grid.grid is not None and with_grid.cluster is not None  # one elected controller
    assert Ports.parse(Ports(1, None, 3).text()) == Ports(1, None, 3)


async def test_two_workers_run_one_grid_controller(tmp_path: Path) -> None:
    """Grid control with workers: one worker leads; a limit posted on the shared API port (whichever
    worker answers, the others forward to the leader's own port) holds on the stations of both."""
    from tests.test_cluster_grid import grid_config, power_kw

    s = site(tmp_path)
    s.grid = {**grid_config(), "transformers": {"T1": {"capacity_kw": 200, "members": [{"station": "WK-*"}]}}}
    stations: list[LibStation] = []
    try:
        async with asyncio.timeout(120), supervisor(s) as sup, Api(s) as api:
            held: dict[str, str | None] = {}
            while len(set(held.values())) < 2 and len(stations) < MAX_STATIONS:
                station = LibStation(f"WK-{len(stations):02d}", meter_interval_s=0.3)
                await station.connect(s.ws_url)
                stations.append(station)
                held = await until_held(api, stations, 10)
            assert set(held.values()) == {"wk-w0", "wk-w1"}, held
            for station in stations:
                await station.start_transaction(1)
            limit_kw = 4.0 * len(stations)  # under what the cars would draw (11 kW each)
            answered = set()
            for attempt in range(20):  # a new connection each: the shared port hands them to either worker
                status, forwarded = await post_fresh(s, {"signal_id": f"wk-{attempt}", "limit_kw": limit_kw,
                                                         "source": "operator"})
                assert status == 202
                answered.add(forwarded)
                if len(answered) == 2:
                    break
            assert None in answered and len(answered) == 2, answered  # answered by the leader, and forwarded
            controller = (await api.get("/api/grid"))["controller"]["node"]
            assert controller in {"wk-w0", "wk-w1"}
            async with asyncio.timeout(20):
                while not (all(st.tx_pushes() for st in stations) and power_kw(stations) <= limit_kw + 0.05):
                    await asyncio.sleep(0.1)
            assert await sup.stop(signal.SIGTERM, timeout=40) == 0, sup.text()[-3000:]
    finally:
        for station in stations:
            await station.stop()
        await s.cleanup()


async def post_fresh(s: Site, body: dict[str, Any]) -> tuple[int, str | None]:
    """POST a limit on a connection of its own; the status and, if another worker forwarded it to the
    leader, the leader's own address."""
    import aiohttp

    from tests.grid_outside import ADMIN_TOKEN

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as session, \
            session.post(f"{s.api_url}/api/grid/transformers/T1/limit", json=body) as answer:
        return answer.status, answer.headers.get("X-Netbewust-Grid-Answered-By")
