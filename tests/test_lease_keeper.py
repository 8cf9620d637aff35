"""Leases renewed from the lease keeper's thread (csms/lease_keeper.py), against the real Redis.

A node whose event loop is busy for longer than a lease (a takeover, a reconnect storm) keeps its
node lease and its grid leadership; a loop that is stalled (hung) for longer than the keeper's
``stall_s`` loses both, as a dead node does.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from csms.cluster import STALL_LEASES, Cluster
from csms.cluster_grid import GridLeadership
from csms.errorlog import ErrorLog
from csms.store.redis_store import RedisStore
from tests.redis_kit import delete_prefix
from tests.spawning import LoopSpawner

REDIS_URL = "redis://127.0.0.1:6379/0"
LEASE_S = 1.0


@contextmanager
def watching(keys: list[str]) -> Iterator[dict[str, int]]:
    """Counts, from a thread of its own every 20 ms, the looks at which each key was missing."""
    missing = {k: 0 for k in keys}
    stop = threading.Event()
    client = redis.Redis.from_url(REDIS_URL)

    def look() -> None:
        while not stop.is_set():
            for k in keys:
                if not client.exists(k):
                    missing[k] += 1
            stop.wait(0.02)

    thread = threading.Thread(target=look, daemon=True)
    thread.start()
    try:
        yield missing
    finally:
        stop.set()
        thread.join()
        client.close()


def _cluster(prefix: str, node_id: str, lease_s: float = LEASE_S) -> Cluster:
    return Cluster(REDIS_URL, prefix, node_id, lease_s=lease_s, forward_timeout_s=1, spawner=LoopSpawner(),
                   errors=ErrorLog(), station_key=RedisStore(REDIS_URL, prefix).keys.station)


async def _node(prefix: str, node_id: str) -> tuple[Cluster, GridLeadership, list[int]]:
    terms: list[int] = []

    async def lead(epoch: int) -> None:
        terms.append(epoch)

    async def resign() -> None:
        terms.append(-1)

    cluster = _cluster(prefix, node_id)
    leadership = GridLeadership(REDIS_URL, prefix, node_id, lease_s=LEASE_S, api_url=lambda: "http://127.0.0.1:1",
                                lead=lead, resign=resign, node_lease=lambda: cluster.lease_held, spawner=LoopSpawner(),
                                errors=ErrorLog(), keeper=cluster.keeper)
    await cluster.open()
    await leadership.start()
    cluster.start()
    return cluster, leadership, terms


async def _until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    p = f"nblk:{uuid.uuid4().hex}:"
    yield p
    await delete_prefix(p)


async def test_a_busy_loop_keeps_the_node_lease_and_the_grid_leadership(prefix: str) -> None:
    """The loop blocked for twice a lease (under the stall limit): neither key ever goes missing,
    the node still leads in the same term, and nothing is due to be claimed again."""
    cluster, leadership, terms = await _node(prefix, "busy")
    try:
        await _until(lambda: leadership.leading and terms, 5)
        epoch = leadership.token
        lease, leader = f"{prefix}cluster:lease:busy", f"{prefix}cluster:grid:leader"
        with watching([lease, leader]) as missing:
            time.sleep(2 * LEASE_S)  # the whole loop busy: a takeover's reads, a storm's handshakes
            await asyncio.sleep(2 * LEASE_S)
        assert missing == {lease: 0, leader: 0}
        assert leadership.leading and leadership.token == epoch and terms == [epoch]
        assert cluster.lease_held and not cluster._claim_due
    finally:
        await leadership.stop()
        await cluster.close()


async def test_a_stalled_loop_loses_both_and_claims_its_stations_back_after(prefix: str) -> None:
    """Blocked past the keeper's stall limit, the loop is taken for hung: the leases are no longer
    renewed and lapse, and once the loop runs again the node steps down and claims its stations."""
    cluster, leadership, terms = await _node(prefix, "hung")
    cluster.local = lambda: ["S1"]
    try:
        await cluster.arrived("S1")
        await _until(lambda: leadership.leading and terms, 5)
        lease = f"{prefix}cluster:lease:hung"
        with watching([lease]) as missing:
            time.sleep(STALL_LEASES * LEASE_S + 2 * LEASE_S)
            assert missing[lease] > 0 and cluster.keeper.skipped > 0
        await _until(lambda: terms[-1] == -1, 5)  # stepped down: it could not be sure it still led
        await _until(lambda: not cluster._claim_due and cluster.lease_held, 5)
        client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            assert client.hget(f"{prefix}cluster:owners", "S1") == "hung" and client.exists(lease)
        finally:
            client.close()
    finally:
        await leadership.stop()
        await cluster.close()


async def test_a_failed_grid_leader_renewal_is_logged_as_such(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """Both of the keeper's renewals used to be reported as "cluster heartbeat", so a failing grid
    leader key read as a failing node lease; each renewal is reported under its own label now."""
    def refused(client: Any) -> None:
        raise redis.ConnectionError("the leader key's renewal failed")

    cluster = _cluster(prefix, "labels", lease_s=60)
    cluster.keeper.add("grid leader renewal", refused)  # as GridLeadership.start registers its renewal
    cluster.keeper.start()  # a round every 20 s: only the one below runs in this test
    try:
        cluster.keeper.renew_all()

        def errors() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]

        await _until(errors, 5)  # the outcomes are handed to the loop
        assert len(errors()) == 1 and errors()[0].startswith("grid leader renewal: lease not renewed"), errors()
    finally:
        await cluster.close()


async def test_the_lease_is_renewed_from_open_on_before_the_node_starts(prefix: str) -> None:
    """Between open() and start() a node builds its parts and starts its listeners (and a restarted
    node's open sweeps its old stations): longer than a lease, the lease must not lapse meanwhile."""
    cluster = _cluster(prefix, "slow")
    lease = f"{prefix}cluster:lease:slow"
    try:
        await cluster.open()
        with watching([lease]) as missing:
            await asyncio.sleep(3 * LEASE_S)  # a slow start, the loop turning; start() not called yet
        assert missing == {lease: 0} and cluster.lease_held
    finally:
        await cluster.close()
