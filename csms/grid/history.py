"""Each capacity group's load over the last hours, so the dashboard can draw what happened before
it was opened and ``csms report`` can tell afterwards what the grid saw.

One point per ``resolution_s`` slot (on the grid's clock): the mean of the samples taken in it of
total load, EV load, non-EV (base) load and planned load, the strictest limit in force and the
highest total seen. Memory is bounded: each group has a ring of ``hours * 3600 / resolution_s``
slots, addressed by slot number, so a new slot overwrites the one a full span older. The rings
are saved to the store's documents (scope ``grid:history``, one document per group and UTC hour)
every ``save_interval_s`` and read back at start, so a restart keeps the picture; documents
older than ``keep_days`` are deleted as the hour turns.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from csms.grid.config import HistoryConfig
from csms.grid.records import prune
from csms.interfaces import Clock
from csms.store.base import DocumentStore

log = logging.getLogger("csms.grid")

SCOPE = "grid:history"
CHUNK_S = 3600  # one stored document per group and hour
#: Per point, in this order (kW); ``t`` is the slot's start (Unix seconds).
FIELDS = ("load_kw", "ev_kw", "non_ev_kw", "limit_kw", "planned_kw", "peak_kw")
_MEANS = ("load_kw", "ev_kw", "non_ev_kw", "planned_kw")


@dataclass(frozen=True)
class Sample:
    """What one group looks like at one instant (kW); ``limit_kw`` None: none in force."""

    load_kw: float
    ev_kw: float
    non_ev_kw: float
    limit_kw: float | None
    planned_kw: float


def chunk_key(transformer_id: str, chunk_start: float) -> str:
    """``T1|2026-11-30T17:00:00Z``: keys sort by group, then time."""
    at = datetime.fromtimestamp(chunk_start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{transformer_id}|{at}"


def parse_chunk_key(key: str) -> tuple[str, float] | None:
    tid, _, at = key.rpartition("|")
    try:
        return tid, datetime.strptime(at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def points_of_document(doc: dict[str, Any]) -> list[dict[str, float | None]]:
    """The points a stored chunk holds (skipping anything malformed: a bad document never breaks a reader)."""
    out: list[dict[str, float | None]] = []
    try:
        times = [float(t) for t in doc["t"]]
        columns = {name: list(doc["fields"][name]) for name in FIELDS}
    except (KeyError, TypeError, ValueError):
        return out
    for i, t in enumerate(times):
        point: dict[str, float | None] = {"t": t}
        for name in FIELDS:
            value = columns[name][i] if i < len(columns[name]) else None
            point[name] = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
        out.append(point)
    return out


class Ring:
    """One group's points: arrays of ``capacity`` slots, slot number ``n`` at ``n % capacity``."""

    def __init__(self, capacity: int, resolution_s: float) -> None:
        self.capacity = capacity
        self.resolution_s = resolution_s
        self.slot = np.full(capacity, -1, dtype=np.int64)  # which slot number each cell holds (-1: none)
        self.values = np.full((capacity, len(FIELDS)), np.nan)

    def put(self, slot: int, values: Iterable[float | None]) -> None:
        i = slot % self.capacity
        self.slot[i] = slot
        self.values[i] = [np.nan if v is None else v for v in values]

    def points(self, first_slot: int, last_slot: int) -> list[dict[str, float | None]]:
        """Points of slots ``first_slot .. last_slot`` in time order."""
        cells = np.nonzero((self.slot >= first_slot) & (self.slot <= last_slot))[0]
        cells = cells[np.argsort(self.slot[cells])]
        return [_point(int(self.slot[i]) * self.resolution_s, self.values[i]) for i in cells]


def _point(t: float, row: Any) -> dict[str, float | None]:
    out: dict[str, float | None] = {"t": round(t, 3)}
    for name, v in zip(FIELDS, row, strict=True):
        out[name] = None if v is None or math.isnan(v) else round(float(v), 3)
    return out


class _Slot:
    """The samples of the slot being filled."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.n = 0
        self.sums = dict.fromkeys(_MEANS, 0.0)
        self.limit: float | None = None
        self.peak = -math.inf

    def add(self, s: Sample) -> None:
        self.n += 1
        for name in _MEANS:
            self.sums[name] += getattr(s, name)
        if s.limit_kw is not None:
            self.limit = s.limit_kw if self.limit is None else min(self.limit, s.limit_kw)
        self.peak = max(self.peak, s.load_kw)

    def values(self) -> list[float | None]:
        means = {name: self.sums[name] / self.n for name in _MEANS}
        return [means["load_kw"], means["ev_kw"], means["non_ev_kw"], self.limit, means["planned_kw"], self.peak]


class LoadHistory:
    """The rings of every group, fed by :meth:`sample`; :meth:`points` for the API."""

    def __init__(self, config: HistoryConfig, groups: Iterable[str], clock: Clock,
                 store: DocumentStore | None = None) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.resolution_s = config.resolution_s
        self.capacity = max(10, math.ceil(config.hours * 3600 / config.resolution_s))
        self.rings = {tid: Ring(self.capacity, self.resolution_s) for tid in groups}
        self._open: dict[str, _Slot] = {}
        self._dirty: set[tuple[str, int]] = set()  # (group, chunk number) changed since the last save
        self._hour: int | None = None
        self.saved = 0
        self.failed_saves = 0

    def _slot_of(self, at: datetime) -> int:
        return math.floor(at.timestamp() / self.resolution_s)

    # Feeding ---------------------------------------------------------------------------------------
    def sample(self, tid: str, sample: Sample, at: datetime) -> None:
        """One observation of ``tid`` at ``at``; closes the previous slot when ``at`` is in a new one."""
        ring = self.rings.get(tid)
        if ring is None:
            return
        slot = self._slot_of(at)
        current = self._open.get(tid)
        if current is not None and current.slot != slot:
            if slot < current.slot:
                return  # the clock stepped back: keep the slot we have, do not rewrite the past
            self._close(tid, current)
            current = None
        if current is None:
            current = self._open[tid] = _Slot(slot)
        current.add(sample)

    def _close(self, tid: str, slot: _Slot) -> None:
        self.rings[tid].put(slot.slot, slot.values())
        self._dirty.add((tid, math.floor(slot.slot * self.resolution_s / CHUNK_S)))

    # Reading ---------------------------------------------------------------------------------------
    def points(self, tid: str, since: datetime | None = None) -> list[dict[str, float | None]]:
        """Closed slots of the last ``hours`` from ``since`` on, then the slot being filled (so a page
        opened now sees the latest figures at once)."""
        ring = self.rings[tid]
        now_slot = self._slot_of(self.clock())
        first = now_slot - self.capacity + 1
        if since is not None:
            first = max(first, self._slot_of(since))
        out = ring.points(first, now_slot)
        current = self._open.get(tid)
        if current is not None and current.slot >= first and current.n:
            if out and out[-1]["t"] == round(current.slot * self.resolution_s, 3):
                out.pop()
            out.append(_point(current.slot * self.resolution_s, current.values()))
        return out

    # Persistence -----------------------------------------------------------------------------------
    async def load(self) -> int:
        """Read the last ``hours`` back from the store; the number of points restored."""
        if self.store is None:
            return 0
        now = self.clock().timestamp()
        first_chunk = math.floor((now - self.capacity * self.resolution_s) / CHUNK_S)
        last_chunk = math.floor(now / CHUNK_S)
        restored = 0
        for tid, ring in self.rings.items():
            for chunk in range(first_chunk, last_chunk + 1):
                try:
                    doc = await self.store.get_document(SCOPE, chunk_key(tid, chunk * CHUNK_S))
                except Exception:  # noqa: BLE001 - a history we cannot read is no reason not to start
                    log.exception("grid history of %s not read back", tid)
                    continue
                if doc is None or doc.get("resolution_s") != self.resolution_s:
                    continue  # another resolution: its slots do not map onto ours
                for p in points_of_document(doc):
                    t = p["t"]
                    assert t is not None
                    ring.put(round(t / self.resolution_s), [p[name] for name in FIELDS])
                    restored += 1
        self._hour = last_chunk
        return restored

    async def save(self) -> None:
        """Write every hour document that changed since the last save (and prune old ones)."""
        if self.store is None:
            return
        dirty, self._dirty = self._dirty, set()
        for tid, chunk in sorted(dirty):
            start = chunk * CHUNK_S
            slots = (math.ceil(start / self.resolution_s), math.ceil((start + CHUNK_S) / self.resolution_s) - 1)
            points = self.rings[tid].points(*slots)
            doc = {"transformer": tid, "start": chunk_key(tid, start).rpartition("|")[2],
                   "resolution_s": self.resolution_s, "t": [p["t"] for p in points],
                   "fields": {name: [p[name] for p in points] for name in FIELDS}}
            try:
                await self.store.put_document(SCOPE, chunk_key(tid, start), doc)
                self.saved += 1
            except Exception:  # noqa: BLE001 - retried at the next save; the daemon goes on
                self.failed_saves += 1
                self._dirty.add((tid, chunk))
                log.exception("grid history of %s not saved", tid)
        await self._prune()

    async def _prune(self) -> None:
        """As the hour turns: delete the documents that fell out of ``keep_days`` (looking two days
        further back, for hours the daemon was down when they fell out)."""
        assert self.store is not None
        hour = math.floor(self.clock().timestamp() / CHUNK_S)
        if hour == self._hour:
            return
        self._hour = hour
        last = hour - round(self.config.keep_days * 24) - 1  # the last hour that ended keep_days ago
        try:
            await prune(self.store, datetime.fromtimestamp((last + 1) * CHUNK_S, UTC))
        except Exception:  # noqa: BLE001
            log.exception("old grid records not deleted")
        for chunk in range(last - 48, last + 1):
            for tid in self.rings:
                try:
                    await self.store.delete_document(SCOPE, chunk_key(tid, chunk * CHUNK_S))
                except Exception:  # noqa: BLE001
                    log.exception("old grid history of %s not deleted", tid)


class HistoryRecorder:
    """Component: samples every group a few times per slot and saves periodically."""

    SAMPLES_PER_SLOT = 5

    def __init__(self, history: LoadHistory, observe: Callable[[datetime], dict[str, Sample]], clock: Clock) -> None:
        self.history = history
        self.observe = observe
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    def sample_all(self) -> None:
        now = self.clock()
        for tid, sample in self.observe(now).items():
            self.history.sample(tid, sample, now)

    async def start(self) -> None:
        restored = await self.history.load()
        if restored:
            log.info("grid: %d history points read back", restored)
        self.sample_all()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="grid history")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.history.save()  # the slot being filled is not saved: it is not complete

    async def _run(self) -> None:
        period = min(2.0, self.history.resolution_s / self.SAMPLES_PER_SLOT)
        save_every = self.history.config.save_interval_s
        loop = asyncio.get_running_loop()
        next_save = loop.time() + save_every
        while True:
            await asyncio.sleep(period)
            try:
                self.sample_all()
                if loop.time() >= next_save:
                    next_save = loop.time() + save_every
                    await self.history.save()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the history must not take the grid down
                log.exception("grid history sampling failed")


def since_from(value: str | None, now: datetime, span_s: float) -> datetime | None:
    """The ``since`` query: an ISO time, or a duration in seconds back from now ("3600")."""
    if value is None or value == "":
        return None
    try:
        return now - timedelta(seconds=float(value))
    except (ValueError, OverflowError):
        pass
    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if at.tzinfo is None:
        raise ValueError("needs a time zone (e.g. 'Z')")
    return max(at, now - timedelta(seconds=span_s))
