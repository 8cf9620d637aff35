"""asyncio helpers the daemon's parts share."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("csms")


async def cancel_and_wait(tasks: list[asyncio.Task[Any]], rounds: int = 20, round_s: float = 0.25) -> None:
    """Cancel until every task has ended, re-cancelling on each round.

    On Python 3.11, `asyncio.wait_for` (used inside aiomqtt's publish/subscribe) swallows a
    cancellation that arrives just as the awaited operation completes; one `cancel()` is then lost
    and a plain gather would hang the daemon's shutdown. Bounded: gives up (and logs) after
    `rounds` x `round_s` seconds. The ended tasks' exceptions are retrieved (a cancellation inside
    redis-py can become an error the task ends with), so none is reported as never retrieved.
    """
    pending = [t for t in tasks if not t.done()]
    for _ in range(rounds):
        if not pending:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=round_s)
        pending = [t for t in pending if not t.done()]
    if pending:
        log.error("tasks did not stop: %s", ", ".join(t.get_name() for t in pending))
    await asyncio.gather(*(t for t in tasks if t.done()), return_exceptions=True)
