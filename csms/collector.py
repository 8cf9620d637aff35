"""The cyclic garbage collector around a bulk load of long-lived state (a new grid leader's takeover).

A takeover reads back the state of 30,000 sessions (millions of objects) while the node keeps serving
its stations. Measured in the failover of `python -m bench cluster --only failover`, the collector
passes during the takeover took seconds of the new leader's CPU (one young-generation pass over the
state being read back 1.2 s, about ten more of 0.05-0.2 s) and freed a few hundred objects: the state
read back is long-lived. After it, every full collection scanned it again (2.6 s each).

So while the state is read back no collection runs, and what was read is frozen (``gc.freeze``: kept
out of every later collection, as the daemon does with what it holds after its start). Frozen
objects that later become cyclic garbage are not freed while frozen (plain reference counting
still frees the rest), so some minutes later, once the takeover's rush is over, everything is
unfrozen, collected once and frozen again (one full collection, as the collector makes from time to
time anyway: about 2 s at 30,000 sessions), and again shortly after the node stops leading, when its
grid part has let go of the term's state.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("csms")

#: How long after a bulk load the frozen objects are collected once (its cyclic garbage freed).
COLLECT_FROZEN_AFTER_S = 300.0
#: How long after a grid leader resigns what its term froze is collected (its state let go).
COLLECT_AFTER_RESIGN_S = 10.0


@contextmanager
def paused_then_frozen() -> Iterator[None]:
    """No cyclic collection inside the block; what is alive at its end is frozen (also on error)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def collect_frozen() -> int:
    """Unfreeze, collect everything once and freeze what survives (as at the daemon's start);
    returns how many objects were freed."""
    started = time.perf_counter()
    gc.unfreeze()
    freed = gc.collect()
    gc.freeze()
    log.info("garbage collector: %d objects freed in %.2f s; %d frozen", freed, time.perf_counter() - started,
             gc.get_freeze_count())
    return freed


async def collect_frozen_later(delay_s: float = COLLECT_FROZEN_AFTER_S) -> None:
    """:func:`collect_frozen` once, ``delay_s`` from now."""
    await asyncio.sleep(delay_s)
    collect_frozen()
