"""Redis's ``meter_bounds`` reads a transaction's samples at the few instants its record's
``sample_bounds`` names, not its whole history; where that field is missing (a record written
before it existed) or stale (a node with older code wrote since) it reads them all, and gives the
same either way. Also when two nodes write the same transaction's events at once."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from csms.store import redis_store
from csms.store.redis_store import RedisStore
from tests.redis_kit import REDIS_URL, delete_prefix
from tests.test_store_contract import T0, _deciding, _odd_history

pytestmark = pytest.mark.redis

TX = ("CS-1", "TX-L")


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"nbtest:{uuid.uuid4().hex}:"
    yield name
    await delete_prefix(name)


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisStore]:
    backend = RedisStore(REDIS_URL, prefix)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


async def _read(store: RedisStore) -> tuple[list[dict[str, Any]], int, list[dict[str, Any]]]:
    """meter_bounds of TX, how many samples Redis sent for it, and what all of them decide."""
    raw = await store._call("meter_bounds", [store.keys.tx(*TX), store.keys.tx(*TX, "samples")], [])
    every = await store.meter_samples(TX[0], transaction_id=TX[1])
    return (await store.meter_bounds([TX]))[TX], len(raw[0]) // 2, _deciding(every)


async def test_a_long_history_is_read_at_its_bounds_only(store: RedisStore) -> None:
    for ev in _odd_history(random.Random(3)):
        assert await store.record_transaction_event(TX[0], ev, T0)
    bounds, sent, deciding = await _read(store)
    assert bounds == deciding
    assert sent < 60  # of 532: the samples at 5 instants


async def test_missing_or_stale_bounds_read_everything_and_decide_alike(store: RedisStore,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    events = _odd_history(random.Random(4))
    total = sum(len(ev.samples) for ev in events)
    for ev in events[:40]:
        assert await store.record_transaction_event(TX[0], ev, T0)
    with monkeypatch.context() as older:  # a node with older code writes one: rev moves, the bounds do not
        older.setattr(redis_store, "_fold_bounds", lambda *_: None)
        assert await store.record_transaction_event(TX[0], events[40], T0)
    for ev in events[41:]:  # and stay stale: nothing short of all samples can tell them again
        assert await store.record_transaction_event(TX[0], ev, T0)
    bounds, sent, deciding = await _read(store)
    assert bounds == deciding and sent == total

    await store._r.hdel(store.keys.tx(*TX), "sample_bounds")  # a record from before they were kept
    bounds, sent, deciding = await _read(store)
    assert bounds == deciding and sent == total


async def test_two_nodes_writing_one_transaction_keep_its_bounds(store: RedisStore, prefix: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes: list[int] = []
    apply = RedisStore._apply_tx_event

    async def counted(self: RedisStore, *args: Any) -> int:
        outcomes.append(await apply(self, *args))
        return outcomes[-1]
    monkeypatch.setattr(RedisStore, "_apply_tx_event", counted)
    other = RedisStore(REDIS_URL, prefix)
    await other.open()
    try:
        events = _odd_history(random.Random(5))
        for first in range(0, len(events), 2):  # two at once: one of them is merged again (not 40 at once:
            assert all(await asyncio.gather(  # those exhaust MAX_TX_ATTEMPTS, by design)
                store.record_transaction_event(TX[0], events[first], T0),
                other.record_transaction_event(TX[0], events[first + 1], T0)))
    finally:
        await other.close()
    assert -1 in outcomes  # merged from a record the other node had changed, and merged again
    bounds, sent, deciding = await _read(store)
    assert bounds == deciding and sent < 60
