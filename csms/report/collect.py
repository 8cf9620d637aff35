"""Read one period of what the grid kept, per transformer, through the store's interfaces: the
load history (``grid:history``), sessions served (``grid:served``), findings (``grid:finding``)
and the charging profiles the central system sent (the command log)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from csms.grid.config import GridConfig
from csms.grid.history import CHUNK_S, SCOPE, chunk_key, points_of_document
from csms.grid.model.topology import Topology
from csms.grid.records import FINDING, SERVED, time_key
from csms.report.compute import (
    Interval,
    Point,
    SessionOutcome,
    SessionSummary,
    count_into,
    outcome_of,
    settle,
    summarize,
    tally,
)
from csms.store.base import DocumentStore, SmartChargingStore, StationStore

MAX_RECORDS = 1_000_000


class ReportStore(DocumentStore, StationStore, SmartChargingStore, Protocol):
    """What a report reads."""


@dataclass
class TransformerReport:
    tid: str
    resolution_s: float | None = None
    points: list[Point] = field(default_factory=list)
    intervals: list[Interval] = field(default_factory=list)
    sessions: list[SessionOutcome] = field(default_factory=list)
    summary: SessionSummary = field(default_factory=SessionSummary)
    profiles: list[dict[str, Any]] = field(default_factory=list)  # at, station_id, evse_id, status, limit, unit
    profile_status: list[tuple[str, int]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    finding_kinds: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class Report:
    since: datetime
    until: datetime
    reaction_s: float
    transformers: list[TransformerReport]
    skipped: int = 0  # stored records that could not be read


async def collect(store: ReportStore, grid: GridConfig, since: datetime, until: datetime,
                  reaction_s: float) -> Report:
    topology = Topology(grid)
    report = Report(since, until, reaction_s, [TransformerReport(tid) for tid in grid.transformers])
    by_tid = {t.tid: t for t in report.transformers}
    for t in report.transformers:
        await _history(store, t, since, until)
        t.intervals = settle(t.points, t.resolution_s or 1.0, since.timestamp(), until.timestamp(), reaction_s)
    for doc in await _between(store, SERVED, since, until):
        outcome = outcome_of(doc)
        target = by_tid.get(str(doc.get("transformer")))
        if outcome is None:
            report.skipped += 1
        elif target is not None:
            target.sessions.append(outcome)
    for doc in await _between(store, FINDING, since, until):
        target = by_tid.get(str(doc.get("transformer")))
        if target is not None:
            target.findings.append(doc)
    await _profiles(store, topology, by_tid, since, until)
    for t in report.transformers:
        t.sessions.sort(key=lambda o: (o.guarantee_met is not False, o.ended_at))
        t.summary = summarize(t.sessions)
        t.profile_status = tally(p["status"] for p in t.profiles)
        t.finding_kinds = tally(str(f.get("finding")) for f in t.findings)
        count_into(t.intervals, (p["at"].timestamp() for p in t.profiles), "profiles")
        count_into(t.intervals, [at for at in (_ts(f.get("at")) for f in t.findings) if at is not None], "findings")
    return report


async def _history(store: ReportStore, t: TransformerReport, since: datetime, until: datetime) -> None:
    start, end = since.timestamp(), until.timestamp()
    for chunk in range(math.floor(start / CHUNK_S), math.floor(end / CHUNK_S) + 1):
        doc = await store.get_document(SCOPE, chunk_key(t.tid, chunk * CHUNK_S))
        if doc is None:
            continue
        resolution = doc.get("resolution_s")
        if not isinstance(resolution, (int, float)) or resolution <= 0:
            continue
        if t.resolution_s is None:
            t.resolution_s = float(resolution)
        elif float(resolution) != t.resolution_s:
            continue  # the daemon's resolution changed: one resolution per report
        t.points.extend(p for p in points_of_document(doc) if p["t"] is not None and start <= p["t"] < end)
    t.points.sort(key=lambda p: p["t"] or 0.0)


async def _between(store: ReportStore, kind: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    low, high = time_key(since), time_key(until)
    return [doc for key, doc in await store.list_documents(f"grid:{kind}", MAX_RECORDS) if low <= key < high]


async def _profiles(store: ReportStore, topology: Topology, by_tid: dict[str, TransformerReport],
                    since: datetime, until: datetime) -> None:
    for station in await store.list_stations():
        for row in await store.list_charging_profiles(station.station_id):
            at = _ts(row.get("sent_at") or row.get("at"))
            evse = row.get("evse_id")
            if at is None or not isinstance(evse, int) or not since.timestamp() <= at < until.timestamp():
                continue
            tid = topology.transformer_of(station.station_id, evse)
            if tid not in by_tid:
                continue
            limit, unit = _first_limit(row.get("profile"))
            by_tid[tid].profiles.append({"at": datetime.fromtimestamp(at, since.tzinfo), "station_id": station.station_id,
                                         "evse_id": evse, "status": str(row.get("status")), "limit": limit,
                                         "unit": unit, "purpose": (row.get("profile") or {}).get(
                                             "chargingProfilePurpose")})
    for t in by_tid.values():
        t.profiles.sort(key=lambda p: p["at"])


def _first_limit(profile: Any) -> tuple[float | None, str | None]:
    try:
        schedule = profile["chargingSchedule"]
        schedule = schedule[0] if isinstance(schedule, list) else schedule
        return float(schedule["chargingSchedulePeriod"][0]["limit"]), str(schedule["chargingRateUnit"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None, None


def _ts(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at.timestamp() if at.tzinfo is not None else None
