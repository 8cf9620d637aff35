"""The per-group load history (csms/grid/history.py): slots, the bounded ring, the store round trip
(a real SQLite store), and the API route over a running daemon."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from csms.grid.config import HistoryConfig
from csms.grid.history import CHUNK_S, SCOPE, LoadHistory, Sample, chunk_key, since_from
from csms.store.sqlite import SqliteStore
from tests.waiting import until

T0 = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def sample(load: float, limit: float | None = 100.0, base: float = 10.0) -> Sample:
    return Sample(load_kw=load, ev_kw=load - base, non_ev_kw=base, limit_kw=limit, planned_kw=load - 1)


def test_a_slot_keeps_means_the_strictest_limit_and_the_peak() -> None:
    clock = FakeClock(T0)
    h = LoadHistory(HistoryConfig(resolution_s=10, hours=1), ["T1"], clock)
    h.sample("T1", sample(40, limit=100), T0)
    h.sample("T1", sample(60, limit=50), T0 + timedelta(seconds=5))
    h.sample("T1", sample(20, limit=None), T0 + timedelta(seconds=12))  # the next slot closes the first
    clock.at = T0 + timedelta(seconds=13)
    first, current = h.points("T1")
    assert first == {"t": T0.timestamp(), "load_kw": 50.0, "ev_kw": 40.0, "non_ev_kw": 10.0, "limit_kw": 50.0,
                     "planned_kw": 49.0, "peak_kw": 60.0}
    assert current["t"] == T0.timestamp() + 10 and current["load_kw"] == 20 and current["limit_kw"] is None
    assert h.points("T1", since=T0 + timedelta(seconds=10)) == [current]
    assert h.points("T1", since=T0 + timedelta(hours=2)) == []


def test_the_ring_is_bounded_and_keeps_the_latest_span() -> None:
    clock = FakeClock(T0)
    h = LoadHistory(HistoryConfig(resolution_s=10, hours=1), ["T1"], clock)
    assert h.capacity == 360
    for i in range(1000):
        clock.at = T0 + timedelta(seconds=10 * i)
        h.sample("T1", sample(float(i)), clock.at)
    points = h.points("T1")
    assert len(points) == 360 and h.rings["T1"].values.shape == (360, 6)
    assert [p["load_kw"] for p in points] == [float(i) for i in range(640, 1000)]
    assert all(b["t"] - a["t"] == 10 for a, b in zip(points, points[1:], strict=False))


def test_a_clock_stepping_back_does_not_rewrite_the_past() -> None:
    clock = FakeClock(T0 + timedelta(seconds=30))
    h = LoadHistory(HistoryConfig(resolution_s=10, hours=1), ["T1"], clock)
    h.sample("T1", sample(50), T0 + timedelta(seconds=30))
    h.sample("T1", sample(90), T0)  # an earlier slot: ignored
    assert [p["load_kw"] for p in h.points("T1")] == [50.0]


async def test_history_survives_a_restart_through_the_store(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "h.db"))
    await store.open()
    try:
        clock = FakeClock(T0 + timedelta(minutes=59))
        config = HistoryConfig(resolution_s=10, hours=2, keep_days=1)
        h = LoadHistory(config, ["T1", "T2"], clock, store)
        for i in range(12):  # two minutes over an hour boundary
            at = T0 + timedelta(minutes=59, seconds=10 * i)
            clock.at = at
            h.sample("T1", sample(30.0 + i), at)
            h.sample("T2", sample(5.0), at)
        await h.save()
        keys = [k for k, _ in await store.list_documents(SCOPE, 100)]
        assert keys == [chunk_key("T1", T0.timestamp()), chunk_key("T1", T0.timestamp() + CHUNK_S),
                        chunk_key("T2", T0.timestamp()), chunk_key("T2", T0.timestamp() + CHUNK_S)]
        assert keys[0] == "T1|2026-11-30T16:00:00Z"
        before = h.points("T1")

        again = LoadHistory(config, ["T1", "T2"], clock, store)
        assert await again.load() == 2 * 11  # the slot being filled was not complete, so not saved
        assert again.points("T1") == before[:-1]
        # A document nobody can read (a bad write, an edit) costs its points, nothing else.
        await store.put_document(SCOPE, chunk_key("T2", T0.timestamp()), {"t": "junk", "resolution_s": 10})
        third = LoadHistory(config, ["T1", "T2"], clock, store)
        assert await third.load() == 2 * 11 - 6  # T2 lost its six points of 16:59
        # A day later the hour turns: documents older than keep_days go.
        clock.at = T0 + timedelta(days=1, hours=1, minutes=30)
        third.sample("T1", sample(1.0), clock.at)
        await third.save()
        keys = [k for k, _ in await store.list_documents(SCOPE, 100)]
        assert keys == [chunk_key("T1", T0.timestamp() + CHUNK_S), chunk_key("T2", T0.timestamp() + CHUNK_S)]
    finally:
        await store.close()


def test_since_takes_a_time_or_seconds_back() -> None:
    now = T0
    assert since_from(None, now, 3600) is None
    assert since_from("600", now, 3600) == T0 - timedelta(minutes=10)
    assert since_from("2026-11-30T15:30:00Z", now, 3600) == T0 - timedelta(minutes=30)
    assert since_from("2026-11-29T15:30:00Z", now, 3600) == T0 - timedelta(hours=1)  # not beyond the span
    for bad in ("yesterday", "2026-11-30T15:30:00", "nan", "inf"):
        try:
            since_from(bad, now, 3600)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")


async def test_the_history_route(tmp_path: Path) -> None:
    from tests.test_api_grid import GRID, charging_site

    grid = {**GRID, "history": {"resolution_s": 0.5, "hours": 1}}
    async with charging_site(tmp_path, n=1, grid=grid) as (api, _):
        async def points() -> int:
            status, body = await api.get("/api/grid/transformers/T1/history", token="read")
            assert status == 200, body
            return len(body["t"])
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while await points() < 3:
            assert datetime.now(UTC) < deadline, "history did not grow"
            await asyncio.sleep(0.3)
        status, body = await api.get("/api/grid/transformers/T1/history?since=1")
        assert status == 200 and body["resolution_s"] == 0.5 and body["span_s"] == 3600
        assert 1 <= len(body["t"]) <= 4 and len(body["load_kw"]) == len(body["t"])
        assert body["limit_kw"][-1] == 100
        status, body = await api.get("/api/grid/transformers/T9/history")
        assert status == 404 and "unknown transformer 'T9'" in body["error"]
        status, body = await api.get("/api/grid/transformers/T1/history?since=yesterday")
        assert status == 400 and "since" in body["error"]


async def test_a_restarted_daemon_serves_the_history_from_before(tmp_path: Path) -> None:
    """The daemon process is stopped and started again on the same store: the page opened after the
    restart still sees the load from before it."""
    from tests.grid_outside import Api, Site, daemon

    site = Site(tmp_path, {"transformers": {"T1": {"capacity_kw": 50, "base_load": 7}},
                           "history": {"resolution_s": 0.5, "hours": 1, "save_interval_s": 1}})
    async with daemon(site) as running, Api(site) as api:
        before = await until(lambda: _points(api, 4), 15, "four history points")
        assert len(before["t"]) >= 4 and set(before["non_ev_kw"]) == {7.0} and set(before["limit_kw"]) == {50.0}
        assert await running.stop() == 0
    restarted_at = datetime.now(UTC).timestamp()
    async with daemon(site), Api(site) as api:
        after = await api.get("/api/grid/transformers/T1/history")
        kept = [t for t in after["t"] if t < restarted_at]
        assert set(before["t"]) - {before["t"][-1]} <= set(kept), (before["t"], after["t"])  # all but the open slot


def test_a_parent_groups_history_covers_the_groups_below_it() -> None:
    """T1's limit holds for SITE-A's load too, so T1's history adds it in (EV, base load and plan)."""
    from prometheus_client import CollectorRegistry

    from csms.grid.config import parse_grid
    from csms.grid.metrics import ControlMetrics
    from csms.grid.model.limits import LimitBook
    from csms.grid.model.sessions import Session, SessionBook
    from csms.grid.model.topology import Topology
    from csms.grid.views import GroupViews

    grid = parse_grid({"transformers": {
        "T1": {"capacity_kw": 100, "base_load": 5, "members": ["CP-*"]},
        "SITE-A": {"capacity_kw": 40, "parent": "T1", "base_load": 3, "members": ["CP-A*"]}}})
    book = SessionBook()
    for sid, kw in (("CP-1", 11.0), ("CP-A1", 7.0)):
        book.sessions[(sid, 1)] = Session(sid, 1, f"{sid}-tx", T0, power_kw=kw)
    views = GroupViews(grid, LimitBook(grid), book, Topology(grid), ControlMetrics(CollectorRegistry()), FakeClock(T0))
    assert views.samples(T0) == {}  # nothing planned yet: base loads unknown
    for tid, base, planned in (("T1", 5.0, 10.0), ("SITE-A", 3.0, 6.0)):
        state = views.groups[tid]
        state.base_load_kw, state.planned_kw, state.planned_at = base, planned, T0
    samples = views.samples(T0)
    assert samples["SITE-A"] == Sample(load_kw=10.0, ev_kw=7.0, non_ev_kw=3.0, limit_kw=40.0, planned_kw=9.0)
    assert samples["T1"] == Sample(load_kw=26.0, ev_kw=18.0, non_ev_kw=8.0, limit_kw=100.0, planned_kw=24.0)
    # The snapshot says the same (the dashboard's live points continue the history with it).
    assert views.group_snapshot("T1")["with_nested"] == {"load_kw": 26.0, "ev_kw": 18.0, "non_ev_kw": 8.0,
                                                         "planned_kw": 24.0}
    assert views.group_snapshot("T1")["measured_kw"] == 16.0  # its own members only, as before


async def _points(api: Any, n: int) -> dict[str, Any] | None:
    """The history once it has ``n`` points and one stored save behind it (saves every second)."""
    history: dict[str, Any] = await api.get("/api/grid/transformers/T1/history")
    return history if len(history["t"]) >= n + 2 else None
