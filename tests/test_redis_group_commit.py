"""Group commit in the Redis store: concurrent writes share a few pipelines, and each caller still
gets exactly what it got with a pipeline of its own (its replies, its error, NOSCRIPT recovered,
an error when Redis is gone)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from csms.domain.meter import flatten
from csms.domain.records import StationRecord
from csms.store import redis_store
from csms.store.redis_store import RedisStore, ReplicationError
from tests.redis_kit import REDIS_URL, delete_prefix
from tests.test_daemon_kit import free_port

pytestmark = pytest.mark.redis

AT = datetime(2025, 1, 1, tzinfo=timezone.utc)


def samples(i: int) -> list[Any]:
    return flatten([{"timestamp": "2025-01-01T10:00:00Z", "sampledValue": [
        {"value": float(i), "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}},
        {"value": 7200.0, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}}]}], 1, None)


def count_pipelines(store: RedisStore) -> list[int]:
    """Wrap the client's pipeline factory: one entry per execute(), the number of commands it sent."""
    sent: list[int] = []
    client = store._r
    factory = client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = factory(*args, **kwargs)
        execute = pipe.execute

        async def counted(*a: Any, **kw: Any) -> Any:
            sent.append(len(pipe.command_stack))
            return await execute(*a, **kw)
        pipe.execute = counted  # type: ignore[method-assign]
        return pipe
    client.pipeline = pipeline  # type: ignore[method-assign]
    return sent


@pytest.fixture
async def store() -> AsyncIterator[RedisStore]:
    prefix = f"nbtest:{uuid.uuid4().hex}:"
    s = RedisStore(REDIS_URL, prefix)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
        await delete_prefix(prefix)


async def test_concurrent_writes_share_few_round_trips_and_all_are_stored(store: RedisStore) -> None:
    sent = count_pipelines(store)
    n = 5000
    await asyncio.gather(*(store.record_meter_values(f"CS-{i}", samples(i), AT) for i in range(n)))
    # One script per write; a batch holds at most BATCH_COMMANDS of them.
    assert sum(sent) == n and len(sent) <= 10, sent
    assert max(sent) <= redis_store.BATCH_COMMANDS
    for i in range(0, n, 97):
        assert [s["value"] for s in await store.meter_samples(f"CS-{i}")] == [float(i), 7200.0]

    # Different kinds of writes in one batch, each caller with its own replies.
    sent.clear()
    numbers, *_ = await asyncio.gather(
        asyncio.gather(*(store.next_number("n") for _ in range(200))),
        *(store.record_command("CS-1", "Reset", {"i": i}, "result", {}, AT, AT) for i in range(100)),
        *(store.put_document("docs", f"{i:04d}", {"i": i}) for i in range(100)),
        *(store.record_charging_profile("CS-2", 1, {"id": i}, "Accepted", None, AT) for i in range(100)))
    assert sorted(numbers) == list(range(1, 201))
    assert len(sent) <= 3, sent
    assert len(await store.list_commands("CS-1")) == 100
    assert [d["i"] for _, d in await store.list_documents("docs")] == list(range(100))
    assert [p["profile"]["id"] for p in await store.list_charging_profiles("CS-2")] == list(range(100))


async def test_a_new_leaders_reads_at_once_share_round_trips_too(store: RedisStore) -> None:
    """Samples, EV needs and pushed profiles of thousands of sessions, read at once (a takeover)."""
    n = 2000
    await asyncio.gather(*(store.record_meter_values(f"CS-{i}", samples(i), AT) for i in range(n)))
    await asyncio.gather(*(store.record_charging_profile(f"CS-{i}", 1, {"id": i}, "Accepted", None, AT)
                           for i in range(0, n, 2)))
    await store.record_ev_charging_needs("CS-3", 1, {"chargingNeeds": {"requestedEnergyTransfer": "AC"}}, AT)
    sent = count_pipelines(store)
    read, profiles, needs = await asyncio.gather(
        asyncio.gather(*(store.meter_samples(f"CS-{i}") for i in range(n))),
        asyncio.gather(*(store.list_charging_profiles(f"CS-{i}") for i in range(n))),
        asyncio.gather(*(store.latest_ev_charging_needs(f"CS-{i}", 1) for i in range(n))))
    assert [[s["value"] for s in rows] for rows in read] == [[float(i), 7200.0] for i in range(n)]
    assert [[p["profile"]["id"] for p in rows] for rows in profiles] == [[i] if i % 2 == 0 else [] for i in range(n)]
    assert needs[3] == {"chargingNeeds": {"requestedEnergyTransfer": "AC"}} and needs.count(None) == n - 1
    assert sum(sent) == 3 * n and len(sent) <= 12, sent  # not one round trip per read


async def test_a_long_listing_lets_the_event_loop_run_between_its_round_trips(
        store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing of thousands of records (a grid leader's running transactions, every 30 s) is read
    and decoded a pipeline at a time with the loop let in between; in one pipeline the leader's loop
    stood still for seconds at 30,000, and its lease keeper took it for hung."""
    monkeypatch.setattr(redis_store, "HASHES_PER_PIPELINE", 100)
    n = 1000
    await asyncio.gather(*(store.put_station(StationRecord(station_id=f"CS-{i:04d}")) for i in range(n)))
    decoded = 0
    decode = redis_store._decode

    def counted(h: dict[str, str]) -> dict[str, Any]:
        nonlocal decoded
        decoded += 1
        return decode(h)

    monkeypatch.setattr(redis_store, "_decode", counted)
    listing = asyncio.ensure_future(store.list_stations())
    seen = [0]  # records decoded by each time another task got a turn
    while not listing.done():
        seen.append(decoded)
        await asyncio.sleep(0)
    seen.append(decoded)
    assert [s.station_id for s in listing.result()] == [f"CS-{i:04d}" for i in range(n)]
    assert max(b - a for a, b in zip(seen, seen[1:], strict=False)) <= 100, seen  # never more without a turn


async def test_a_transaction_listing_reads_a_chunk_of_records_per_command(
        store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Running transactions (a new grid leader's 30,000, its drift repair's every 30 s) are read a
    chunk of records per script call, not one command each, with the loop let in between; filters,
    order and limit as in one read."""
    from csms.ocpp.v201.transactions import tx_event
    monkeypatch.setattr(redis_store, "HASHES_PER_PIPELINE", 7)
    n = 30
    for i in range(n):
        stamp = f"2025-01-01T10:{i:02d}:00Z"
        for seq, kind in enumerate(("Started", "Ended")[:1 + (i % 4 == 0)]):
            assert await store.record_transaction_event(f"CS-{i % 3}", tx_event({
                "eventType": kind, "timestamp": stamp, "triggerReason": "Authorized", "seqNo": seq,
                "transactionInfo": {"transactionId": f"TX-{i}"}, "evse": {"id": 1, "connectorId": 1}}), AT)
    calls: list[int] = []
    call = store._call

    async def counted(name: str, keys: list[str], args: Any) -> Any:
        calls.append(len(keys))
        return await call(name, keys, args)

    monkeypatch.setattr(store, "_call", counted)
    running = [t.transaction_id for t in await store.list_transactions(active=True)]
    assert running == [f"TX-{i}" for i in reversed(range(n)) if i % 4], running  # the newest start first
    assert calls == [7, 7, 7, 1]
    assert [t.transaction_id for t in await store.list_transactions(active=True, station_id="CS-1", limit=3)] == [
        "TX-25", "TX-22", "TX-19"]
    ended = await store.list_transactions(active=False)
    assert [t.transaction_id for t in ended] == [f"TX-{i}" for i in reversed(range(n)) if i % 4 == 0]
    assert all(t.ended_at is not None and t.evse_id == 1 and t.last_seq_no == 1 for t in ended)


async def test_a_long_document_listing_is_read_a_chunk_of_keys_per_mget(store: RedisStore) -> None:
    """A listing of more documents than one MGET takes is read in several: one MGET over every key
    builds one huge reply that Redis (one thread) and the node's loop each handle in one stretch."""
    n = redis_store.DOCUMENTS_PER_MGET * 2 + 500
    await asyncio.gather(*(store.put_document("many", f"{i:05d}", {"i": i}) for i in range(n)))
    client = store._r
    mget = client.mget
    asked: list[int] = []  # keys per MGET sent

    async def counted(keys: Any, *args: Any) -> Any:
        asked.append(len(keys) + len(args))
        return await mget(keys, *args)

    client.mget = counted  # type: ignore[method-assign]
    listed = await store.list_documents("many", limit=n)
    assert [(k, d["i"]) for k, d in listed] == [(f"{i:05d}", i) for i in range(n)]
    assert asked == [redis_store.DOCUMENTS_PER_MGET] * 2 + [500]
    asked.clear()
    assert [k for k, _ in await store.list_documents("many", limit=10)] == [f"{i:05d}" for i in range(10)]
    assert asked == [10]


async def test_a_failing_command_fails_only_its_caller(store: RedisStore) -> None:
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    try:  # keys of the wrong type: RPUSH fails, and so does the script's ZADD
        await client.set(store.keys.station("BAD", "charging_profiles"), "x")
        await client.set(store.keys.station("BAD", "samples"), "x")
    finally:
        await client.aclose()
    sent = count_pipelines(store)
    writes = [store.record_meter_values(f"CS-{i}", samples(i), AT) for i in range(20)]
    writes.insert(5, store.record_meter_values("BAD", samples(0), AT))  # a Lua script error
    writes.insert(9, store.record_charging_profile("BAD", 1, {"id": 1}, "Accepted", None, AT))  # a command error
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert len(sent) == 1  # all in one batch
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [5, 9], results
    assert all(isinstance(results[i], ResponseError) and "WRONGTYPE" in str(results[i]) for i in failed)
    assert "Command # 1 (EVALSHA" in str(results[5])  # numbered within the caller's own commands
    for i in range(20):
        assert len(await store.meter_samples(f"CS-{i}")) == 2

    # An error while queueing (a bad argument) is the caller's alone too.
    async def bad(pipe: Any) -> None:
        pipe.incr(f"{store.prefix}counter:x")
        raise ValueError("bad argument")
    results = await asyncio.gather(store.next_number("y"), store._write(bad), store.next_number("y"),
                                   return_exceptions=True)
    assert isinstance(results[1], ValueError) and sorted(results[::2]) == [1, 2]  # type: ignore[type-var]
    assert await store.next_number("x") == 1  # the failed caller's INCR was never sent


async def test_too_few_replicas_fail_every_caller_of_the_batch() -> None:
    prefix = f"nbtest:{uuid.uuid4().hex}:"
    store = RedisStore(REDIS_URL, prefix, wait_replicas=1, wait_timeout_ms=20)
    await store.open()
    try:
        sent = count_pipelines(store)
        results = await asyncio.gather(*(store.next_number("n") for _ in range(50)), return_exceptions=True)
        assert all(isinstance(r, ReplicationError) for r in results), results
        assert sent == [51]  # one WAIT for the whole batch
    finally:
        await store.close()
        await delete_prefix(prefix)


# Own redis-server: SCRIPT FLUSH and a kill must not disturb anyone else's Redis --------------------
class OwnRedis:
    def __init__(self, tmp: Path) -> None:
        self.dir, self.port = tmp, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
            "--save", "", "--appendonly", "no", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        client = aioredis.from_url(self.url)
        try:
            async with asyncio.timeout(15):
                while True:
                    with contextlib.suppress(OSError, aioredis.RedisError):
                        if await client.ping():
                            return
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


async def test_scripts_flushed_mid_run_are_reloaded_and_every_write_happens_once(own_redis: OwnRedis) -> None:
    store = RedisStore(own_redis.url, "nbtest:")
    await store.open()
    admin = aioredis.from_url(own_redis.url)
    reloads = 0
    load = store._load_scripts

    async def counted_load() -> None:
        nonlocal reloads
        reloads += 1
        await load()
    store._load_scripts = counted_load  # type: ignore[method-assign]
    stop = asyncio.Event()
    rounds = 0  # writes completed by all writers together
    progressed = asyncio.Event()

    async def writer(w: int) -> int:
        nonlocal rounds
        n = 0
        while not stop.is_set():
            # A script (retried after NOSCRIPT) and a plain RPUSH (never sent twice) in the same batches.
            await store.record_meter_values(f"CS-{w}", samples(n), AT)
            await store.record_charging_profile(f"CS-{w}", 1, {"id": n}, "Accepted", None, AT)
            n += 1
            rounds += 1
            progressed.set()
        return n

    async def more_writes(count: int) -> None:
        """Until the writers completed ``count`` more writes (a flush then hits batches in flight)."""
        target = rounds + count
        async with asyncio.timeout(15):
            while rounds < target:
                progressed.clear()
                await progressed.wait()

    try:
        writers = [asyncio.create_task(writer(w)) for w in range(200)]
        for _ in range(3):
            await more_writes(400)
            await admin.script_flush()
        await more_writes(400)
        stop.set()
        counts = await asyncio.wait_for(asyncio.gather(*writers), 30)
        assert reloads >= 1
        for w in range(0, 200, 7):
            assert len(await store.meter_samples(f"CS-{w}")) == 2 * counts[w]
            assert [p["profile"]["id"] for p in await store.list_charging_profiles(f"CS-{w}")] == list(range(counts[w]))
    finally:
        stop.set()
        await store.close()
        await admin.aclose()


async def test_redis_gone_fails_every_waiting_caller_and_nothing_hangs(own_redis: OwnRedis) -> None:
    store = RedisStore(own_redis.url, "nbtest:")
    await store.open()
    try:
        await asyncio.gather(*(store.record_meter_values(f"CS-{i}", samples(i), AT) for i in range(100)))
        writes = [asyncio.create_task(store.record_meter_values(f"CS-{i}", samples(i), AT)) for i in range(3000)]
        await asyncio.sleep(0)  # the first batch is on its way
        await own_redis.kill()
        results = await asyncio.wait_for(asyncio.gather(*writes, return_exceptions=True), 30)
        errors = [r for r in results if r is not None]
        assert errors, "every write was acknowledged although Redis was killed"
        assert all(isinstance(e, (RedisConnectionError, OSError)) for e in errors), {type(e) for e in errors}
        # While it stays down, every caller gets the same error, promptly.
        results = await asyncio.wait_for(asyncio.gather(
            *(store.record_command("CS-1", "Reset", {}, "result", {}, AT, AT) for _ in range(500)),
            return_exceptions=True), 30)
        assert all(isinstance(r, RedisConnectionError) for r in results), {type(r) for r in results}
        # And back: writes are acknowledged again.
        await own_redis.start()
        await asyncio.wait_for(store.record_command("CS-1", "Reset", {}, "result", {}, AT, AT), 30)
        assert len(await store.list_commands("CS-1")) == 1
    finally:
        await asyncio.wait_for(store.close(), 30)


async def test_a_caller_cancelled_while_queued_is_left_out(store: RedisStore) -> None:
    writes = [asyncio.create_task(store.record_command("CS-1", "Reset", {"i": i}, "result", {}, AT, AT))
              for i in range(100)]
    await asyncio.sleep(0)  # all queued, no batch sent yet
    for task in writes[::10]:
        task.cancel()
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert [isinstance(r, asyncio.CancelledError) for r in results] == [i % 10 == 0 for i in range(100)]
    assert sorted(c["request"]["i"] for c in await store.list_commands("CS-1")) == [
        i for i in range(100) if i % 10]
