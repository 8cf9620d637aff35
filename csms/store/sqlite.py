"""SQLite store with group commit.

One thread owns the connection. Every call becomes a job on its queue; the thread takes all jobs
waiting at that moment, runs each in its own savepoint inside one transaction, commits once and
then wakes every caller. Under load that turns thousands of small writes per second into a few
hundred commits, and each caller still returns only after its data is committed. WAL with
``synchronous=NORMAL`` survives a killed process (the OS keeps written pages); only a power
loss may lose the last commits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson

from csms.domain.meter import REGISTERS, Sample
from csms.domain.records import BootInfo, IdTokenRecord, StationRecord, TransactionRecord
from csms.domain.transactions import Registers, TxEvent, TxState, epoch, merge
from csms.store.base import CommandOutcome, Store, check_limit
from csms.store.encoding import connector_ids, transaction_record
from csms.store.encoding import from_iso as _dt
from csms.store.encoding import iso as _iso
from csms.store.encoding import to_json as _json

T = TypeVar("T")
MAX_BATCH = 1024
CHECKPOINT_INTERVAL_S = 1.0
log = logging.getLogger("csms.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS stations (
    station_id TEXT PRIMARY KEY, registration TEXT NOT NULL, registered INTEGER NOT NULL,
    vendor TEXT, model TEXT, serial_number TEXT, firmware_version TEXT, boot_reason TEXT,
    last_boot TEXT, last_seen TEXT, connected INTEGER NOT NULL DEFAULT 0,
    security_profile INTEGER NOT NULL DEFAULT 0, password_hash TEXT, extra TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS connectors (
    station_id TEXT, evse_id INTEGER, connector_id INTEGER, status TEXT, updated_at TEXT,
    PRIMARY KEY (station_id, evse_id, connector_id));
CREATE TABLE IF NOT EXISTS id_tokens (
    id_token TEXT PRIMARY KEY, type TEXT, status TEXT, expiry TEXT, group_id TEXT);
CREATE TABLE IF NOT EXISTS transactions (
    station_id TEXT, transaction_id TEXT, evse_id INTEGER, connector_id INTEGER, id_token TEXT,
    started_at TEXT, ended_at TEXT, active INTEGER, charging_state TEXT, stopped_reason TEXT,
    last_seq_no INTEGER, energy_wh REAL, first_seen_as TEXT, started_seq_no INTEGER, started_by TEXT,
    registers TEXT, PRIMARY KEY (station_id, transaction_id));
CREATE INDEX IF NOT EXISTS transactions_active ON transactions(active, station_id);
CREATE TABLE IF NOT EXISTS transaction_events (
    station_id TEXT, transaction_id TEXT, seq_no INTEGER, event_type TEXT, timestamp TEXT,
    trigger_reason TEXT, charging_state TEXT, offline INTEGER, payload TEXT, received_at TEXT,
    PRIMARY KEY (station_id, transaction_id, seq_no));
CREATE TABLE IF NOT EXISTS meter_samples (
    station_id TEXT, evse_id INTEGER, transaction_id TEXT, timestamp TEXT, measurand TEXT, phase TEXT,
    value REAL, unit TEXT, context TEXT, location TEXT, received_at TEXT);
CREATE INDEX IF NOT EXISTS meter_by_tx ON meter_samples(station_id, transaction_id);
CREATE TABLE IF NOT EXISTS ev_charging_needs (
    station_id TEXT, evse_id INTEGER, payload TEXT, received_at TEXT);
CREATE INDEX IF NOT EXISTS ev_needs_by_evse ON ev_charging_needs(station_id, evse_id);
CREATE TABLE IF NOT EXISTS charging_profiles (
    station_id TEXT, evse_id INTEGER, profile_id INTEGER, purpose TEXT, stack_level INTEGER,
    transaction_id TEXT, profile TEXT, status TEXT, status_info TEXT, sent_at TEXT);
CREATE INDEX IF NOT EXISTS charging_profiles_by_station ON charging_profiles(station_id);
CREATE TABLE IF NOT EXISTS variables (
    station_id TEXT, component TEXT, component_instance TEXT, evse_id INTEGER, connector_id INTEGER,
    variable TEXT, variable_instance TEXT, attribute_type TEXT, value TEXT, updated_at TEXT,
    PRIMARY KEY (station_id, component, component_instance, evse_id, connector_id, variable,
                 variable_instance, attribute_type));
CREATE TABLE IF NOT EXISTS security_events (
    station_id TEXT, type TEXT, timestamp TEXT, tech_info TEXT, received_at TEXT);
CREATE TABLE IF NOT EXISTS station_messages (
    station_id TEXT, action TEXT, payload TEXT, received_at TEXT);
CREATE INDEX IF NOT EXISTS station_messages_by_station ON station_messages(station_id, action);
CREATE TABLE IF NOT EXISTS documents (
    scope TEXT, key TEXT, document TEXT NOT NULL, updated_at TEXT, PRIMARY KEY (scope, key));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS commands (
    station_id TEXT, action TEXT, request TEXT, outcome TEXT, response TEXT, sent_at TEXT, finished_at TEXT);
"""




class SqliteStore(Store):
    def __init__(self, path: str) -> None:
        self.path = path
        # (job, future to settle, or None for a write-behind job); None stops the writer
        self._jobs: queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any] | None] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()

    # Machinery --------------------------------------------------------------------------------
    async def open(self) -> None:
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="sqlite-store", daemon=True)
        self._thread.start()
        await ready
        if self.path != ":memory:":
            self._stop_checkpoints.clear()
            self._checkpointer = threading.Thread(target=self._checkpoint_forever, name="sqlite-checkpoint",
                                                  daemon=True)
            self._checkpointer.start()

    async def close(self) -> None:
        if self._thread is None:
            return
        if self._checkpointer is not None:
            self._stop_checkpoints.set()
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.join)
            self._checkpointer = None
        self._jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None

    def _checkpoint_forever(self) -> None:
        """Copy the WAL into the database file from a second connection, off the commit path.

        Under ``synchronous=NORMAL`` the checkpoint is the only fsync; left to the writer it
        stalls every commit queued behind it (tens of ms on a busy disk). A PASSIVE checkpoint
        never blocks the writer.
        """
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop_checkpoints.wait(CHECKPOINT_INTERVAL_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint failed: %s", exc)
        finally:
            conn.close()

    def _run(self, ready: asyncio.Future[None]) -> None:
        assert self._loop is not None
        loop = self._loop
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints run in their own thread (see _checkpoint_forever); the writer only takes
            # over if the WAL grows past ~64 MB because that thread cannot keep up.
            conn.execute("PRAGMA wal_autocheckpoint=16000")
            conn.executescript(SCHEMA)
            _add_missing_columns(conn)
        except Exception as exc:  # noqa: BLE001 - reported to the awaiting opener
            loop.call_soon_threadsafe(ready.set_exception, exc)
            return
        loop.call_soon_threadsafe(ready.set_result, None)
        stop = False
        while not stop:
            job = self._jobs.get()
            if job is None:
                break
            batch = [job]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            outcomes = _run_batch(conn, batch)
            if any(fut is not None for fut, _, _ in outcomes):
                loop.call_soon_threadsafe(_settle, outcomes)
            else:  # write-behind only: nobody to wake, only failures to report
                _settle(outcomes)
        conn.close()

    def write_behind(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        """Queue a write without waiting for its commit.

        For records nobody waits on (commands sent, profiles pushed): the caller saves a future
        and a wake-up per record. The job commits in order with every other write, a read
        submitted later sees it, and :meth:`close` commits it before returning. A failing job
        is logged.
        """
        if self._thread is None:
            raise RuntimeError("store is not open")
        self._jobs.put((fn, None))

    async def flush(self) -> None:
        """Return once every write queued before this call (write-behind ones too) is committed."""
        await self._submit(_nothing)

    def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        if self._thread is None or self._loop is None:
            raise RuntimeError("store is not open")
        fut: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((fn, fut))
        return fut

    async def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        def job(c: sqlite3.Connection) -> list[dict[str, Any]]:
            cur = c.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        return await self._submit(job)

    # Stations ---------------------------------------------------------------------------------
    @staticmethod
    def _station(row: dict[str, Any]) -> StationRecord:
        return StationRecord(
            station_id=row["station_id"], registration=row["registration"], registered=bool(row["registered"]),
            vendor=row["vendor"], model=row["model"], serial_number=row["serial_number"],
            firmware_version=row["firmware_version"], boot_reason=row["boot_reason"],
            last_boot=_dt(row["last_boot"]), last_seen=_dt(row["last_seen"]), connected=bool(row["connected"]),
            security_profile=row["security_profile"], password_hash=row["password_hash"],
            extra=orjson.loads(row["extra"]))

    async def get_station(self, station_id: str) -> StationRecord | None:
        rows = await self._rows("SELECT * FROM stations WHERE station_id=?", (station_id,))
        return self._station(rows[0]) if rows else None

    async def list_stations(self) -> list[StationRecord]:
        return [self._station(r) for r in await self._rows("SELECT * FROM stations ORDER BY station_id")]

    async def put_station(self, s: StationRecord) -> None:
        await self._submit(lambda c: c.execute(
            "INSERT OR REPLACE INTO stations VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (s.station_id, s.registration, int(s.registered), s.vendor, s.model, s.serial_number,
             s.firmware_version, s.boot_reason, _iso(s.last_boot), _iso(s.last_seen), int(s.connected),
             s.security_profile, s.password_hash, _json(s.extra))))

    async def delete_station(self, station_id: str) -> bool:
        def job(c: sqlite3.Connection) -> bool:
            n = c.execute("DELETE FROM stations WHERE station_id=?", (station_id,)).rowcount
            c.execute("DELETE FROM connectors WHERE station_id=?", (station_id,))
            return n > 0
        return await self._submit(job)

    async def record_boot(self, station_id: str, boot: BootInfo, registration: str, at: datetime) -> None:
        args = (station_id, registration, boot.vendor, boot.model, boot.serial_number, boot.firmware_version,
                boot.reason, _iso(at), _iso(at))
        await self._submit(lambda c: c.execute(
            "INSERT INTO stations (station_id, registration, registered, vendor, model, serial_number,"
            " firmware_version, boot_reason, last_boot, last_seen, connected) VALUES (?,?,0,?,?,?,?,?,?,?,1)"
            " ON CONFLICT(station_id) DO UPDATE SET registration=excluded.registration, vendor=excluded.vendor,"
            " model=excluded.model, serial_number=excluded.serial_number,"
            " firmware_version=excluded.firmware_version, boot_reason=excluded.boot_reason,"
            " last_boot=excluded.last_boot, last_seen=excluded.last_seen, connected=1", args))

    async def set_connection_state(self, station_id: str, connected: bool, at: datetime) -> None:
        await self._submit(lambda c: c.execute(
            "UPDATE stations SET connected=?, last_seen=? WHERE station_id=?", (int(connected), _iso(at), station_id)))

    async def touch_stations(self, last_seen: dict[str, datetime]) -> None:
        if not last_seen:
            return
        rows = [(_iso(t), s) for s, t in last_seen.items()]
        await self._submit(lambda c: c.executemany("UPDATE stations SET last_seen=? WHERE station_id=?", rows))

    # Connectors -------------------------------------------------------------------------------
    async def set_connector_status(self, station_id: str, evse_id: int, connector_id: int, status: str,
                                   at: datetime) -> None:
        evse, connector = connector_ids(evse_id, connector_id)
        await self._submit(lambda c: c.execute(
            "INSERT OR REPLACE INTO connectors VALUES (?,?,?,?,?)", (station_id, evse, connector, status, _iso(at))))

    async def list_connectors(self, station_id: str) -> list[dict[str, Any]]:
        return await self._rows("SELECT evse_id, connector_id, status, updated_at FROM connectors"
                                " WHERE station_id=? ORDER BY evse_id, connector_id", (station_id,))

    # Id tokens --------------------------------------------------------------------------------
    @staticmethod
    def _token(r: dict[str, Any]) -> IdTokenRecord:
        return IdTokenRecord(r["id_token"], r["type"], r["status"], _dt(r["expiry"]), r["group_id"])

    async def get_id_token(self, id_token: str) -> IdTokenRecord | None:
        rows = await self._rows("SELECT * FROM id_tokens WHERE id_token=?", (id_token,))
        return self._token(rows[0]) if rows else None

    async def put_id_token(self, t: IdTokenRecord) -> None:
        await self._submit(lambda c: c.execute("INSERT OR REPLACE INTO id_tokens VALUES (?,?,?,?,?)",
                                               (t.id_token, t.type, t.status, _iso(t.expiry), t.group_id)))

    async def list_id_tokens(self) -> list[IdTokenRecord]:
        return [self._token(r) for r in await self._rows("SELECT * FROM id_tokens ORDER BY id_token")]

    async def delete_id_token(self, id_token: str) -> bool:
        return await self._submit(
            lambda c: c.execute("DELETE FROM id_tokens WHERE id_token=?", (id_token,)).rowcount > 0)

    # Transactions -----------------------------------------------------------------------------
    async def record_transaction_event(self, station_id: str, event: TxEvent, received_at: datetime) -> bool:
        return await self._submit(lambda c: _record_tx_event(c, station_id, event, _iso(received_at)))

    async def record_meter_values(self, station_id: str, samples: Sequence[Sample], received_at: datetime) -> None:
        rows = [(station_id, s.evse_id, s.transaction_id, s.timestamp, s.measurand, s.phase, s.value, s.unit,
                 s.context, s.location, _iso(received_at)) for s in samples]
        await self._submit(lambda c: c.executemany(
            "INSERT INTO meter_samples VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows))

    @staticmethod
    def _tx(r: dict[str, Any]) -> TransactionRecord:
        return transaction_record(r, _registers(r.get("registers")))  # absent in an old record: none

    async def get_transaction(self, station_id: str, transaction_id: str) -> TransactionRecord | None:
        rows = await self._rows("SELECT * FROM transactions WHERE station_id=? AND transaction_id=?",
                                (station_id, transaction_id))
        return self._tx(rows[0]) if rows else None

    async def list_transactions(self, *, station_id: str | None = None, active: bool | None = None,
                                since: datetime | None = None, until: datetime | None = None,
                                limit: int = 1000) -> list[TransactionRecord]:
        check_limit(limit)
        where: list[str] = []
        args: list[Any] = []
        if station_id is not None:
            where.append("station_id=?")
            args.append(station_id)
        if active is not None:
            where.append("active=?")
            args.append(int(active))
        # Timestamps are kept as the station wrote them ("...Z", "+02:00"): compare instants, not text.
        if since is not None:
            where.append("(ended_at IS NULL OR julianday(ended_at)>=julianday(?))")
            args.append(_iso(since))
        if until is not None:
            where.append("julianday(started_at)<=julianday(?)")
            args.append(_iso(until))
        sql = "SELECT * FROM transactions" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY julianday(started_at) DESC LIMIT ?"
        return [self._tx(r) for r in await self._rows(sql, (*args, limit))]

    async def transaction_events(self, station_id: str, transaction_id: str) -> list[dict[str, Any]]:
        rows = await self._rows("SELECT payload, received_at FROM transaction_events WHERE station_id=? AND"
                                " transaction_id=? ORDER BY seq_no", (station_id, transaction_id))
        return [{**orjson.loads(r["payload"]), "receivedAt": r["received_at"]} for r in rows]

    async def meter_samples(self, station_id: str, *, transaction_id: str | None = None,
                            evse_id: int | None = None, since: datetime | None = None,
                            limit: int = 100000) -> list[dict[str, Any]]:
        check_limit(limit)
        where = ["station_id=?"]
        args: list[Any] = [station_id]
        if transaction_id is not None:
            where.append("transaction_id=?")
            args.append(transaction_id)
        if evse_id is not None:
            where.append("evse_id=?")
            args.append(evse_id)
        if since is not None:
            where.append("julianday(timestamp)>=julianday(?)")
            args.append(_iso(since))
        return await self._rows(
            "SELECT timestamp, evse_id, transaction_id, measurand, phase, value, unit, context FROM meter_samples"
            " WHERE " + " AND ".join(where) + " ORDER BY julianday(timestamp), rowid LIMIT ?", (*args, limit))

    async def meter_bounds(self, transactions: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """One query; the registers' instants are julianday()'s (milliseconds), so samples within
        the same millisecond as a register's first or last come along."""
        out: dict[tuple[str, str], list[dict[str, Any]]] = {(sid, tx_id): [] for sid, tx_id in transactions}
        if not out:
            return out
        rows = await self._rows(
            "WITH k AS (SELECT DISTINCT json_extract(value, '$[0]') AS sid, json_extract(value, '$[1]') AS tid"
            " FROM json_each(?)),"
            " s AS (SELECT m.rowid AS rid, m.station_id, m.timestamp, m.evse_id, m.transaction_id, m.measurand,"
            " m.phase, m.value, m.unit, m.context, CASE WHEN m.phase IS NULL AND m.measurand IN (?, ?)"
            " THEN julianday(m.timestamp) END AS jd"
            " FROM k JOIN meter_samples m ON m.station_id = k.sid AND m.transaction_id = k.tid)"
            " SELECT station_id, timestamp, evse_id, transaction_id, measurand, phase, value, unit, context FROM"
            " (SELECT s.*, max(timestamp) OVER (PARTITION BY station_id, transaction_id) AS last_ts,"
            " min(jd) OVER w AS low, max(jd) OVER w AS high FROM s"
            " WINDOW w AS (PARTITION BY station_id, transaction_id, measurand))"
            " WHERE timestamp = last_ts OR jd = low OR jd = high ORDER BY julianday(timestamp), rid",
            (_json(list(out)), *REGISTERS))
        for r in rows:
            out[(r.pop("station_id"), r["transaction_id"])].append(r)
        return out

    # Smart charging ---------------------------------------------------------------------------
    async def record_ev_charging_needs(self, station_id: str, evse_id: int, payload: dict[str, Any],
                                       at: datetime) -> None:
        await self._submit(lambda c: c.execute("INSERT INTO ev_charging_needs VALUES (?,?,?,?)",
                                               (station_id, evse_id, _json(payload), _iso(at))))

    async def latest_ev_charging_needs(self, station_id: str, evse_id: int) -> dict[str, Any] | None:
        rows = await self._rows("SELECT payload FROM ev_charging_needs WHERE station_id=? AND evse_id=?"
                                " ORDER BY rowid DESC LIMIT 1", (station_id, evse_id))
        return orjson.loads(rows[0]["payload"]) if rows else None

    async def latest_ev_charging_needs_many(self, evses: Sequence[tuple[str, int]]
                                            ) -> dict[tuple[str, int], dict[str, Any] | None]:
        out: dict[tuple[str, int], dict[str, Any] | None] = dict.fromkeys(evses)
        if not out:
            return out
        rows = await self._rows(
            "WITH k AS (SELECT DISTINCT json_extract(value, '$[0]') AS sid, json_extract(value, '$[1]') AS eid"
            " FROM json_each(?))"
            " SELECT station_id, evse_id, payload FROM ev_charging_needs WHERE rowid IN"
            " (SELECT (SELECT max(rowid) FROM ev_charging_needs WHERE station_id = k.sid AND evse_id = k.eid)"
            " FROM k)", (_json(list(out)),))
        for r in rows:
            out[(r["station_id"], r["evse_id"])] = orjson.loads(r["payload"])
        return out

    async def record_charging_profile(self, station_id: str, evse_id: int, profile: dict[str, Any],
                                      status: str, status_info: dict[str, Any] | None, at: datetime) -> None:
        """Written behind (see :meth:`write_behind`): a wave of pushes does not wait for commits."""
        self.write_behind(_insert_profile(station_id, evse_id, profile, status, status_info, at))

    async def list_charging_profiles(self, station_id: str, newest: int | None = None) -> list[dict[str, Any]]:
        if newest is None:
            rows = await self._rows("SELECT * FROM charging_profiles WHERE station_id=? ORDER BY rowid", (station_id,))
        else:
            rows = await self._rows("SELECT * FROM charging_profiles WHERE station_id=? ORDER BY rowid DESC LIMIT ?",
                                    (station_id, check_limit(newest)))
            rows.reverse()
        return [_profile_row(r) for r in rows]

    async def list_charging_profiles_many(self, station_ids: Sequence[str], newest: int
                                          ) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {sid: [] for sid in station_ids}
        if check_limit(newest) == 0 or not out:
            return out
        rows = await self._rows(
            "WITH k AS (SELECT DISTINCT value AS sid FROM json_each(?))"
            " SELECT station_id, evse_id, profile_id, purpose, stack_level, transaction_id, profile, status,"
            " status_info, sent_at FROM (SELECT p.*, p.rowid AS rid,"
            " row_number() OVER (PARTITION BY p.station_id ORDER BY p.rowid DESC) AS n"
            " FROM k JOIN charging_profiles p ON p.station_id = k.sid) WHERE n <= ? ORDER BY rid",
            (_json(list(out)), newest))
        for r in rows:
            out[r["station_id"]].append(_profile_row(r))
        return out

    # Device model, events, commands -----------------------------------------------------------
    async def record_variables(self, station_id: str, variables: list[dict[str, Any]], at: datetime) -> None:
        rows = []
        for v in variables:
            comp, var = v.get("component", {}), v.get("variable", {})
            rows.append((station_id, comp.get("name"), comp.get("instance", ""), (comp.get("evse") or {}).get("id", -1),
                         (comp.get("evse") or {}).get("connectorId", -1), var.get("name"), var.get("instance", ""),
                         v.get("attributeType", "Actual"), None if v.get("value") is None else str(v["value"]),
                         _iso(at)))
        await self._submit(lambda c: c.executemany(
            "INSERT OR REPLACE INTO variables VALUES (?,?,?,?,?,?,?,?,?,?)", rows))

    async def list_variables(self, station_id: str) -> list[dict[str, Any]]:
        return await self._rows("SELECT component, component_instance, evse_id, connector_id, variable,"
                                " variable_instance, attribute_type, value, updated_at FROM variables"
                                " WHERE station_id=? ORDER BY component, variable", (station_id,))

    async def record_security_event(self, station_id: str, type_: str, timestamp: str, tech_info: str | None,
                                    at: datetime) -> None:
        await self._submit(lambda c: c.execute("INSERT INTO security_events VALUES (?,?,?,?,?)",
                                               (station_id, type_, timestamp, tech_info, _iso(at))))

    async def list_security_events(self, station_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        check_limit(limit)
        if station_id is None:
            return await self._rows("SELECT * FROM security_events ORDER BY rowid DESC LIMIT ?", (limit,))
        return await self._rows("SELECT * FROM security_events WHERE station_id=? ORDER BY rowid DESC LIMIT ?",
                                (station_id, limit))

    async def record_station_message(self, station_id: str, action: str, payload: dict[str, Any],
                                     at: datetime) -> None:
        await self._submit(lambda c: c.execute("INSERT INTO station_messages VALUES (?,?,?,?)",
                                               (station_id, action, _json(payload), _iso(at))))

    async def list_station_messages(self, station_id: str, action: str | None = None,
                                    limit: int = 1000) -> list[dict[str, Any]]:
        check_limit(limit)
        sql, args = "SELECT * FROM station_messages WHERE station_id=?", [station_id]
        if action is not None:
            sql += " AND action=?"
            args.append(action)
        rows = await self._rows(sql + " ORDER BY rowid DESC LIMIT ?", (*args, limit))
        for r in rows:
            r["payload"] = orjson.loads(r["payload"])
        return rows

    async def record_command(self, station_id: str, action: str, request: dict[str, Any], outcome: CommandOutcome,
                             response: dict[str, Any] | None, sent_at: datetime, finished_at: datetime) -> None:
        """Written behind (see :meth:`write_behind`): nobody reads it on the call's path."""
        self.write_behind(_insert_command(station_id, action, request, outcome, response, sent_at, finished_at))

    async def list_commands(self, station_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        check_limit(limit)
        if station_id is None:
            rows = await self._rows("SELECT * FROM commands ORDER BY rowid DESC LIMIT ?", (limit,))
        else:
            rows = await self._rows("SELECT * FROM commands WHERE station_id=? ORDER BY rowid DESC LIMIT ?",
                                    (station_id, limit))
        for r in rows:
            r["request"] = orjson.loads(r["request"])
            r["response"] = orjson.loads(r["response"]) if r["response"] else None
        return rows


    # Documents and counters -------------------------------------------------------------------
    async def get_document(self, scope: str, key: str) -> dict[str, Any] | None:
        rows = await self._rows("SELECT document FROM documents WHERE scope=? AND key=?", (scope, key))
        return dict(orjson.loads(rows[0]["document"])) if rows else None

    async def put_document(self, scope: str, key: str, document: dict[str, Any]) -> None:
        encoded = _json(document)
        await self._submit(lambda c: c.execute("INSERT OR REPLACE INTO documents VALUES (?,?,?,datetime('now'))",
                                               (scope, key, encoded)))

    async def delete_document(self, scope: str, key: str) -> bool:
        def job(c: sqlite3.Connection) -> bool:
            return c.execute("DELETE FROM documents WHERE scope=? AND key=?", (scope, key)).rowcount > 0
        return await self._submit(job)

    async def list_documents(self, scope: str, limit: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        check_limit(limit)
        rows = await self._rows("SELECT key, document FROM documents WHERE scope=? ORDER BY key LIMIT ?",
                                (scope, limit))
        return [(r["key"], dict(orjson.loads(r["document"]))) for r in rows]

    async def next_number(self, name: str) -> int:
        def job(c: sqlite3.Connection) -> int:
            row = c.execute("INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value=value+1 "
                            "RETURNING value", (name,)).fetchone()
            return int(row[0])
        return await self._submit(job)

Outcome = tuple["asyncio.Future[Any] | None", Any, BaseException | None]  # None: a write-behind job


def _nothing(conn: sqlite3.Connection) -> None:
    return None


def _insert_command(station_id: str, action: str, request: dict[str, Any], outcome: str,
                    response: dict[str, Any] | None, sent_at: datetime,
                    finished_at: datetime) -> Callable[[sqlite3.Connection], Any]:
    """The job inserting one command record; the values are encoded on the writer thread, off the loop."""
    def job(c: sqlite3.Connection) -> Any:
        return c.execute("INSERT INTO commands VALUES (?,?,?,?,?,?,?)",
                         (station_id, action, _json(request), outcome, None if response is None else _json(response),
                          _iso(sent_at), _iso(finished_at)))
    return job


def _profile_row(r: dict[str, Any]) -> dict[str, Any]:
    """A charging-profile record as read: its JSON columns decoded."""
    r["profile"] = orjson.loads(r["profile"])
    r["status_info"] = orjson.loads(r["status_info"]) if r["status_info"] else None
    return r


def _insert_profile(station_id: str, evse_id: int, profile: dict[str, Any], status: str,
                    status_info: dict[str, Any] | None, at: datetime) -> Callable[[sqlite3.Connection], Any]:
    """The job inserting one charging-profile record (encoded on the writer thread)."""
    def job(c: sqlite3.Connection) -> Any:
        return c.execute("INSERT INTO charging_profiles VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (station_id, evse_id, profile.get("id"), profile.get("chargingProfilePurpose"),
                          profile.get("stackLevel"), profile.get("transactionId"), _json(profile), status,
                          _json(status_info) if status_info else None, _iso(at)))
    return job


def _run_job(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]) -> Any:
    result = fn(conn)
    if isinstance(result, sqlite3.Cursor):
        # Never hand a cursor to the event loop: it would be finalised there, on another thread,
        # while this one uses the connection (SQLITE_MISUSE "bad parameter or other API misuse").
        result.close()
        result = None
    return result


def _run_batch(conn: sqlite3.Connection, batch: list[tuple[Callable[[sqlite3.Connection], Any], Any]]) -> list[Outcome]:
    """Run every job of the batch in one transaction and commit once.

    The fast path has no per-job savepoint (they cost two statements per job). If any job fails,
    the whole transaction is rolled back and the batch is replayed with a savepoint per job, so
    one bad job fails alone and the others still commit.
    """
    try:
        conn.execute("BEGIN")
        outcomes: list[Outcome] = [(fut, _run_job(conn, fn), None) for fn, fut in batch]
        conn.execute("COMMIT")
        return outcomes
    except Exception:  # noqa: BLE001 - replay job by job below
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
    outcomes = []
    try:
        conn.execute("BEGIN")
        for fn, fut in batch:
            conn.execute("SAVEPOINT job")
            try:
                outcomes.append((fut, _run_job(conn, fn), None))
                conn.execute("RELEASE job")
            except Exception as exc:  # noqa: BLE001 - one bad job must not fail the batch
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((fut, None, exc))
        conn.execute("COMMIT")
    except Exception as exc:  # noqa: BLE001 - commit failed: nobody may acknowledge
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        outcomes = [(fut, None, exc) for _, fut in batch]
    return outcomes


def _settle(outcomes: list[Outcome]) -> None:
    for fut, result, exc in outcomes:
        if fut is None:
            if exc is not None:
                log.error("a write-behind record was lost: %s", exc)
            continue
        if fut.cancelled():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)


_TX_COLUMNS = ("evse_id", "connector_id", "id_token", "started_at", "ended_at", "active", "charging_state",
               "stopped_reason", "last_seq_no", "energy_wh", "first_seen_as", "started_seq_no", "started_by",
               "registers")
#: Columns added after a table was first released: a store file from before gets them at open.
_ADDED_COLUMNS = {"transactions": (("started_seq_no", "INTEGER"), ("started_by", "TEXT"), ("registers", "TEXT"))}


def _registers(text: str | None) -> Registers:
    """The stored registers; absent (a record from before) or unreadable reads as none."""
    if not text:
        return Registers()
    try:
        return Registers.from_record(orjson.loads(text))
    except ValueError:
        return Registers()


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for table, columns in _ADDED_COLUMNS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns:
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def _record_tx_event(c: sqlite3.Connection, station_id: str, ev: TxEvent, received_at: str | None) -> bool:
    """Store the event (unless already stored) and fold it into the transaction with the shared rule;
    one writer thread and one transaction: nothing can change the row between read and write."""
    cur = c.execute("INSERT OR IGNORE INTO transaction_events VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (station_id, ev.transaction_id, ev.seq_no, ev.event_type, ev.timestamp, ev.trigger_reason,
                     ev.charging_state, int(ev.offline), _json(ev.payload), received_at))
    if cur.rowcount == 0:
        return False  # retransmission of an event already stored
    row = c.execute(f"SELECT {', '.join(_TX_COLUMNS)} FROM transactions WHERE station_id=? AND transaction_id=?",
                    (station_id, ev.transaction_id)).fetchone()
    previous = None
    if row is not None:
        evse_id, connector_id, id_token, started_at, ended_at, active, charging_state, stopped_reason, last_seq, \
            energy_wh, first_seen_as, started_seq_no, started_by, registers = row
        previous = TxState(started_at=started_at, started_epoch=epoch(started_at, "stored started_at"),
                           last_seq_no=last_seq, active=bool(active), first_seen_as=first_seen_as, evse_id=evse_id,
                           connector_id=connector_id, id_token=id_token, ended_at=ended_at,
                           charging_state=charging_state, stopped_reason=stopped_reason, energy_wh=energy_wh,
                           started_seq_no=started_seq_no, started_by=started_by,
                           registers=_registers(registers))
    tx = merge(previous, ev)
    values = (tx.evse_id, tx.connector_id, tx.id_token, tx.started_at, tx.ended_at, int(tx.active), tx.charging_state,
              tx.stopped_reason, tx.last_seq_no, tx.energy_wh, tx.first_seen_as, tx.started_seq_no, tx.started_by,
              _json(tx.registers.record()))
    if row is None:
        c.execute("INSERT INTO transactions (station_id, transaction_id, " + ", ".join(_TX_COLUMNS) + ")"
                  " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (station_id, ev.transaction_id, *values))
    else:
        c.execute("UPDATE transactions SET " + ", ".join(f"{col}=?" for col in _TX_COLUMNS) +
                  " WHERE station_id=? AND transaction_id=?", (*values, station_id, ev.transaction_id))
    if ev.samples:
        c.executemany("INSERT INTO meter_samples VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                      [(station_id, s.evse_id, s.transaction_id, s.timestamp, s.measurand, s.phase, s.value,
                        s.unit, s.context, s.location, received_at) for s in ev.samples])
    return True
