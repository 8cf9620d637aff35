"""A write whose reply is lost is applied once and its caller gets the error (no blind re-send).

A TCP proxy in front of the real Redis forwards a request, then drops the connection instead of
returning Redis's reply: the write happened, the client cannot know. A client that retries on
ConnectionError re-sends it and applies it twice; ours must fail the caller (the station gets no
acknowledgement and re-sends, handled at the OCPP level), with or without ``retry_on_timeout`` in
the URL (which would otherwise give every connection a retry).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.asyncio.retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from csms.cluster_grid import own_client, shared_client
from csms.domain.meter import flatten
from csms.lease_keeper import LeaseKeeper
from csms.store.redis_store import RedisStore
from tests.edge_kit import TcpProxy
from tests.redis_kit import REDIS_URL, delete_prefix

pytestmark = pytest.mark.redis

AT = datetime(2025, 1, 1, tzinfo=timezone.utc)
#: Query strings of the URL our clients are built from: the plain one, and one asking redis-py to retry.
URL_OPTIONS = ["", "?retry_on_timeout=true"]


def samples(value: float) -> list[Any]:
    return flatten([{"timestamp": "2025-01-01T10:00:00Z", "sampledValue": [
        {"value": value, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}}]}], 1, None)


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(6379)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"nbtest:noretry:{uuid.uuid4().hex}:"
    yield prefix
    await delete_prefix(prefix)


@pytest.fixture
async def direct() -> AsyncIterator[aioredis.Redis]:
    """A client straight to Redis, to count what was applied."""
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


def through(proxy: TcpProxy, options: str = "") -> str:
    return f"redis://127.0.0.1:{proxy.port}/0{options}"


async def test_the_proxy_catches_a_client_that_retries_writes(proxy: TcpProxy, prefix: str,
                                                              direct: aioredis.Redis) -> None:
    """The check can fail: a client with one retry re-sends the RPUSH and Redis applies it twice."""
    client = aioredis.Redis(host="127.0.0.1", port=proxy.port, retry=redis.asyncio.retry.Retry(NoBackoff(), 1))
    try:
        await client.ping()
        proxy.lose_next_reply()
        assert await client.rpush(f"{prefix}list", "x") == 2  # the retry's own reply
    finally:
        await client.aclose()
    assert proxy.replies_lost == 1
    assert await direct.llen(f"{prefix}list") == 2


@pytest.mark.parametrize("options", URL_OPTIONS)
async def test_store_writes_of_a_lost_batch_fail_and_are_applied_once(proxy: TcpProxy, prefix: str,
                                                                      options: str) -> None:
    store = RedisStore(through(proxy, options), prefix=prefix)
    await store.open()
    try:
        await store.record_meter_values("cs-0", samples(1.0), AT)  # a connection in the pool, scripts loaded
        proxy.lose_next_reply()
        with pytest.raises(RedisConnectionError):
            await store.record_meter_values("cs-1", samples(2.0), AT)
        assert proxy.replies_lost == 1
        assert [s["value"] for s in await store.meter_samples("cs-1")] == [2.0]

        # Several callers in one group-commit batch: all fail, none is applied twice.
        proxy.lose_next_reply()
        outcomes = await asyncio.gather(*(store.record_meter_values(f"cs-{i}", samples(float(i)), AT)
                                          for i in range(2, 7)), return_exceptions=True)
        assert all(isinstance(o, RedisConnectionError) for o in outcomes), outcomes
        for i in range(2, 7):
            assert [s["value"] for s in await store.meter_samples(f"cs-{i}")] in ([], [float(i)])
    finally:
        await store.close()


@pytest.mark.parametrize("options", URL_OPTIONS)
async def test_cluster_writes_fail_and_are_applied_once(proxy: TcpProxy, prefix: str, direct: aioredis.Redis,
                                                        options: str) -> None:
    """The cluster's clients: the event stream (XADD on the shared client), an inbox push (own client)."""
    shared, own = shared_client(through(proxy, options), 1.0), own_client(through(proxy, options))
    try:
        await shared.ping()
        proxy.lose_next_reply()
        with pytest.raises(RedisConnectionError):
            await shared.xadd(f"{prefix}events", {"e": "1"})
        assert await direct.xlen(f"{prefix}events") == 1

        await own.ping()
        proxy.lose_next_reply()
        with pytest.raises(RedisConnectionError):
            await own.rpush(f"{prefix}inbox", "m")
        assert await direct.llen(f"{prefix}inbox") == 1
        assert proxy.replies_lost == 2
    finally:
        await shared.aclose()
        await own.aclose()


@pytest.mark.parametrize("options", URL_OPTIONS)
async def test_the_lease_keepers_client_does_not_resend(proxy: TcpProxy, prefix: str, direct: aioredis.Redis,
                                                       options: str) -> None:
    keeper = LeaseKeeper(through(proxy, options), 1.0, 3.0, lambda outcomes: None)
    client = keeper.client
    try:
        await asyncio.to_thread(client.ping)
        proxy.lose_next_reply()
        with pytest.raises(RedisConnectionError):
            await asyncio.to_thread(client.incr, f"{prefix}n")
        assert proxy.replies_lost == 1
        assert await direct.get(f"{prefix}n") == "1"
    finally:
        client.close()
