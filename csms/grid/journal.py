"""The grid's recent history: every limit, plan, push, finding and setup, for the operator API
(``/api/grid/events``), the dashboard and the demo's summary."""

from __future__ import annotations

from collections import deque
from typing import Any

from csms.interfaces import Clock


class Journal:
    def __init__(self, clock: Clock, size: int = 2000) -> None:
        self.clock = clock
        self.events: deque[dict[str, Any]] = deque(maxlen=size)

    def record(self, kind: str, /, **data: Any) -> None:
        self.events.append({**data, "at": self.clock().isoformat(), "kind": kind})

    def recent(self, limit: int) -> list[dict[str, Any]]:
        return list(self.events)[-limit:]
