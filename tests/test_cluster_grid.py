"""Grid control with two nodes on one Redis prefix (`python -m csms serve`, one process each): one
elected controller plans every session of both nodes, its pushes reach stations on the other node,
a limit posted on either node holds, and after the leader is SIGKILLed (or frozen past its lease)
the other node takes over within seconds with every running session known. Stations are built
from the `ocpp` package (tests/ocpp_station.py)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis

from csms.cluster_grid import Batched, Fence, StaleLeader, decode_event, encode_event, execute_grid_forwarded
from csms.domain.events import MeterValuesReceived, StationBooted, TransactionChanged
from csms.domain.meter import Reading
from csms.store.redis_store import RedisStore
from tests.grid_outside import REDIS_URL, Api, Site, cli, daemon
from tests.ocpp_station import LibStation
from tests.waiting import until

pytestmark = pytest.mark.redis

LEASE_S = 2.0
TOLERANCE_KW = 0.05
FAILOVER_GOAL_S = 10.0


def grid_config() -> dict[str, Any]:
    return {
        "transformers": {"T1": {"capacity_kw": 200, "members": [{"station": "CG-*"}]}},
        "planning": {"slot_s": 900, "horizon_slots": 8, "replan_interval_s": 1, "min_push_interval_s": 0,
                     "verify_after_s": 2},
        "session_defaults": {"energy_kwh": 40, "dwell_h": 8, "guaranteed_kwh": 0},
    }


def node(tmp: Path, prefix: str, node_id: str) -> Site:
    (tmp / node_id).mkdir(parents=True, exist_ok=True)
    return Site(tmp / node_id, grid=grid_config(), backend="redis", redis_prefix=prefix,
                extra={"cluster": {"node_id": node_id, "lease_s": LEASE_S, "forward_timeout_s": 3.0}})


async def leader_of(api: Api) -> str | None:
    status, body = await api.request("GET", "/api/grid")
    return body["controller"]["node"] if status == 200 else None


async def sessions_known(api: Api, transactions: dict[tuple[str, int], str]) -> bool:
    status, body = await api.request("GET", "/api/grid")
    if status != 200:
        return False
    sessions = {(s["station_id"], s["evse_id"]): s for s in body["transformers"]["T1"]["sessions"]}
    return all(sessions.get(key, {}).get("transaction_id") == tx for key, tx in transactions.items())


def power_kw(stations: list[LibStation]) -> float:
    for st in stations:
        st.tick()
    return sum(st.power_kw() for st in stations)


@contextlib.asynccontextmanager
async def charging(stations: list[LibStation], urls: list[str]) -> AsyncIterator[dict[tuple[str, int], str]]:
    try:
        for st, url in zip(stations, urls, strict=True):
            await st.connect(url)
        yield {(st.station_id, evse): await st.start_transaction(evse) for st in stations for evse in st.evses}
    finally:
        for st in stations:
            await st.stop()


async def post_limit(api: Api, signal_id: str, kw: float) -> None:
    status, body = await api.post("/api/grid/transformers/T1/limit",
                                  {"signal_id": signal_id, "limit_kw": kw, "source": "operator"})
    assert status == 202, body


async def hold_under(stations: list[LibStation], limit_kw: float, seconds: float) -> None:
    """For ``seconds`` the stations together never draw more than ``limit_kw``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        drawn = power_kw(stations)
        assert drawn <= limit_kw + TOLERANCE_KW, f"{drawn:.2f} kW drawn under a {limit_kw} kW limit"
        await asyncio.sleep(0.1)


async def test_one_controller_for_two_nodes_and_failover_after_sigkill(tmp_path: Path) -> None:
    prefix = f"nbcg:{uuid.uuid4().hex}:"
    site_a, site_b = node(tmp_path, prefix, "node-a"), node(tmp_path, prefix, "node-b")
    on_a = [LibStation("CG-A1", meter_interval_s=0.3), LibStation("CG-A2", evses=2, meter_interval_s=0.3)]
    on_b = [LibStation("CG-B1", meter_interval_s=0.3), LibStation("CG-B2", meter_interval_s=0.3)]
    everyone = on_a + on_b
    try:
        async with asyncio.timeout(150), daemon(site_a) as proc_a, daemon(site_b) as proc_b, \
                Api(site_a) as api_a, Api(site_b) as api_b:
            async with charging(everyone, [site_a.ws_url] * 2 + [site_b.ws_url] * 2) as transactions:
                # One controller, whichever node is asked; it knows the sessions of both nodes.
                await until(lambda: _same_leader(api_a, api_b), 15, "one grid controller, named by both nodes")
                leader = await leader_of(api_a)
                assert leader in {"node-a", "node-b"}
                code, out, _ = await cli(site_b, "grid")
                assert code == 0 and f"controller: node {leader}" in out, out
                await until(lambda: sessions_known(api_a, transactions), 15, "every session known (through A)")
                await until(lambda: sessions_known(api_b, transactions), 5, "every session known (through B)")

                # A limit posted on the node that does not lead holds on the stations of both nodes.
                follower_api = api_b if leader == "node-a" else api_a
                await post_limit(follower_api, "cg-22", 22)
                await until(lambda: all(st.tx_pushes() for st in everyone), 10, "a TxProfile on every station")
                await until(lambda: _under(everyone, 22), 10, "stations of both nodes under 22 kW")
                await hold_under(everyone, 22, 1.0)

                # Kill the leader: its stations reconnect to the other node, which takes over.
                proc_leader, survivor_site, survivor_api = \
                    (proc_a, site_b, api_b) if leader == "node-a" else (proc_b, site_a, api_a)
                moved = on_a if leader == "node-a" else on_b
                killed = time.monotonic()
                await proc_leader.stop(signal.SIGKILL, timeout=10)
                for st in moved:
                    await st.wait_gone()
                    await st.connect(survivor_site.ws_url)
                survivor = "node-b" if leader == "node-a" else "node-a"
                await until(lambda: _leads(survivor_api, survivor), FAILOVER_GOAL_S, "the survivor leads")
                failover_s = time.monotonic() - killed
                await until(lambda: sessions_known(survivor_api, transactions), 10, "every session known again")
                g = await survivor_api.group()
                assert g["limit_kw"] == 22.0, g

                # The new controller's limit reaches every station, those that moved included.
                await post_limit(survivor_api, "cg-11", 11)
                await until(lambda: _under(everyone, 11), 10, "every station under 11 kW after the failover")
                await hold_under(everyone, 11, 1.0)
                print(f"grid controller failover after SIGKILL of the leader: {failover_s:.2f} s "
                      f"(lease {LEASE_S} s, goal {FAILOVER_GOAL_S} s)")
    finally:
        await site_a.cleanup()


async def test_a_frozen_leader_is_fenced_off_after_it_resumes(tmp_path: Path) -> None:
    prefix = f"nbcg:{uuid.uuid4().hex}:"
    site_a, site_b = node(tmp_path, prefix, "node-a"), node(tmp_path, prefix, "node-b")
    stations = [LibStation("CG-F1", meter_interval_s=0.3), LibStation("CG-F2", meter_interval_s=0.3)]
    try:
        async with asyncio.timeout(120), daemon(site_a) as proc_a, Api(site_a) as api_a:
            await until(lambda: _leads(api_a, "node-a"), 10, "A leads (it started alone)")
            async with daemon(site_b) as proc_b, Api(site_b) as api_b, \
                    charging(stations, [site_a.ws_url, site_b.ws_url]) as transactions:
                await until(lambda: sessions_known(api_b, transactions), 15, "both sessions known")
                await post_limit(api_b, "cf-20", 20)
                await until(lambda: _under(stations, 20), 10, "under 20 kW")

                proc_a.proc.send_signal(signal.SIGSTOP)  # A freezes holding CG-F1 and the lead
                try:
                    await until(lambda: _leads(api_b, "node-b"), 40, "B leads once A's lease lapsed")
                    await post_limit(api_b, "cf-8", 8)
                    await until(lambda: _pushed_below(stations[1], 8.1), 10, "B's plan reached its own station")
                finally:
                    proc_a.proc.send_signal(signal.SIGCONT)
                # A wakes up still believing in its old plan for a moment: nothing it sends may go out.
                try:
                    await until(lambda: _under(stations, 8), 15, "both stations under 8 kW (A's via B's fenced push)")
                except AssertionError:
                    print("A:", proc_a.text()[-6000:], "B:", proc_b.text()[-6000:], [st.power_kw() for st in stations])
                    raise
                await hold_under(stations, 8, 3.0)
                assert await leader_of(api_b) == "node-b"
                assert "stops leading the grid controller" in proc_a.text(), proc_a.text()[-3000:]
    finally:
        await site_a.cleanup()


async def test_a_node_refuses_grid_commands_of_an_older_epoch() -> None:
    """The holding node's fence: a token older than the current epoch never reaches a station."""
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    key = f"nbcg:{uuid.uuid4().hex}:cluster:grid:epoch"
    sent: list[str] = []

    class Station:
        async def set_charging_profile(self, station_id: str, evse_id: int, profile: Any,
                                       timeout: float | None = None) -> Any:
            sent.append(station_id)
            return {"status": "Accepted"}

        async def get_variables(self, station_id: str, items: Any) -> Any:
            raise AssertionError

        async def get_charging_profiles(self, station_id: str, request_id: int, **_: Any) -> Any:
            raise AssertionError

    try:
        await client.set(key, 5)
        fence = Fence(client, key)
        request = {"kind": "grid", "station_id": "S1", "method": "set_charging_profile",
                   "args": {"evse_id": 1, "profile": {"id": 1}}}
        with pytest.raises(StaleLeader):
            await execute_grid_forwarded(Station(), fence, {**request, "token": 4})
        assert sent == []
        assert await execute_grid_forwarded(Station(), fence, {**request, "token": 5}) == {"status": "Accepted"}
        assert sent == ["S1"]
        with pytest.raises(ValueError):
            await execute_grid_forwarded(Station(), fence, {**request, "method": "reset", "token": 5})
    finally:
        await client.delete(key)
        await client.aclose()


def test_grid_events_cross_nodes_with_every_field() -> None:
    events = [
        TransactionChanged(station_id="S", event_type="Updated", transaction_id="t1", evse_id=2, seq_no=7,
                           reading=Reading(power_w=-3000.0, energy_wh=12.5, current_a={"L1": 6.0}, export_wh=3.0),
                           id_token="tok", vehicle_ids=("ev:1", "mac:2")),
        MeterValuesReceived(station_id="S", evse_id=1, reading=None),
        StationBooted(station_id="S", status="Accepted", vendor="V", model="M"),
    ]
    for ev in events:
        assert decode_event(encode_event(ev)) == ev
    with pytest.raises(KeyError):
        decode_event(b'{"type": "Nope", "fields": {}}')


async def test_concurrent_requests_share_a_round_trip_each_read_after_it_was_made() -> None:
    """The leader's wave of pushes: lookups made together go out in one fetch; one made while a
    fetch is on its way waits for the next (its answer is never read before it asked)."""
    fetched: list[list[str]] = []
    gate = asyncio.Event()

    async def fetch(keys: list[str]) -> dict[str, str]:
        fetched.append(list(keys))
        await gate.wait()
        return {k: k.upper() for k in keys}

    batched: Batched[str, str] = Batched(fetch)
    together = [asyncio.ensure_future(batched.get(k)) for k in ("a", "b", "a")]
    for _ in range(3):
        await asyncio.sleep(0)
    assert fetched == [["a", "b"]]
    late = asyncio.ensure_future(batched.get("c"))
    for _ in range(3):
        await asyncio.sleep(0)
    assert fetched == [["a", "b"]], "a request made during a fetch must not share its (older) answer"
    gate.set()
    assert await asyncio.gather(*together) == ["A", "B", "A"]
    assert await late == "C"
    assert fetched == [["a", "b"], ["c"]]


async def test_a_failed_fetch_fails_its_batch_only() -> None:
    attempts = 0

    async def fetch(keys: list[str]) -> dict[str, int]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("redis away")
        return dict.fromkeys(keys, 7)

    batched: Batched[str, int] = Batched(fetch, limit=2)
    results = await asyncio.gather(*(batched.get(k) for k in ("x", "y", "z")), return_exceptions=True)
    assert [type(r) for r in results[:2]] == [ConnectionError, ConnectionError]
    assert results[2] == 7, "the next batch (over the limit of 2) is fetched anew"
    assert await batched.get("x") == 7


async def _same_leader(api_a: Api, api_b: Api) -> bool:
    a, b = await leader_of(api_a), await leader_of(api_b)
    return a is not None and a == b


async def _leads(api: Api, node_id: str) -> bool:
    return await leader_of(api) == node_id


async def _under(stations: list[LibStation], limit_kw: float) -> bool:
    return power_kw(stations) <= limit_kw + TOLERANCE_KW


async def _pushed_below(station: LibStation, kw: float) -> bool:
    return power_kw([station]) <= kw


async def test_the_leader_repairs_sessions_the_stream_lost(tmp_path: Path) -> None:
    """Events the shared stream did not bring are told again from the store: an Ended the leader
    missed ends its session, a transaction it never heard of becomes one; nothing else is told."""
    from csms.bus import LocalBus
    from csms.cluster_grid import GridFeed, reconcile_sessions
    from csms.domain.events import Event
    from csms.store.sqlite import SqliteStore
    from tests.test_store_contract import tx_event

    store = SqliteStore(str(tmp_path / "csms.db"))
    await store.open()
    try:
        t0 = datetime.now(UTC)
        for evse_id, tx in enumerate(("TX-ENDED", "TX-KNOWN", "TX-MISSED", "TX-STALE"), start=1):
            await store.record_transaction_event("CS-1", tx_event("Started", 0, t0, tx_id=tx,
                                                                  evse={"id": min(evse_id, 3), "connectorId": 1}),
                                                 t0)
        await store.record_transaction_event("CS-1", tx_event("Ended", 1, t0, tx_id="TX-ENDED",
                                                              stopped_reason="EVDisconnected"), t0)
        # TX-STALE never ended in the store, but EVSE 3 has a session (TX-MISSED, once told): left alone.
        held = [SimpleNamespace(station_id="CS-1", transaction_id=tx, evse_id=evse_id)
                for evse_id, tx in ((1, "TX-ENDED"), (2, "TX-KNOWN"))]
        feed = GridFeed(LocalBus())
        told: list[Event] = []
        feed.subscribe(told.append)
        feed.release()
        assert await reconcile_sessions(store, held, feed) == 2
        said = {(ev.transaction_id, ev.event_type, ev.evse_id) for ev in told if isinstance(ev, TransactionChanged)}
        assert len(said) == 2 and ("TX-ENDED", "Ended", 1) in said
        ((missed, _, _),) = said - {("TX-ENDED", "Ended", 1)}  # one of the two running on EVSE 3
        held.append(SimpleNamespace(station_id="CS-1", transaction_id=missed, evse_id=3))
        held.pop(0)
        told.clear()
        assert await reconcile_sessions(store, held, feed) == 0 and told == []
    finally:
        await store.close()


def test_another_nodes_stale_disconnect_of_a_station_connected_here_is_dropped() -> None:
    """A survivor sweeping the dead leader's stations announces them gone through the stream; those
    that reconnected to the new leader's node meanwhile told its bus at once. The sweep's
    "disconnected", delivered after them (held through the takeover), must not mark them gone."""
    from csms.bus import LocalBus
    from csms.cluster_grid import GridFeed
    from csms.domain.events import Event, StationConnected, StationDisconnected

    here: dict[str, object] = {}
    feed = GridFeed(LocalBus(), here=here)
    told: list[Event] = []
    feed.subscribe(told.append)
    feed.remote(StationDisconnected(station_id="MOVED"))  # swept by another node, held
    feed.remote(StationDisconnected(station_id="GONE"))
    here["MOVED"] = object()  # reconnected to this node while the state was read back
    feed.publish(StationConnected(station_id="MOVED", accepted=True))
    assert feed.release() == 2
    assert [(type(ev).__name__, ev.station_id) for ev in told] == [
        ("StationConnected", "MOVED"), ("StationDisconnected", "GONE")]
    feed.remote(StationDisconnected(station_id="MOVED"))  # after the release too
    assert len(told) == 2


async def test_another_nodes_disconnect_of_a_station_held_by_a_third_node_is_dropped() -> None:
    """A node sweeping the dead leader's stations releases them in the directory, then announces them
    gone; a station that reconnects to a third node in between is claimed there and announced back,
    and that "connected" can reach the stream first. The leader passes another node's "disconnected"
    on only once the directory (real Redis, a real node's claim) says nobody holds the station."""
    from csms.bus import LocalBus
    from csms.cluster import Cluster
    from csms.cluster_grid import GridFeed
    from csms.domain.events import Event, StationConnected, StationDisconnected
    from csms.errorlog import ErrorLog
    from tests.redis_kit import delete_prefix
    from tests.spawning import LoopSpawner

    prefix = f"nbfeed:{uuid.uuid4().hex}:"
    third = Cluster(REDIS_URL, prefix, "node-c", lease_s=5.0, forward_timeout_s=2.0, spawner=LoopSpawner(),
                    errors=ErrorLog(), station_key=RedisStore(REDIS_URL, prefix).keys.station)
    await third.open()
    try:
        feed = GridFeed(LocalBus(), owner=third.owner)
        told: list[Event] = []
        feed.subscribe(told.append)
        feed.release()
        await third.arrived("MOVED")  # reconnected to node C: claimed there first
        feed.remote(StationConnected(station_id="MOVED", accepted=True))  # C's "connected" came first
        feed.remote(StationDisconnected(station_id="MOVED"))  # the sweep's, stale
        feed.remote(StationDisconnected(station_id="GONE"))  # nobody holds it: gone indeed
        feed.remote(StationDisconnected(station_id="BACK"))  # gone when announced...
        feed.remote(StationConnected(station_id="BACK", accepted=True))  # ...back before the check answered
        async with asyncio.timeout(5):  # every directory check answered: what passes has passed
            await asyncio.gather(*list(feed._confirming))
        assert [(type(ev).__name__, ev.station_id) for ev in told] == [
            ("StationConnected", "MOVED"), ("StationConnected", "BACK"), ("StationDisconnected", "GONE")]
    finally:
        await third.close()
        await delete_prefix(prefix)


async def test_a_stopped_feed_cancels_its_directory_checks_and_passes_nothing_on() -> None:
    """A term ends while the feed still asks the directory whether stations another node announced
    gone are gone: those checks are cancelled and awaited when the feed stops (none left pending to be
    destroyed with the loop), and none passes its "disconnected" to the ended term's grid part."""
    from csms.bus import LocalBus
    from csms.cluster import Cluster
    from csms.cluster_grid import GridFeed
    from csms.domain.events import Event, StationDisconnected
    from csms.errorlog import ErrorLog
    from tests.redis_kit import delete_prefix
    from tests.spawning import LoopSpawner

    prefix = f"nbfeed:{uuid.uuid4().hex}:"
    third = Cluster(REDIS_URL, prefix, "node-c", lease_s=5.0, forward_timeout_s=2.0, spawner=LoopSpawner(),
                    errors=ErrorLog(), station_key=RedisStore(REDIS_URL, prefix).keys.station)
    await third.open()
    asked, answer = asyncio.Event(), asyncio.Event()
    looked_up: list[str] = []

    async def slow_owner(station_id: str) -> str | None:
        asked.set()
        await answer.wait()  # the directory is slow: the term ends meanwhile
        looked_up.append(station_id)
        return await third.owner(station_id)

    try:
        feed = GridFeed(LocalBus(), owner=slow_owner)
        told: list[Event] = []
        feed.subscribe(told.append)
        feed.release()
        feed.remote(StationDisconnected(station_id="GONE"))  # nobody holds it: would pass once checked
        checks = list(feed._confirming)
        assert len(checks) == 1
        async with asyncio.timeout(5):
            await asked.wait()
            await feed.stop()
        assert all(task.done() for task in checks) and checks[0].cancelled() and not feed._confirming
        feed.remote(StationDisconnected(station_id="LATER"))  # after the stop: not even checked
        answer.set()  # the lookup answers only now: the stopped checks can no longer pass it on
        assert not feed._confirming and looked_up == [] and told == []
    finally:
        await third.close()
        await delete_prefix(prefix)
