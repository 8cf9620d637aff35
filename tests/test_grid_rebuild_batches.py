"""A new grid leader reads the running sessions back in batches (csms/grid/effects/rebuild.py): a
station whose sessions fall in two batches has its pushed profiles read once and used for both, and
the sessions come back as they do read in one batch (on a real SQLite store)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from csms.grid.config import parse_grid
from csms.grid.effects import rebuild
from csms.grid.effects.pusher import TX_PROFILE_ID_BASE, Pusher
from csms.grid.model.sessions import SessionBook
from csms.ocpp.v201.transactions import tx_event
from csms.store.sqlite import SqliteStore

T0 = datetime(2026, 12, 1, 18, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(hours=1)


def _z(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def _never(*_: Any, **__: Any) -> Any:
    raise AssertionError("the read-back sends nothing")


async def _fill(store: SqliteStore) -> None:
    # list_transactions gives the newest start first: CS-1/TX-A, CS-2/TX-B, then CS-1/TX-C
    for n, (sid, tx_id, evse, limit) in enumerate((("CS-1", "TX-C", 2, 10.0), ("CS-2", "TX-B", 1, 13.0),
                                                   ("CS-1", "TX-A", 1, 16.0))):
        at = T0 + timedelta(minutes=n)
        for seq, wh in enumerate((100.0 * n, 100.0 * n + 500)):
            stamp = at + timedelta(minutes=10 * seq)
            payload: dict[str, Any] = {
                "eventType": "Started" if seq == 0 else "Updated", "timestamp": _z(stamp),
                "triggerReason": "MeterValuePeriodic", "seqNo": seq, "transactionInfo": {"transactionId": tx_id},
                "meterValue": [{"timestamp": _z(stamp), "sampledValue": [
                    {"value": wh}, {"value": 1000.0 * (n + 1), "measurand": "Power.Active.Import"}]}]}
            if seq == 0:
                payload["evse"] = {"id": evse, "connectorId": 1}
            assert await store.record_transaction_event(sid, tx_event(payload), stamp)
        profile = {"id": TX_PROFILE_ID_BASE + evse, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
                   "chargingProfileKind": "Absolute", "transactionId": tx_id,
                   "chargingSchedule": [{"id": 1, "startSchedule": _z(T0), "chargingRateUnit": "A",
                                         "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit,
                                                                     "numberPhases": 3}]}]}
        await store.record_charging_profile(sid, evse, profile, "Accepted", None, T0)
    needs = {"requestedEnergyTransfer": "AC_three_phase", "departureTime": _z(T0 + timedelta(hours=8)),
             "acChargingParameters": {"energyAmount": 20000, "evMinCurrent": 6, "evMaxCurrent": 32,
                                      "evMaxVoltage": 400}}
    await store.record_ev_charging_needs("CS-1", 2, {"evseId": 2, "chargingNeeds": needs}, T0)


async def _rebuilt(store: SqliteStore) -> dict[str, tuple[Any, ...]]:
    book = SessionBook()
    grid = parse_grid({"transformers": {"T1": {"capacity_kw": 100, "members": ["CS-*"]}}})
    count = await rebuild.rebuild_sessions(store, store, book, Pusher(_never, clock=lambda: NOW), None, grid, NOW)
    assert count == 3
    return {s.transaction_id: (s.station_id, s.evse_id, s.start_energy_wh, s.energy_wh, s.power_kw, s.setpoint_a,
                               (s.need.source, s.need.energy_kwh, s.need.baseline_wh) if s.need else None)
            for s in book}


async def test_sessions_read_back_in_batches_as_in_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteStore(str(tmp_path / "store.db"))
    await store.open()
    try:
        await _fill(store)
        whole = await _rebuilt(store)
        monkeypatch.setattr(rebuild, "READ_BATCH", 2)  # CS-1 in the first batch and in the second
        assert await _rebuilt(store) == whole
    finally:
        await store.close()
    assert whole == {"TX-A": ("CS-1", 1, 200.0, 700.0, 3.0, 16.0, None),
                     "TX-B": ("CS-2", 1, 100.0, 600.0, 2.0, 13.0, None),
                     "TX-C": ("CS-1", 2, 0.0, 500.0, 1.0, 10.0, ("ev", 20.0, 0.0))}


async def test_a_batch_that_cannot_be_taken_in_fails_the_rebuild_and_stops_the_read_ahead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next batch is read while one is taken in; when taking one in fails, that read is cancelled
    and awaited, not left running behind the failed rebuild (its error never retrieved)."""
    store = SqliteStore(str(tmp_path / "store.db"))
    await store.open()
    try:
        await _fill(store)
        monkeypatch.setattr(rebuild, "READ_BATCH", 1)
        reads: list[asyncio.Future[Any]] = []
        bounds = store.meter_bounds

        def slow_bounds(transactions: Any) -> asyncio.Future[Any]:
            # the first batch answers at once; the read ahead of the next never does (until cancelled)
            reads.append(asyncio.ensure_future(bounds(transactions)) if not reads
                         else asyncio.get_running_loop().create_future())
            return reads[-1]

        def unreadable(*_: Any) -> None:
            raise ValueError("an unreadable sample")

        monkeypatch.setattr(store, "meter_bounds", slow_bounds)
        monkeypatch.setattr(rebuild, "_take_in", unreadable)
        with pytest.raises(ValueError, match="unreadable"):
            await asyncio.wait_for(rebuild.rebuild_sessions(
                store, store, SessionBook(), Pusher(_never, clock=lambda: NOW), None,
                parse_grid({"transformers": {"T1": {"capacity_kw": 100, "members": ["CS-*"]}}}), NOW), 5)
        assert len(reads) == 2 and reads[1].cancelled(), "a read of the next batch runs on behind the failed rebuild"
    finally:
        await store.close()


def _profile(evse: int, tx_id: str, limit: float) -> dict[str, Any]:
    return {"id": TX_PROFILE_ID_BASE + evse, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute", "transactionId": tx_id,
            "chargingSchedule": [{"id": 1, "startSchedule": _z(T0), "chargingRateUnit": "A",
                                  "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit, "numberPhases": 3}]}]}


async def _fill_histories(store: SqliteStore) -> None:
    """Stations with long push histories: a session's last accepted profile among the newest, behind
    them, beyond what is read back, or none at all."""
    sessions = (("CS-1", "TX-A", 1), ("CS-1", "TX-C", 2), ("CS-2", "TX-B", 1), ("CS-3", "TX-D", 1),
                ("CS-4", "TX-E", 1))
    for n, (sid, tx_id, evse) in enumerate(sessions):
        at = T0 + timedelta(minutes=n)
        assert await store.record_transaction_event(sid, tx_event({
            "eventType": "Started", "timestamp": _z(at), "triggerReason": "Authorized", "seqNo": 0,
            "transactionInfo": {"transactionId": tx_id}, "evse": {"id": evse, "connectorId": 1},
            "meterValue": [{"timestamp": _z(at), "sampledValue": [{"value": 100.0 * n}]}]}), at)

    async def push(sid: str, evse: int, tx_id: str, limit: float, times: int = 1, status: str = "Accepted") -> None:
        for _ in range(times):
            await store.record_charging_profile(sid, evse, _profile(evse, tx_id, limit), status, None, T0)
    await push("CS-1", 1, "TX-A", 16.0)  # TX-A's, 13 rows back: behind the newest few
    await push("CS-1", 2, "TX-C", 10.0, 12)  # TX-C's among the newest
    await push("CS-1", 1, "TX-A", 6.0, status="Rejected")
    await push("CS-2", 1, "TX-OLD", 13.0, 9)  # an earlier session's only: none for TX-B
    await push("CS-3", 1, "TX-OLD", 13.0, 3)  # a short history, none for TX-D: nothing more to read
    await push("CS-4", 1, "TX-E", 11.0)  # TX-E's beyond what is read back
    await push("CS-4", 1, "TX-OLD", 13.0, rebuild.PROFILES_READ_BACK)


async def test_further_profiles_are_read_only_for_stations_whose_sessions_found_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The newest few pushed profiles of every station first, up to PROFILES_READ_BACK only of
    those with a session that found no accepted profile there; the sessions hold what they would
    from reading PROFILES_READ_BACK of every station, in one batch or in several."""
    store = SqliteStore(str(tmp_path / "store.db"))
    await store.open()
    try:
        await _fill_histories(store)
        reads: list[tuple[int, list[str]]] = []
        listing = store.list_charging_profiles_many

        async def counted(stations: Any, newest: int) -> dict[str, list[dict[str, Any]]]:
            reads.append((newest, sorted(stations)))
            return await listing(stations, newest)

        monkeypatch.setattr(store, "list_charging_profiles_many", counted)
        book = SessionBook()
        grid = parse_grid({"transformers": {"T1": {"capacity_kw": 100, "members": ["CS-*"]}}})
        assert await rebuild.rebuild_sessions(store, store, book, Pusher(_never, clock=lambda: NOW), None, grid,
                                              NOW) == 5
        setpoints = {s.transaction_id: s.setpoint_a for s in book}
        assert setpoints == {"TX-A": 16.0, "TX-C": 10.0, "TX-B": None, "TX-D": None, "TX-E": None}
        assert reads == [(rebuild.PROFILES_FIRST, ["CS-1", "CS-2", "CS-3", "CS-4"]),
                         (rebuild.PROFILES_READ_BACK, ["CS-1", "CS-2", "CS-4"])]

        async def rebuilt() -> dict[str, Any]:
            book = SessionBook()
            await rebuild.rebuild_sessions(store, store, book, Pusher(_never, clock=lambda: NOW), None, grid, NOW)
            return {s.transaction_id: s.setpoint_a for s in book}

        monkeypatch.setattr(rebuild, "READ_BATCH", 1)  # CS-1's sessions in two batches: read further once
        reads.clear()
        assert await rebuilt() == setpoints
        assert sorted(r for n, stations in reads if n == rebuild.PROFILES_READ_BACK for r in stations) == [
            "CS-1", "CS-2", "CS-4"]
        monkeypatch.setattr(rebuild, "PROFILES_FIRST", rebuild.PROFILES_READ_BACK)  # every station read whole
        reads.clear()
        assert await rebuilt() == setpoints
        assert all(n == rebuild.PROFILES_READ_BACK for n, _ in reads)
    finally:
        await store.close()
