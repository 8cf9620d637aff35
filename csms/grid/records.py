"""What the grid keeps for afterwards (``csms report``): every verification finding and every
session that ended, with what it needed, was guaranteed and got.

Both are store documents (scopes ``grid:finding`` and ``grid:served``) keyed by time first, so a
report reads a period in key order and the oldest can be pruned after ``keep_days``. Writes go
through :class:`GridMemory` (in order, behind the caller: nothing here is acknowledged to a station).
"""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from csms.domain.events import Event, VerificationFinding
from csms.grid.effects.memory import GridMemory
from csms.grid.model.sessions import Defaults, Session
from csms.grid.model.topology import Topology
from csms.interfaces import Clock
from csms.store.base import DocumentStore

log = logging.getLogger("csms.grid")

FINDING = "finding"
SERVED = "served"
PRUNE_BATCH = 1000


def time_key(at: datetime, *parts: object) -> str:
    """``2026-11-30T17:00:03.250000+00:00|...``: sorts by time (all keys are UTC, same width)."""
    return "|".join([at.astimezone(UTC).isoformat(timespec="microseconds"), *map(str, parts)])


def served_record(session: Session, transformer: str | None, defaults: Defaults, ended_at: datetime) -> dict[str, Any]:
    """What a session needed, was guaranteed and got: ``need_source`` "default" when nobody said."""
    need = session.need
    departure = session.started_at + timedelta(seconds=defaults.dwell_s) if need is None else need.departure
    return {"station_id": session.station_id, "evse_id": session.evse_id, "transaction_id": session.transaction_id,
            "transformer": transformer, "started_at": session.started_at.isoformat(),
            "ended_at": ended_at.isoformat(), "delivered_kwh": round(session.delivered_kwh, 4),
            "need_kwh": defaults.energy_kwh if need is None else need.energy_kwh,
            "guaranteed_kwh": defaults.guaranteed_kwh if need is None else need.guaranteed_kwh,
            "departure": departure.isoformat(), "need_source": "default" if need is None else need.source,
            "fixed_reason": session.fixed_reason}


class GridRecords:
    """Writes findings (heard on the bus) and ended sessions (told by the observer)."""

    def __init__(self, memory: GridMemory, topology: Topology, defaults: Defaults, clock: Clock) -> None:
        self.memory = memory
        self.topology = topology
        self.defaults = defaults
        self.clock = clock
        self._seq = itertools.count()

    def on_event(self, ev: Event) -> None:
        if not isinstance(ev, VerificationFinding) or ev.station_id is None:
            return
        now = self.clock()
        doc = {"at": now.isoformat(), "station_id": ev.station_id, "evse_id": ev.evse_id,
               "transaction_id": ev.transaction_id, "finding": ev.finding, "detail": ev.detail,
               "fixed_kw": ev.fixed_kw, "transformer": self.topology.transformer_of(ev.station_id, ev.evse_id)}
        self.memory.put(FINDING, time_key(now, ev.station_id, ev.evse_id, next(self._seq)), doc)

    def ended(self, session: Session) -> None:
        now = self.clock()
        doc = served_record(session, self.topology.transformer_of(session.station_id, session.evse_id),
                            self.defaults, now)
        self.memory.put(SERVED, time_key(now, session.station_id, session.transaction_id), doc)


async def prune(store: DocumentStore, before: datetime) -> int:
    """Delete findings and served sessions recorded before ``before`` (a batch per scope per call)."""
    gone = 0
    limit = time_key(before)
    for kind in (FINDING, SERVED):
        for key, _ in await store.list_documents(f"grid:{kind}", PRUNE_BATCH):
            if key >= limit:
                break
            await store.delete_document(f"grid:{kind}", key)
            gone += 1
    return gone
