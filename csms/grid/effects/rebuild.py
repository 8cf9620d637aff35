"""Sessions rebuilt from the store at start: after a restart (or a crash) every transaction that is
still running is a session again before the first plan, with its EVSE, its meter readings (energy
delivered, last measured power), its need (the operator's, else the car's) and the last profile it
accepted. Its station counts as disconnected until it reconnects, so until then the session is
budgeted at its last measured draw and nothing is pushed to it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from csms.domain import vehicles
from csms.domain.meter import DEFAULT_MEASURAND, EXPORT_REGISTER, Sample, in_base_unit, latest_reading
from csms.domain.transactions import epoch
from csms.grid.config import GridConfig
from csms.grid.effects.memory import NEED, GridMemory, need_key
from csms.grid.effects.pusher import TX_PROFILE_ID_BASE, Pusher
from csms.grid.model.sessions import Session, SessionBook, need_from_ev, need_from_record
from csms.store.base import SmartChargingStore, TransactionStore
from profiles.installed import setpoints_from_profile

log = logging.getLogger("csms.grid")

MAX_SESSIONS = 100_000  # active transactions read at start
#: Sessions read back per store call: one query (or one Redis pipeline) each for their meter
#: readings, their cars' charging needs and their stations' pushed profiles. (Read one session at a
#: time, 1,000 at once, 30,000 took a new leader 8-9 s; see docs/scale-out.md, "takeover".)
READ_BATCH = 1000
#: A station's pushed profiles read back, newest first: its history grows with every push (about ten
#: per session-hour), and the last accepted TxProfile of a running session is among the newest. A
#: session whose is further back is taken as holding nothing known, and gets its plan again.
PROFILES_READ_BACK = 50
#: Of those, read first: a session's last accepted TxProfile is nearly always among the newest few;
#: only stations with a session that found none there (and more history) are read to
#: :data:`PROFILES_READ_BACK`, with the same result. Every row is a whole profile to decode.
PROFILES_FIRST = 8
PHASE_KW = 230.0 / 1000.0


async def rebuild_sessions(store: TransactionStore, profiles: SmartChargingStore, book: SessionBook,
                           pusher: Pusher, memory: GridMemory | None, grid: GridConfig, now: datetime) -> int:
    """Sessions for every active transaction in the store; returns how many."""
    records = await store.list_transactions(active=True, limit=MAX_SESSIONS)
    needs = await memory.load(NEED) if memory is not None else {}
    used: set[str] = set()
    pushed: dict[str, list[dict[str, Any]]] = {}
    sessions: list[Session] = []
    for record in records:
        if record.evse_id is None or record.evse_id <= 0:
            log.warning("grid: transaction %s of %s has no known EVSE; it joins when the station says which",
                        record.transaction_id, record.station_id)
            continue
        started = record.started_at.astimezone(UTC) if record.started_at is not None else now
        session = book.adopt(record.station_id, record.evse_id, record.transaction_id, min(started, now))
        session.charging_state = record.charging_state
        token = vehicles.token_key(record.id_token)
        if token is not None:  # the car is judged on what earlier sessions taught about it
            session.add_vehicle_ids((token,))
        key = need_key(session.station_id, session.transaction_id)
        if key in needs:
            try:
                session.need = need_from_record(needs[key])
                used.add(key)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("grid: stored need of %s is unreadable (%s)", key, exc)
        sessions.append(session)
    batches = [sessions[first:first + READ_BATCH] for first in range(0, len(sessions), READ_BATCH)]
    listing: set[str] = set()
    deep: set[str] = set()  # stations read to PROFILES_READ_BACK

    def read(batch: list[Session]) -> asyncio.Future[tuple[Any, ...]]:
        stations = [sid for sid in dict.fromkeys(s.station_id for s in batch) if sid not in listing]
        listing.update(stations)
        return asyncio.gather(
            store.meter_bounds([(s.station_id, s.transaction_id) for s in batch]),
            profiles.latest_ev_charging_needs_many([(s.station_id, s.evse_id) for s in batch if s.need is None]),
            profiles.list_charging_profiles_many(stations, min(PROFILES_FIRST, PROFILES_READ_BACK)))

    ahead: asyncio.Future[tuple[Any, ...]] | None = None
    try:
        for i, batch in enumerate(batches):
            meters, evs, listed = await (ahead if ahead is not None else read(batch))
            # the next batch is read while this one is taken in: the store works meanwhile
            ahead = read(batches[i + 1]) if i + 1 < len(batches) else None
            pushed.update(listed)
            unmatched = _take_in(batch, meters, evs, pushed, book, pusher, grid, now)
            await _look_further(unmatched, profiles, pushed, deep, pusher, grid, now)
    finally:  # a failed batch fails the rebuild: the read ahead is not left behind unawaited
        if ahead is not None:
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)
    if memory is not None:
        for key in set(needs) - used:
            memory.delete(NEED, key)  # the session ended while we were away
    return len(sessions)


async def _look_further(unmatched: list[Session], profiles: SmartChargingStore,
                        pushed: dict[str, list[dict[str, Any]]], deep: set[str], pusher: Pusher, grid: GridConfig,
                        now: datetime) -> None:
    """The last accepted profile of sessions that found none among their station's newest
    :data:`PROFILES_FIRST`, from up to :data:`PROFILES_READ_BACK` (where the station has more)."""
    further = [sid for sid in dict.fromkeys(s.station_id for s in unmatched)
               if sid not in deep and PROFILES_FIRST <= len(pushed[sid]) < PROFILES_READ_BACK]
    if not further:
        return
    deep.update(further)
    pushed.update(await profiles.list_charging_profiles_many(further, PROFILES_READ_BACK))
    again = set(further)
    for session in unmatched:
        if session.station_id in again:
            _last_profile(session, pushed[session.station_id], pusher, grid, now)


def _take_in(batch: list[Session], meters: dict[Any, Any], evs: dict[Any, Any],
             pushed: dict[str, list[dict[str, Any]]], book: SessionBook, pusher: Pusher, grid: GridConfig,
             now: datetime) -> list[Session]:
    """A batch's readings, cars' needs (where the grid's own memory had none) and last accepted
    profiles; returns the sessions that found no accepted profile among their station's rows."""
    unmatched = []
    for session in batch:
        _readings(session, meters[(session.station_id, session.transaction_id)], now)
        if session.need is None:
            ev = evs[(session.station_id, session.evse_id)]
            charging = ev.get("chargingNeeds") if ev is not None else None  # stored: the whole request
            if isinstance(charging, dict):
                need = need_from_ev(charging, now, book.defaults)
                if need.departure > session.started_at:  # not the car of an earlier session
                    need.baseline_wh = session.start_energy_wh
                    session.need = need
        if not _last_profile(session, pushed[session.station_id], pusher, grid, now):
            unmatched.append(session)
    return unmatched


def _readings(session: Session, rows: list[dict[str, Any]], now: datetime) -> None:
    """Both registers at the start and now, and the last measured power, from the transaction's
    samples: all of them or those :meth:`~csms.store.base.TransactionStore.meter_bounds` gives,
    alike (it gives every sample that can change the result)."""
    samples = [Sample(r["timestamp"], r.get("evse_id"), r.get("transaction_id"), r["measurand"], r.get("phase"),
                      float(r["value"]), r.get("unit"), r.get("context"), None) for r in rows]
    session.start_energy_wh, session.energy_wh = _register(samples, DEFAULT_MEASURAND)
    session.start_export_wh, session.export_wh = _register(samples, EXPORT_REGISTER)
    reading = latest_reading(samples)
    if reading is None:
        return
    if reading.power_w is not None:
        session.power_kw, session.power_at = reading.power_w / 1000.0, now


def _register(samples: list[Sample], measurand: str) -> tuple[float | None, float | None]:
    """A register's first and last value (Wh) among the samples, by instant."""
    register = sorted((epoch(s.timestamp, "sample"), in_base_unit(s.value, s.unit)) for s in samples
                      if s.measurand == measurand and s.phase is None)
    return (register[0][1], register[-1][1]) if register else (None, None)


def _last_profile(session: Session, rows: list[dict[str, Any]], pusher: Pusher, grid: GridConfig,
                  now: datetime) -> bool:
    """The last TxProfile the session's station accepted for it, as what it has installed (until
    the station, once back, says what it really holds); False if ``rows`` hold none (nothing done)."""
    p = grid.planning
    for row in reversed(rows):
        profile = row.get("profile") or {}
        if (row.get("status") != "Accepted" or row.get("evse_id") != session.evse_id
                or profile.get("id") != TX_PROFILE_ID_BASE + session.evse_id
                or profile.get("transactionId") != session.transaction_id):
            continue
        sp = setpoints_from_profile(profile, station_id=session.station_id, evse_id=session.evse_id,
                                    slot_s=float(p.slot_s), horizon_slots=p.horizon_slots, default_phases=3,
                                    now=now)
        if sp is None:
            return True
        pusher.adopt(session.key, sp, 0.0)  # on the station's clock, as it was sent
        value = sp.value_at(now)
        if value is not None:
            session.setpoint_a = session.pushed_a = value
            session.setpoint_kw = value * sp.phases * PHASE_KW
        return True
    return False
