"""Two daemon nodes on one Redis prefix, as an operator runs them (`python -m csms serve`, one process
each): the station -> node directory with leases, commands forwarded to the node holding the station,
connection state shown on every node, and a SIGKILLed node's stations released and taken over."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from csms.config import ConfigError, parse_config
from csms.store.redis_store import RedisStore
from tests.daemon_fixture import running_daemon
from tests.grid_outside import ADMIN_TOKEN, ENV, REDIS_URL, REPO, Api, Site, daemon
from tests.ocpp_station import LibStation
from tests.redis_kit import delete_prefix
from tests.spawning import LoopSpawner
from tests.waiting import until as wait_until

LEASE_S = 2.0
PROFILE: dict[str, Any] = {
    "id": 7, "stackLevel": 1, "chargingProfilePurpose": "ChargingStationMaxProfile", "chargingProfileKind": "Absolute",
    "chargingSchedule": [{"id": 1, "chargingRateUnit": "A", "startSchedule": "2026-01-01T00:00:00Z",
                          "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0}]}]}


def node(tmp: Path, prefix: str, node_id: str) -> Site:
    (tmp / node_id).mkdir(parents=True, exist_ok=True)
    return Site(tmp / node_id, grid=None, backend="redis", redis_prefix=prefix,  # type: ignore[arg-type]
                extra={"cluster": {"node_id": node_id, "lease_s": LEASE_S, "forward_timeout_s": 2.0}})


async def connected(api: Api, station_id: str) -> bool | None:
    for s in (await api.get("/api/stations"))["stations"]:
        if s["station_id"] == station_id:
            return bool(s["connected"])
    return None


async def until(api: Api, station_id: str, want: bool, timeout: float) -> float:
    """Seconds until the node's API shows the station's connection state as ``want``."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while await connected(api, station_id) is not want:
            await asyncio.sleep(0.1)
    return time.monotonic() - started


async def stream_events(site: Site, kinds: str, into: list[dict[str, Any]]) -> None:
    """The node's live event stream (SSE) into ``into`` until cancelled."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as session, \
            session.get(f"{site.api_url}/api/events?kinds={kinds}") as response:
        assert response.status == 200
        async for raw in response.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                into.append(orjson.loads(line[6:]))


async def profile_through(api: Api, station: LibStation, profile_id: int) -> None:
    body = {"evse_id": 0, "profile": {**PROFILE, "id": profile_id}}
    status, answer = await api.post(f"/api/stations/{station.station_id}/commands/set-charging-profile", body)
    assert status == 200, answer
    assert answer["response"]["status"] == "Accepted"
    assert profile_id in station.profiles


async def generic_through(api: Api, station: LibStation) -> None:
    before = station.calls["GetCompositeSchedule"]
    status, answer = await api.post(f"/api/stations/{station.station_id}/call/GetCompositeSchedule",
                                    {"duration": 60, "evseId": 1})
    assert status == 200, answer
    assert answer["response"]["status"] == "Accepted"
    assert station.calls["GetCompositeSchedule"] == before + 1


async def test_two_nodes_route_commands_and_take_over_after_sigkill(tmp_path: Path) -> None:
    prefix = f"nbcluster:{uuid.uuid4().hex}:"
    site_a, site_b = node(tmp_path, prefix, "node-a"), node(tmp_path, prefix, "node-b")
    station = LibStation("CL-1")
    try:
        async with asyncio.timeout(120), daemon(site_a) as proc_a, daemon(site_b), Api(site_b) as api_b:
            seen_on_b: list[dict[str, Any]] = []
            stream = asyncio.create_task(stream_events(site_b, "station.", seen_on_b))
            await asyncio.sleep(0.5)  # the stream is open
            await station.connect(site_a.ws_url)
            # B lists A's station as connected (the record is shared, the state comes from the directory).
            await until(api_b, "CL-1", True, 5)
            # B's live stream shows A's events (through the shared event stream).
            async with asyncio.timeout(5):
                while not {"station.connected", "station.booted"} <= {e["kind"] for e in seen_on_b
                                                                      if e["station_id"] == "CL-1"}:
                    await asyncio.sleep(0.1)
            stream.cancel()
            await profile_through(api_b, station, 11)  # typed command through B, run by A on its socket
            await generic_through(api_b, station)      # generic call through B
            # A 2.0.1 operation through B answers as through A (this station refuses ClearCache: CALLERROR).
            async with Api(site_a) as api_a:
                local = await api_a.post("/api/stations/CL-1/commands/clear-cache", {})
            status, answer = await api_b.post("/api/stations/CL-1/commands/clear-cache", {})
            assert status == local[0] == 502 and answer["code"] == local[1]["code"], (status, answer, local)
            # A CALLERROR-free refusal and a validation error come back as on a single node.
            status, answer = await api_b.post("/api/stations/CL-1/call/GetCompositeSchedule", {"duration": "x"})
            assert status == 422, answer
            # A known station no live node holds: 409.
            status, _ = await api_b.post("/api/stations", {"station_id": "CL-NONE"})
            assert status in (200, 201)
            status, answer = await api_b.post("/api/stations/CL-NONE/commands/reset", {})
            assert status == 409, answer

            await proc_a.stop(signal.SIGKILL, timeout=10)
            killed = time.monotonic()
            # A's lease still runs: B forwards and gets no answer -> 504 (not a false "not connected").
            status, answer = await api_b.post("/api/stations/CL-1/commands/reset", {})
            assert status == 504, answer
            await until(api_b, "CL-1", False, LEASE_S + 4)
            gone_s = time.monotonic() - killed
            assert gone_s < LEASE_S + 3
            status, answer = await api_b.post("/api/stations/CL-1/commands/reset", {})
            assert status == 409, answer

            await station.wait_gone(10)
            await station.connect(site_b.ws_url)
            await until(api_b, "CL-1", True, 5)
            await profile_through(api_b, station, 12)
            async with daemon(site_a), Api(site_a) as api_a2:  # A back under the same node id
                await until(api_a2, "CL-1", True, 5)           # its restart did not release B's station
                await profile_through(api_a2, station, 13)      # forwarded from A to B now
                await generic_through(api_a2, station)
                await generic_through(api_b, station)
        print(f"CL-1 shown disconnected {gone_s:.2f} s after SIGKILL of its node (lease {LEASE_S} s)")
    finally:
        await station.stop()
        await site_a.cleanup()


def test_cluster_needs_redis_and_is_off_without_a_section() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"cluster": {"node_id": "a"}}, "<t>")
    assert "cluster: needs store.backend: redis" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"store": {"backend": "redis"}, "cluster": {"node_id": " ", "lease_s": 0}}, "<t>")
    assert "cluster.node_id" in str(err.value) and "cluster.lease_s" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"store": {"backend": "redis"}, "cluster": {"api_url": "node-a:8080"}}, "<t>")
    assert "cluster.api_url" in str(err.value)
    with_grid = parse_config({"store": {"backend": "redis"}, "cluster": {"api_url": "http://node-a:8080"},
                              "grid": {"transformers": {"T1": {"capacity_kw": 100}}}}, "<t>")
    assert with_grid.cluster is not None and with_grid.grid is not None  # one elected controller
    assert parse_config({"store": {"backend": "redis"}}, "<t>").cluster is None
    assert parse_config({"store": {"backend": "redis"}, "cluster": {}}, "<t>").cluster is not None


async def test_frozen_node_loses_its_stations_and_claims_them_back_when_resumed(tmp_path: Path) -> None:
    """SIGSTOP past the lease: the other node shows the station disconnected; SIGCONT: the frozen node
    finds its lease lapsed and claims the station again (its socket survived), and a malformed message
    in a node's inbox is dropped without stopping it."""
    prefix = f"nbcluster:{uuid.uuid4().hex}:"
    site_a, site_b = node(tmp_path, prefix, "node-a"), node(tmp_path, prefix, "node-b")
    station = LibStation("CL-2")
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    try:
        async with asyncio.timeout(90), daemon(site_a) as proc_a, daemon(site_b), Api(site_b) as api_b:
            await station.connect(site_a.ws_url)
            await until(api_b, "CL-2", True, 5)
            await client.rpush(f"{prefix}cluster:inbox:node-a", "{not json", '{"type": "request"}', "[1]")
            proc_a.proc.send_signal(signal.SIGSTOP)
            try:
                await until(api_b, "CL-2", False, LEASE_S + 4)
            finally:
                proc_a.proc.send_signal(signal.SIGCONT)
            await until(api_b, "CL-2", True, LEASE_S + 4)
            await profile_through(api_b, station, 21)
            assert "lease had lapsed" in proc_a.text()
            async with Api(site_a) as api_a:
                assert (await api_a.get("/health/ready"))["checks"]["cluster_lease"] is True
    finally:
        await client.aclose()
        await station.stop()
        await site_a.cleanup()


async def test_a_second_node_with_a_live_node_id_is_refused(tmp_path: Path) -> None:
    prefix = f"nbcluster:{uuid.uuid4().hex}:"
    site, twin = node(tmp_path, prefix, "node-a"), node(tmp_path / "twin", prefix, "node-a")
    try:
        async with asyncio.timeout(60), daemon(site):
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "csms", "serve", "--config",
                                                        str(twin.write_config()), cwd=REPO, env=ENV,
                                                        stdout=asyncio.subprocess.DEVNULL,
                                                        stderr=asyncio.subprocess.PIPE)
            _, err = await proc.communicate()
            assert proc.returncode != 0
            assert "cluster node id 'node-a' is in use by a live node" in err.decode(), err.decode()[-2000:]
    finally:
        await site.cleanup()


async def test_graceful_stop_releases_the_lease_and_the_stations(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                                 ) -> None:
    """SIGTERM path, in process: the stations leave the directory and the lease goes at once (the others
    need not wait for it to lapse); nothing fails on the way."""
    prefix = f"nbcluster:{uuid.uuid4().hex}:"
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    station = LibStation("CL-3")
    try:
        async with asyncio.timeout(30):
            async with running_daemon(tmp_path, store={"backend": "redis", "redis_url": REDIS_URL,
                                                       "redis_prefix": prefix},
                                      cluster={"node_id": "solo", "lease_s": LEASE_S}) as running:
                await station.connect(running.ws_url)
                assert await client.hgetall(f"{prefix}cluster:owners") == {"CL-3": "solo"}
                assert await client.exists(f"{prefix}cluster:lease:solo")
                assert running.daemon.readiness()["cluster_lease"] is True
            assert await client.hgetall(f"{prefix}cluster:owners") == {}
            assert not await client.exists(f"{prefix}cluster:lease:solo")
            store = RedisStore(REDIS_URL, prefix=prefix)
            await store.open()
            try:
                record = await store.get_station("CL-3")
            finally:
                await store.close()
            assert record is not None and record.connected is False, record
        assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text[-3000:]
    finally:
        await station.stop()
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_a_lapsed_lease_announces_back_only_the_stations_a_sweep_released() -> None:
    """After a lapse nobody swept, the node's stations were never announced as gone: claiming them
    again announces nothing (the grid leader would set every one up anew). Those a sweep released
    are announced as back. A sweep never releases the stations of a node whose lease lives again."""
    from csms.cluster import Cluster
    from csms.domain.records import StationRecord
    from csms.errorlog import ErrorLog

    prefix = f"nbcl:{uuid.uuid4().hex}:"
    store = RedisStore(REDIS_URL, prefix)

    def node(node_id: str) -> Cluster:
        return Cluster(REDIS_URL, prefix, node_id, lease_s=30, forward_timeout_s=1, spawner=LoopSpawner(),
                       errors=ErrorLog(), station_key=store.keys.station)

    a, b = node("a"), node("b")
    back: list[list[str]] = []
    a.on_reclaim = back.append
    a.local = lambda: ["S1", "S2"]
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    await store.open()
    try:
        await a.open()
        await b.open()
        for station_id in ("S1", "S2"):
            await store.put_station(StationRecord(station_id=station_id, connected=True))
            await a.arrived(station_id)
        await client.delete(f"{prefix}cluster:lease:a")  # a's lease lapsed; nobody swept
        await a.renew()
        assert back == [] and await b.owner("S1") == "a"

        await client.delete(f"{prefix}cluster:lease:a")  # lapsed again, and b sweeps this time
        assert sorted(await b.sweep()) == ["S1", "S2"]
        assert [s.connected for s in await store.list_stations()] == [False, False]  # marked in the store
        assert await b.owner("S1") is None
        await a.renew()
        assert [sorted(s) for s in back] == [["S1", "S2"]]
        assert await b.owner("S1") == "a" and await b.owner("S2") == "a"

        # The sweep's release checks the lease itself: a's lives, so nothing of a's goes.
        assert await b._release_dead(keys=[f"{prefix}cluster:owners", f"{prefix}cluster:lease:a"],
                                     args=["a", "S1", "S2"]) == []
        assert await b.owner("S1") == "a"
    finally:
        await a.close()
        await b.close()
        await store.close()
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_a_station_connecting_while_the_new_leader_reads_its_state_back_counts_as_connected(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: the grid part of a new term is held while it reads its state back; a station that
    connects to the leader's node meanwhile told the node's bus before the grid listened, so the
    grid must take it from the node's connections as they are when it attaches (in the 30,000-station
    failover such stations were never controlled again)."""
    from csms.grid.service import Grid

    entered, gate = asyncio.Event(), asyncio.Event()
    original = Grid.start

    async def held_start(self: Grid, listed: Any = None, listening: Any = None) -> None:
        entered.set()
        await gate.wait()
        await original(self, listed, listening)

    monkeypatch.setattr(Grid, "start", held_start)
    prefix = f"nbcluster:{uuid.uuid4().hex}:"
    station = LibStation("CL-LIVE")
    grid = {"transformers": {"T1": {"capacity_kw": 400, "members": [{"station": "CL-*"}]}}}
    try:
        async with asyncio.timeout(30):
            async with running_daemon(tmp_path, store={"backend": "redis", "redis_url": REDIS_URL,
                                                       "redis_prefix": prefix},
                                      cluster={"node_id": "leader", "lease_s": LEASE_S}, grid=grid) as running:
                await entered.wait()  # it leads, and its term is reading the state back
                await station.connect(running.ws_url)
                assert "CL-LIVE" in running.daemon.connections
                gate.set()
                await wait_until(lambda: running.daemon.grid is not None, 20, "the grid led here")
                assert running.daemon.grid.sessions.station("CL-LIVE").connected is True
    finally:
        await station.stop()
        await delete_prefix(prefix)


async def test_a_term_that_ends_stops_its_feeds_directory_checks(tmp_path: Path) -> None:
    """In process: the leader checks with the directory whether a station another node announced gone
    is gone. When the node stops (its term ends) while such a check waits, the check is cancelled and
    awaited, not left pending to pass its "disconnected" on after the grid part stopped."""
    from csms.domain.events import Event, StationDisconnected

    prefix = f"nbcluster:{uuid.uuid4().hex}:"
    grid = {"transformers": {"T1": {"capacity_kw": 400, "members": [{"station": "CL-*"}]}}}
    asked, answer = asyncio.Event(), asyncio.Event()

    async def slow_owner(station_id: str) -> str | None:
        asked.set()
        await answer.wait()
        return None

    told: list[Event] = []
    try:
        async with asyncio.timeout(30):
            async with running_daemon(tmp_path, store={"backend": "redis", "redis_url": REDIS_URL,
                                                       "redis_prefix": prefix},
                                      cluster={"node_id": "leader", "lease_s": LEASE_S}, grid=grid) as running:
                await wait_until(lambda: running.daemon.grid is not None, 20, "the grid led here, its state read back")
                feed = running.daemon.cluster.grid_feed
                assert feed is not None
                feed._owner = slow_owner
                feed.subscribe(told.append)
                feed.remote(StationDisconnected(station_id="CL-GONE"))  # another node's: checked first
                (check,) = feed._confirming
                await asyncio.wait_for(asked.wait(), 5)
            assert check.cancelled()
            answer.set()  # the lookup answers only now: the cancelled check can no longer pass it on
            assert not [ev for ev in told if ev.station_id == "CL-GONE"]
    finally:
        await delete_prefix(prefix)
