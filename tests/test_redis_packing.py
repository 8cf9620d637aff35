"""Commands packed by hiredis are byte for byte what redis-py's own packer makes, and work on a real Redis."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from csms.store.redis_packing import fast_packing

REDIS_URL = "redis://127.0.0.1:6379/0"

args = st.one_of(st.text(), st.binary(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
                 st.binary().map(memoryview))


def packers() -> tuple[Connection, Connection]:
    plain = aioredis.ConnectionPool.from_url(REDIS_URL, decode_responses=True)
    fast = fast_packing(aioredis.ConnectionPool.from_url(REDIS_URL, decode_responses=True))
    return plain.make_connection(), fast.make_connection()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["SET", "XADD", "CONFIG GET", b"HSET", b"CLIENT LIST"]), st.lists(args, max_size=8))
def test_the_bytes_are_redis_pys_own(command: str | bytes, rest: list[object]) -> None:
    plain, fast = packers()
    assert type(fast).__name__.startswith("Hiredis") and not type(plain).__name__.startswith("Hiredis")
    assert b"".join(fast.pack_command(command, *rest)) == b"".join(bytes(p) for p in plain.pack_command(command, *rest))


@pytest.mark.parametrize("bad", [True, None, object()])
def test_what_redis_py_refuses_is_refused(bad: object) -> None:
    plain, fast = packers()
    with pytest.raises(DataError):
        plain.pack_command("SET", "k", bad)
    with pytest.raises(DataError):
        fast.pack_command("SET", "k", bad)


async def test_a_real_redis_reads_back_what_was_written() -> None:
    client = aioredis.Redis.from_pool(fast_packing(aioredis.ConnectionPool.from_url(REDIS_URL, decode_responses=True)))
    key = f"test-packing:{uuid.uuid4().hex}"
    try:
        await client.hset(key, mapping={"text": "zoë ⚡", "float": 0.1, "int": -7, "bytes": b"\x00\xff"[:1]})
        async with client.pipeline(transaction=True) as pipe:
            pipe.hincrbyfloat(key, "float", 0.2)
            pipe.hgetall(key)
            _, stored = await pipe.execute()
        assert stored == {"text": "zoë ⚡", "float": "0.3", "int": "-7", "bytes": "\x00"}
        entry = await client.xadd(f"{key}:s", {"data": "x" * 10_000})
        assert (await client.xrange(f"{key}:s"))[0] == (entry, {"data": "x" * 10_000})
    finally:
        await client.delete(key, f"{key}:s")
        await client.aclose()


async def test_the_store_and_the_cluster_clients_pack_in_c() -> None:
    from csms.cluster_grid import own_client, shared_client
    from csms.store.redis_store import RedisStore

    store = RedisStore(REDIS_URL, prefix=f"test-packing:{uuid.uuid4().hex}:")
    await store.open()
    clients = [shared_client(REDIS_URL, 1.0), own_client(REDIS_URL)]
    try:
        for client in [store._redis, *clients]:
            assert client is not None and client.connection_pool.connection_class.__name__.startswith("Hiredis")
    finally:
        await store.close()
        for client in clients:
            await client.aclose()
