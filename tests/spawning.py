"""The spawner handed to a Cluster or GridLeadership that a test builds in process.

The daemon's own spawner (csms.app.Daemon.spawn) also keeps its tasks and cancels them at stop; a
test that builds a cluster part on its own only needs the jobs started on the running loop (the part
cancels its long-running tasks at close). One copy here, used by every such test module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class LoopSpawner:
    """Starts each job as a task on the running loop (satisfies csms.interfaces.Spawner)."""

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        return asyncio.get_running_loop().create_task(coro, name=name or None)
