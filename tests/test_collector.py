"""The garbage collector around a takeover (csms/collector.py): paused inside, what was read frozen
after, frozen garbage freed by the deferred collection."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from csms.collector import collect_frozen, collect_frozen_later, paused_then_frozen


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> weakref.ref[Node]:
    """Two objects that only refer to each other: freed by the cyclic collector alone."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def collector_state() -> Iterator[None]:
    was = gc.isenabled()
    yield
    gc.unfreeze()
    if was:
        gc.enable()


def test_no_collection_runs_inside_and_what_was_made_there_is_frozen_until_collected_once() -> None:
    with paused_then_frozen():
        assert not gc.isenabled()
        garbage = _cycle()  # garbage made during the takeover, still uncollected at its end
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0
    gc.collect()
    assert garbage() is not None, "a frozen object was collected"
    assert collect_frozen() >= 2
    assert garbage() is None
    assert gc.get_freeze_count() > 0, "what survives is frozen again"


def test_a_collector_turned_off_before_stays_off_and_an_error_still_freezes() -> None:
    gc.disable()
    with pytest.raises(RuntimeError), paused_then_frozen():
        raise RuntimeError("the takeover failed")
    assert not gc.isenabled()
    gc.enable()
    with pytest.raises(RuntimeError), paused_then_frozen():
        garbage = _cycle()
        raise RuntimeError("the takeover failed")
    assert gc.isenabled()
    gc.collect()
    assert garbage() is not None


async def test_the_deferred_collection_frees_the_frozen_garbage() -> None:
    with paused_then_frozen():
        garbage = _cycle()
    task = asyncio.get_running_loop().create_task(collect_frozen_later(0.05))
    gc.collect()
    assert garbage() is not None
    await asyncio.wait_for(task, 5)
    assert garbage() is None
