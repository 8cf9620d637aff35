"""PostgreSQL store: the same records as the SQLite and Redis stores, in tables an operator can query.

Connections come from a pool and run in autocommit; a write of more than one statement runs in
one transaction. A call returns only after PostgreSQL committed (and, with the server's default
``synchronous_commit = on``, flushed its WAL), so "persist before you acknowledge" holds for every
write, the command log included (nothing is written behind). PostgreSQL itself groups the commits
of concurrent connections into few WAL flushes.

A TransactionEvent is folded into its transaction by the shared merge rule in Python, under a row
lock (``SELECT ... FOR UPDATE``) taken after the event's own row is inserted: a retransmission
waits on the first copy's insert and then stores nothing, two nodes sharing the database can
never both store it, and two events of one transaction merge one after the other.

Values are kept as the other backends keep them: date-times a station wrote stay text as it wrote
them (canonical form) next to a ``timestamptz`` column of the instant, which every query compares;
payloads are ``json`` (kept verbatim, so ``\\u0000`` and 64-bit integers round-trip). The schema
(docs/storage.md) lives in its own PostgreSQL schema, ``postgres_schema``, created at open.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from typing import Any, cast

import orjson
import psycopg
from psycopg import AsyncConnection, sql
from psycopg.abc import Buffer
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Json, set_json_loads
from psycopg.types.string import StrBinaryDumper, StrDumperUnknown, TextBinaryLoader, TextLoader
from psycopg_pool import AsyncConnectionPool

from csms.domain.datetimes import parse
from csms.domain.meter import REGISTERS, Sample
from csms.domain.records import BootInfo, IdTokenRecord, StationRecord, TransactionRecord
from csms.domain.transactions import Registers, TxEvent, TxState, merge
from csms.store.base import CommandOutcome, Store, check_limit
from csms.store.encoding import connector_ids, transaction_record
from csms.store.encoding import iso as _iso
from csms.store.encoding import to_json as _json
from csms.store.postgres_options import dsn_problem, redact, schema_problem

log = logging.getLogger(__name__)

Conn = AsyncConnection[DictRow]
CONNECT_TIMEOUT_S = 10

#: The tables, in the store's own schema (set as ``search_path``). Ids an operator lists in order
#: are ``COLLATE "C"``: byte order, as SQLite and Redis sort them.
SCHEMA = """
CREATE TABLE IF NOT EXISTS stations (
    station_id TEXT COLLATE "C" PRIMARY KEY, registration TEXT NOT NULL, registered BOOLEAN NOT NULL DEFAULT false,
    vendor TEXT, model TEXT, serial_number TEXT, firmware_version TEXT, boot_reason TEXT,
    last_boot TIMESTAMPTZ, last_seen TIMESTAMPTZ, connected BOOLEAN NOT NULL DEFAULT false,
    security_profile BIGINT NOT NULL DEFAULT 0, password_hash TEXT, extra JSON NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS connectors (
    station_id TEXT, evse_id BIGINT, connector_id BIGINT, status TEXT NOT NULL, updated_at TIMESTAMPTZ,
    PRIMARY KEY (station_id, evse_id, connector_id));
CREATE TABLE IF NOT EXISTS id_tokens (
    id_token TEXT COLLATE "C" PRIMARY KEY, type TEXT, status TEXT, expiry TIMESTAMPTZ, group_id TEXT);
CREATE TABLE IF NOT EXISTS transactions (
    station_id TEXT, transaction_id TEXT, evse_id BIGINT, connector_id BIGINT, id_token TEXT,
    started_at TEXT NOT NULL, started TIMESTAMPTZ NOT NULL, ended_at TEXT, ended TIMESTAMPTZ,
    active BOOLEAN NOT NULL, charging_state TEXT, stopped_reason TEXT, last_seq_no BIGINT NOT NULL,
    energy_wh DOUBLE PRECISION, first_seen_as TEXT NOT NULL, started_seq_no BIGINT, started_by TEXT,
    registers JSON, PRIMARY KEY (station_id, transaction_id));
ALTER TABLE transactions ADD COLUMN IF NOT EXISTS registers JSON;
CREATE INDEX IF NOT EXISTS transactions_by_start ON transactions (started DESC);
CREATE INDEX IF NOT EXISTS transactions_by_station ON transactions (station_id, started DESC);
CREATE INDEX IF NOT EXISTS transactions_active ON transactions (started DESC) WHERE active;
CREATE TABLE IF NOT EXISTS transaction_events (
    station_id TEXT, transaction_id TEXT, seq_no BIGINT, event_type TEXT NOT NULL, timestamp TEXT NOT NULL,
    ts TIMESTAMPTZ NOT NULL, trigger_reason TEXT, charging_state TEXT, offline BOOLEAN NOT NULL, payload JSON NOT NULL,
    received_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (station_id, transaction_id, seq_no));
CREATE TABLE IF NOT EXISTS meter_samples (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, station_id TEXT NOT NULL, evse_id BIGINT,
    transaction_id TEXT, timestamp TEXT NOT NULL, ts TIMESTAMPTZ NOT NULL, measurand TEXT, phase TEXT,
    value DOUBLE PRECISION, unit TEXT, context TEXT, location TEXT, received_at TIMESTAMPTZ);
CREATE INDEX IF NOT EXISTS meter_samples_by_station ON meter_samples (station_id, ts, id);
CREATE INDEX IF NOT EXISTS meter_samples_by_tx ON meter_samples (station_id, transaction_id, ts, id)
    WHERE transaction_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS ev_charging_needs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, station_id TEXT NOT NULL, evse_id BIGINT NOT NULL,
    payload JSON NOT NULL, received_at TIMESTAMPTZ);
CREATE INDEX IF NOT EXISTS ev_charging_needs_by_evse ON ev_charging_needs (station_id, evse_id, id);
CREATE TABLE IF NOT EXISTS charging_profiles (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, station_id TEXT NOT NULL, evse_id BIGINT,
    profile_id BIGINT, purpose TEXT, stack_level BIGINT, transaction_id TEXT, profile JSON NOT NULL,
    status TEXT, status_info JSON, sent_at TIMESTAMPTZ);
CREATE INDEX IF NOT EXISTS charging_profiles_by_station ON charging_profiles (station_id, id);
CREATE TABLE IF NOT EXISTS variables (
    station_id TEXT, identity TEXT, component TEXT COLLATE "C", component_instance TEXT COLLATE "C",
    evse_id BIGINT, connector_id BIGINT, variable TEXT COLLATE "C", variable_instance TEXT COLLATE "C",
    attribute_type TEXT COLLATE "C", value TEXT, updated_at TIMESTAMPTZ, PRIMARY KEY (station_id, identity));
CREATE TABLE IF NOT EXISTS security_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, station_id TEXT NOT NULL, type TEXT, timestamp TEXT,
    tech_info TEXT, received_at TIMESTAMPTZ);
CREATE INDEX IF NOT EXISTS security_events_by_station ON security_events (station_id, id);
CREATE TABLE IF NOT EXISTS station_messages (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, station_id TEXT NOT NULL, action TEXT NOT NULL,
    payload JSON NOT NULL, received_at TIMESTAMPTZ);
CREATE INDEX IF NOT EXISTS station_messages_by_station ON station_messages (station_id, action, id);
CREATE TABLE IF NOT EXISTS commands (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, station_id TEXT NOT NULL, action TEXT NOT NULL,
    request JSON NOT NULL, outcome TEXT NOT NULL, response JSON, sent_at TIMESTAMPTZ, finished_at TIMESTAMPTZ);
CREATE INDEX IF NOT EXISTS commands_by_station ON commands (station_id, id);
CREATE TABLE IF NOT EXISTS documents (
    scope TEXT COLLATE "C", key TEXT COLLATE "C", document JSON NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
"""

#: Taken while the schema is created, so several nodes starting at once do not race on it.
_SCHEMA_LOCK = 0x6E6276_7067  # "nbv" "pg"

_TX_COLUMNS = ("evse_id", "connector_id", "id_token", "started_at", "started", "ended_at", "ended", "active",
               "charging_state", "stopped_reason", "last_seq_no", "energy_wh", "first_seen_as", "started_seq_no",
               "started_by", "registers")


def _instant(stamp: str | None) -> datetime | None:
    """The instant of a canonical OCPP date-time (checked before it reaches a store)."""
    return None if stamp is None else parse(stamp)


def _profile_row(r: dict[str, Any]) -> dict[str, Any]:
    """A charging-profile record as the other backends give it."""
    return {**r, "sent_at": _text(r["sent_at"])}


def _text(v: datetime | None) -> str | None:
    """A ``timestamptz`` as the other backends return times: UTC ISO 8601 text."""
    return _iso(v)


def _loads(raw: Any) -> Any:
    return orjson.loads(raw)


class PostgresStore(Store):
    def __init__(self, dsn: str, schema: str = "netbewust", *, pool_size: int = 16) -> None:
        problem = dsn_problem(dsn)
        if problem:
            raise ValueError(f"postgres_dsn {problem}")
        problem = schema_problem(schema)
        if problem:
            raise ValueError(f"postgres_schema {problem}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"postgres_pool_size must be an integer >= 1, got {pool_size!r}")
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self._pool: AsyncConnectionPool[Conn] | None = None

    # Machinery --------------------------------------------------------------------------------
    async def open(self) -> None:
        options = f"-c search_path={self.schema}"
        try:
            conn = await AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as exc:
            raise ConnectionError(f"cannot reach PostgreSQL at {redact(self.dsn)}: {exc}".strip()) from exc
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
                await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(self.schema)))
                await conn.execute(SCHEMA)
            setting = await (await conn.execute("SHOW synchronous_commit")).fetchone()
        finally:
            await conn.close()
        if setting is not None and setting[0] == "off":
            log.warning("PostgreSQL at %s runs with synchronous_commit=off: acknowledged writes may be lost when it"
                        " crashes (see docs/storage.md)", redact(self.dsn))

        async def configure(c: Conn) -> None:
            set_json_loads(_loads, c)
            _nul_safe_text(c)

        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.dsn, connection_class=AsyncConnection[DictRow], min_size=min(2, self.pool_size),
            max_size=self.pool_size, open=False, configure=configure, name=f"netbewust-{self.schema}",
            kwargs={"autocommit": True, "row_factory": dict_row, "options": options,
                    "connect_timeout": CONNECT_TIMEOUT_S})
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except Exception as exc:
            await pool.close()
            raise ConnectionError(f"cannot reach PostgreSQL at {redact(self.dsn)}: {exc}") from exc
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def flush(self) -> None:
        """Nothing to wait for: every write returned after PostgreSQL committed it."""

    @contextlib.asynccontextmanager
    async def _conn(self, write: bool = False) -> AsyncIterator[Conn]:
        """A pooled connection; with ``write``, inside one transaction committed before this returns."""
        with _bad_values_refused():
            async with self._pooled() as conn:
                if write:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn

    def _pooled(self) -> contextlib.AbstractAsyncContextManager[Conn]:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool.connection()

    async def _rows(self, query: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            cur = await conn.execute(query, args)
            return await cur.fetchall()

    async def _write(self, query: str, args: Sequence[Any] = ()) -> int:
        """One statement, committed; the number of rows it touched."""
        async with self._conn() as conn:
            cur = await conn.execute(query, args)
            return cur.rowcount

    # Stations ---------------------------------------------------------------------------------
    @staticmethod
    def _station(r: dict[str, Any]) -> StationRecord:
        return StationRecord(
            station_id=r["station_id"], registration=r["registration"], registered=r["registered"],
            vendor=r["vendor"], model=r["model"], serial_number=r["serial_number"],
            firmware_version=r["firmware_version"], boot_reason=r["boot_reason"], last_boot=r["last_boot"],
            last_seen=r["last_seen"], connected=r["connected"], security_profile=r["security_profile"],
            password_hash=r["password_hash"], extra=r["extra"])

    async def get_station(self, station_id: str) -> StationRecord | None:
        rows = await self._rows("SELECT * FROM stations WHERE station_id = %s", (station_id,))
        return self._station(rows[0]) if rows else None

    async def list_stations(self) -> list[StationRecord]:
        return [self._station(r) for r in await self._rows("SELECT * FROM stations ORDER BY station_id")]

    async def put_station(self, s: StationRecord) -> None:
        await self._write(
            "INSERT INTO stations VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json)"
            " ON CONFLICT (station_id) DO UPDATE SET registration = excluded.registration,"
            " registered = excluded.registered, vendor = excluded.vendor, model = excluded.model,"
            " serial_number = excluded.serial_number, firmware_version = excluded.firmware_version,"
            " boot_reason = excluded.boot_reason, last_boot = excluded.last_boot, last_seen = excluded.last_seen,"
            " connected = excluded.connected, security_profile = excluded.security_profile,"
            " password_hash = excluded.password_hash, extra = excluded.extra",
            (s.station_id, s.registration, s.registered, s.vendor, s.model, s.serial_number, s.firmware_version,
             s.boot_reason, s.last_boot, s.last_seen, s.connected, s.security_profile, s.password_hash,
             _json(s.extra)))

    async def delete_station(self, station_id: str) -> bool:
        async with self._conn(write=True) as conn:
            n = (await conn.execute("DELETE FROM stations WHERE station_id = %s", (station_id,))).rowcount
            await conn.execute("DELETE FROM connectors WHERE station_id = %s", (station_id,))
            return n > 0

    async def record_boot(self, station_id: str, boot: BootInfo, registration: str, at: datetime) -> None:
        await self._write(
            "INSERT INTO stations (station_id, registration, registered, vendor, model, serial_number,"
            " firmware_version, boot_reason, last_boot, last_seen, connected)"
            " VALUES (%s, %s, false, %s, %s, %s, %s, %s, %s, %s, true)"
            " ON CONFLICT (station_id) DO UPDATE SET registration = excluded.registration, vendor = excluded.vendor,"
            " model = excluded.model, serial_number = excluded.serial_number,"
            " firmware_version = excluded.firmware_version, boot_reason = excluded.boot_reason,"
            " last_boot = excluded.last_boot, last_seen = excluded.last_seen, connected = true",
            (station_id, registration, boot.vendor, boot.model, boot.serial_number, boot.firmware_version,
             boot.reason, at, at))

    async def set_connection_state(self, station_id: str, connected: bool, at: datetime) -> None:
        await self._write("UPDATE stations SET connected = %s, last_seen = %s WHERE station_id = %s",
                          (connected, at, station_id))

    async def touch_stations(self, last_seen: dict[str, datetime]) -> None:
        if not last_seen:
            return
        await self._write(
            "UPDATE stations SET last_seen = v.t FROM unnest(%s::text[], %s::timestamptz[]) AS v(id, t)"
            " WHERE stations.station_id = v.id", (list(last_seen), list(last_seen.values())))

    # Connectors -------------------------------------------------------------------------------
    async def set_connector_status(self, station_id: str, evse_id: int, connector_id: int, status: str,
                                   at: datetime) -> None:
        evse, connector = connector_ids(evse_id, connector_id)
        await self._write(
            "INSERT INTO connectors VALUES (%s, %s, %s, %s, %s) ON CONFLICT (station_id, evse_id, connector_id)"
            " DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
            (station_id, evse, connector, status, at))

    async def list_connectors(self, station_id: str) -> list[dict[str, Any]]:
        rows = await self._rows("SELECT evse_id, connector_id, status, updated_at FROM connectors"
                                " WHERE station_id = %s ORDER BY evse_id, connector_id", (station_id,))
        return [{**r, "updated_at": _text(r["updated_at"])} for r in rows]

    # Id tokens --------------------------------------------------------------------------------
    @staticmethod
    def _token(r: dict[str, Any]) -> IdTokenRecord:
        return IdTokenRecord(r["id_token"], r["type"], r["status"], r["expiry"], r["group_id"])

    async def get_id_token(self, id_token: str) -> IdTokenRecord | None:
        rows = await self._rows("SELECT * FROM id_tokens WHERE id_token = %s", (id_token,))
        return self._token(rows[0]) if rows else None

    async def put_id_token(self, t: IdTokenRecord) -> None:
        await self._write(
            "INSERT INTO id_tokens VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id_token) DO UPDATE SET"
            " type = excluded.type, status = excluded.status, expiry = excluded.expiry, group_id = excluded.group_id",
            (t.id_token, t.type, t.status, t.expiry, t.group_id))

    async def list_id_tokens(self) -> list[IdTokenRecord]:
        return [self._token(r) for r in await self._rows("SELECT * FROM id_tokens ORDER BY id_token")]

    async def delete_id_token(self, id_token: str) -> bool:
        return await self._write("DELETE FROM id_tokens WHERE id_token = %s", (id_token,)) > 0

    # Transactions -----------------------------------------------------------------------------
    async def record_transaction_event(self, station_id: str, event: TxEvent, received_at: datetime) -> bool:
        payload = _json(event.payload)  # refused (ValueError) before anything is written
        samples = _sample_rows(station_id, event.samples, received_at)
        key = (station_id, event.transaction_id)
        # Pipelined: BEGIN, the event's insert and the row lock go in one round trip, the merged
        # record, the samples and COMMIT in another.
        with _bad_values_refused():
            async with self._pooled() as conn, conn.pipeline() as pipe, conn.transaction():
                # Inserted first: a concurrent copy of this event waits here for this transaction, then stores nothing.
                inserted = await conn.execute(
                    "INSERT INTO transaction_events VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json, %s)"
                    " ON CONFLICT DO NOTHING",
                    (*key, event.seq_no, event.event_type, event.timestamp, _instant(event.timestamp),
                     event.trigger_reason, event.charging_state, event.offline, payload, received_at))
                locked = await conn.execute(_SELECT_TX_FOR_UPDATE, key)
                await pipe.sync()
                if inserted.rowcount == 0:
                    return False  # a retransmission of an event already stored
                row = await locked.fetchone()
                if row is None:
                    created = await conn.execute(_INSERT_TX, (*key, *_tx_values(merge(None, event))))
                    await pipe.sync()
                    if created.rowcount == 0:  # another event of it inserted the row meanwhile (we waited for it)
                        row = await (await conn.execute(_SELECT_TX_FOR_UPDATE, key)).fetchone()
                        assert row is not None
                if row is not None:
                    await conn.execute(_UPDATE_TX, (*_tx_values(merge(_state(row), event)), *key))
                if samples:
                    await _insert_samples(conn, samples)
                return True

    async def record_meter_values(self, station_id: str, samples: Sequence[Sample], received_at: datetime) -> None:
        rows = _sample_rows(station_id, samples, received_at)
        if rows:
            async with self._conn() as conn:  # one statement: atomic without a transaction around it
                await _insert_samples(conn, rows)

    @staticmethod
    def _tx(r: dict[str, Any]) -> TransactionRecord:
        return transaction_record(r, Registers.from_record(r.get("registers")))  # absent in an old record: none

    async def get_transaction(self, station_id: str, transaction_id: str) -> TransactionRecord | None:
        rows = await self._rows("SELECT * FROM transactions WHERE station_id = %s AND transaction_id = %s",
                                (station_id, transaction_id))
        return self._tx(rows[0]) if rows else None

    async def list_transactions(self, *, station_id: str | None = None, active: bool | None = None,
                                since: datetime | None = None, until: datetime | None = None,
                                limit: int = 1000) -> list[TransactionRecord]:
        check_limit(limit)
        where: list[str] = []
        args: list[Any] = []
        if station_id is not None:
            where.append("station_id = %s")
            args.append(station_id)
        if active is not None:
            where.append("active" if active else "NOT active")
        if since is not None:
            where.append("(ended IS NULL OR ended >= %s)")
            args.append(since)
        if until is not None:
            where.append("started <= %s")
            args.append(until)
        query = "SELECT * FROM transactions" + (" WHERE " + " AND ".join(where) if where else "")
        rows = await self._rows(query + " ORDER BY started DESC, station_id, transaction_id LIMIT %s", (*args, limit))
        return [self._tx(r) for r in rows]

    async def transaction_events(self, station_id: str, transaction_id: str) -> list[dict[str, Any]]:
        rows = await self._rows("SELECT payload, received_at FROM transaction_events WHERE station_id = %s"
                                " AND transaction_id = %s ORDER BY seq_no", (station_id, transaction_id))
        return [{**r["payload"], "receivedAt": _text(r["received_at"])} for r in rows]

    async def meter_samples(self, station_id: str, *, transaction_id: str | None = None,
                            evse_id: int | None = None, since: datetime | None = None,
                            limit: int = 100000) -> list[dict[str, Any]]:
        check_limit(limit)
        where = ["station_id = %s"]
        args: list[Any] = [station_id]
        if transaction_id is not None:
            where.append("transaction_id = %s")
            args.append(transaction_id)
        if evse_id is not None:
            where.append("evse_id = %s")
            args.append(evse_id)
        if since is not None:
            where.append("ts >= %s")
            args.append(since)
        return await self._rows(
            "SELECT timestamp, evse_id, transaction_id, measurand, phase, value, unit, context FROM meter_samples"
            " WHERE " + " AND ".join(where) + " ORDER BY ts, id LIMIT %s", (*args, limit))

    async def meter_bounds(self, transactions: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
        out: dict[tuple[str, str], list[dict[str, Any]]] = {(sid, tx_id): [] for sid, tx_id in transactions}
        if not out:
            return out
        rows = await self._rows(
            "WITH k AS (SELECT DISTINCT sid, tid FROM unnest(%s::text[], %s::text[]) AS k(sid, tid)),"
            " s AS (SELECT m.id, m.station_id, m.timestamp, m.ts, m.evse_id, m.transaction_id, m.measurand, m.phase,"
            " m.value, m.unit, m.context, CASE WHEN m.phase IS NULL AND m.measurand IN (%s, %s) THEN m.ts END AS reg"
            " FROM k JOIN meter_samples m ON m.station_id = k.sid AND m.transaction_id = k.tid"
            " WHERE m.transaction_id IS NOT NULL)"
            " SELECT station_id, timestamp, evse_id, transaction_id, measurand, phase, value, unit, context FROM"
            " (SELECT s.*, max(timestamp COLLATE \"C\") OVER (PARTITION BY station_id, transaction_id) AS last_ts,"
            " min(reg) OVER w AS low, max(reg) OVER w AS high FROM s"
            " WINDOW w AS (PARTITION BY station_id, transaction_id, measurand)) AS x"
            " WHERE timestamp COLLATE \"C\" = last_ts OR reg = low OR reg = high ORDER BY ts, id",
            ([sid for sid, _ in out], [tx_id for _, tx_id in out], *REGISTERS))
        for r in rows:
            out[(r.pop("station_id"), r["transaction_id"])].append(r)
        return out

    # Smart charging ---------------------------------------------------------------------------
    async def record_ev_charging_needs(self, station_id: str, evse_id: int, payload: dict[str, Any],
                                       at: datetime) -> None:
        await self._write("INSERT INTO ev_charging_needs (station_id, evse_id, payload, received_at)"
                          " VALUES (%s, %s, %s::json, %s)", (station_id, evse_id, _json(payload), at))

    async def latest_ev_charging_needs(self, station_id: str, evse_id: int) -> dict[str, Any] | None:
        rows = await self._rows("SELECT payload FROM ev_charging_needs WHERE station_id = %s AND evse_id = %s"
                                " ORDER BY id DESC LIMIT 1", (station_id, evse_id))
        return cast(dict[str, Any], rows[0]["payload"]) if rows else None

    async def latest_ev_charging_needs_many(self, evses: Sequence[tuple[str, int]]
                                            ) -> dict[tuple[str, int], dict[str, Any] | None]:
        out: dict[tuple[str, int], dict[str, Any] | None] = dict.fromkeys(evses)
        if not out:
            return out
        rows = await self._rows(
            "SELECT k.sid, k.eid, n.payload FROM (SELECT DISTINCT sid, eid FROM unnest(%s::text[], %s::bigint[])"
            " AS k(sid, eid)) AS k CROSS JOIN LATERAL (SELECT payload FROM ev_charging_needs"
            " WHERE station_id = k.sid AND evse_id = k.eid ORDER BY id DESC LIMIT 1) AS n",
            ([sid for sid, _ in out], [evse_id for _, evse_id in out]))
        for r in rows:
            out[(r["sid"], r["eid"])] = r["payload"]
        return out

    async def record_charging_profile(self, station_id: str, evse_id: int, profile: dict[str, Any],
                                      status: str, status_info: dict[str, Any] | None, at: datetime) -> None:
        await self._write(
            "INSERT INTO charging_profiles (station_id, evse_id, profile_id, purpose, stack_level, transaction_id,"
            " profile, status, status_info, sent_at) VALUES (%s, %s, %s, %s, %s, %s, %s::json, %s, %s::json, %s)",
            (station_id, evse_id, profile.get("id"), profile.get("chargingProfilePurpose"), profile.get("stackLevel"),
             profile.get("transactionId"), _json(profile), status, _json(status_info) if status_info else None, at))

    async def list_charging_profiles(self, station_id: str, newest: int | None = None) -> list[dict[str, Any]]:
        columns = ("SELECT station_id, evse_id, profile_id, purpose, stack_level, transaction_id, profile, status,"
                   " status_info, sent_at FROM charging_profiles WHERE station_id = %s")
        if newest is None:
            rows = await self._rows(columns + " ORDER BY id", (station_id,))
        else:
            rows = await self._rows(columns + " ORDER BY id DESC LIMIT %s", (station_id, check_limit(newest)))
            rows.reverse()
        return [_profile_row(r) for r in rows]

    async def list_charging_profiles_many(self, station_ids: Sequence[str], newest: int
                                          ) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {sid: [] for sid in station_ids}
        if check_limit(newest) == 0 or not out:
            return out
        rows = await self._rows(
            "SELECT p.station_id, p.evse_id, p.profile_id, p.purpose, p.stack_level, p.transaction_id, p.profile,"
            " p.status, p.status_info, p.sent_at FROM (SELECT DISTINCT sid FROM unnest(%s::text[]) AS k(sid)) AS k"
            " CROSS JOIN LATERAL (SELECT * FROM charging_profiles WHERE station_id = k.sid ORDER BY id DESC LIMIT %s)"
            " AS p ORDER BY p.id", (list(out), newest))
        for r in rows:
            out[r["station_id"]].append(_profile_row(r))
        return out

    # Device model, events, commands -----------------------------------------------------------
    async def record_variables(self, station_id: str, variables: list[dict[str, Any]], at: datetime) -> None:
        rows = []
        for v in variables:
            comp, var = v.get("component", {}), v.get("variable", {})
            evse = comp.get("evse") or {}
            identity = (comp.get("name"), comp.get("instance", ""), evse.get("id", -1), evse.get("connectorId", -1),
                        var.get("name"), var.get("instance", ""), v.get("attributeType", "Actual"))
            value = None if v.get("value") is None else str(v["value"])
            rows.append((station_id, _json(identity), *identity, value, at))
        if not rows:
            return
        async with self._conn(write=True) as conn:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO variables VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (station_id, identity) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at", rows)

    async def list_variables(self, station_id: str) -> list[dict[str, Any]]:
        rows = await self._rows(
            "SELECT component, component_instance, evse_id, connector_id, variable, variable_instance,"
            " attribute_type, value, updated_at FROM variables WHERE station_id = %s ORDER BY component NULLS FIRST,"
            " variable NULLS FIRST, component_instance NULLS FIRST, evse_id NULLS FIRST, connector_id NULLS FIRST,"
            " variable_instance NULLS FIRST, attribute_type NULLS FIRST", (station_id,))
        return [{**r, "updated_at": _text(r["updated_at"])} for r in rows]

    async def record_security_event(self, station_id: str, type_: str, timestamp: str, tech_info: str | None,
                                    at: datetime) -> None:
        await self._write("INSERT INTO security_events (station_id, type, timestamp, tech_info, received_at)"
                          " VALUES (%s, %s, %s, %s, %s)", (station_id, type_, timestamp, tech_info, at))

    async def list_security_events(self, station_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        check_limit(limit)
        columns = "SELECT station_id, type, timestamp, tech_info, received_at FROM security_events"
        if station_id is None:
            rows = await self._rows(columns + " ORDER BY id DESC LIMIT %s", (limit,))
        else:
            rows = await self._rows(columns + " WHERE station_id = %s ORDER BY id DESC LIMIT %s", (station_id, limit))
        return [{**r, "received_at": _text(r["received_at"])} for r in rows]

    async def record_station_message(self, station_id: str, action: str, payload: dict[str, Any],
                                     at: datetime) -> None:
        await self._write("INSERT INTO station_messages (station_id, action, payload, received_at)"
                          " VALUES (%s, %s, %s::json, %s)", (station_id, action, _json(payload), at))

    async def list_station_messages(self, station_id: str, action: str | None = None,
                                    limit: int = 1000) -> list[dict[str, Any]]:
        check_limit(limit)
        query = "SELECT station_id, action, payload, received_at FROM station_messages WHERE station_id = %s"
        args: list[Any] = [station_id]
        if action is not None:
            query += " AND action = %s"
            args.append(action)
        rows = await self._rows(query + " ORDER BY id DESC LIMIT %s", (*args, limit))
        return [{**r, "received_at": _text(r["received_at"])} for r in rows]

    async def record_command(self, station_id: str, action: str, request: dict[str, Any], outcome: CommandOutcome,
                             response: dict[str, Any] | None, sent_at: datetime, finished_at: datetime) -> None:
        await self._write(
            "INSERT INTO commands (station_id, action, request, outcome, response, sent_at, finished_at)"
            " VALUES (%s, %s, %s::json, %s, %s::json, %s, %s)",
            (station_id, action, _json(request), outcome, None if response is None else _json(response), sent_at,
             finished_at))

    async def list_commands(self, station_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        check_limit(limit)
        columns = "SELECT station_id, action, request, outcome, response, sent_at, finished_at FROM commands"
        if station_id is None:
            rows = await self._rows(columns + " ORDER BY id DESC LIMIT %s", (limit,))
        else:
            rows = await self._rows(columns + " WHERE station_id = %s ORDER BY id DESC LIMIT %s", (station_id, limit))
        return [{**r, "sent_at": _text(r["sent_at"]), "finished_at": _text(r["finished_at"])} for r in rows]

    # Documents and counters -------------------------------------------------------------------
    async def get_document(self, scope: str, key: str) -> dict[str, Any] | None:
        rows = await self._rows("SELECT document FROM documents WHERE scope = %s AND key = %s", (scope, key))
        return dict(rows[0]["document"]) if rows else None

    async def put_document(self, scope: str, key: str, document: dict[str, Any]) -> None:
        await self._write("INSERT INTO documents (scope, key, document) VALUES (%s, %s, %s::json)"
                          " ON CONFLICT (scope, key) DO UPDATE SET document = excluded.document, updated_at = now()",
                          (scope, key, _json(document)))

    async def delete_document(self, scope: str, key: str) -> bool:
        return await self._write("DELETE FROM documents WHERE scope = %s AND key = %s", (scope, key)) > 0

    async def list_documents(self, scope: str, limit: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        check_limit(limit)
        rows = await self._rows("SELECT key, document FROM documents WHERE scope = %s ORDER BY key LIMIT %s",
                                (scope, limit))
        return [(r["key"], dict(r["document"])) for r in rows]

    async def next_number(self, name: str) -> int:
        rows = await self._rows("INSERT INTO counters VALUES (%s, 1) ON CONFLICT (name) DO UPDATE"
                                " SET value = counters.value + 1 RETURNING value", (name,))
        return int(rows[0]["value"])


# Text with NUL characters ------------------------------------------------------------------------------
#: PostgreSQL text cannot hold NUL, which a station may send in any free-text field (SQLite and Redis
#: keep it). Every text value goes through one reversible map: NUL becomes DLE "0" and DLE itself
#: DLE DLE. Text without either character (all real text) is stored unchanged, an id looked up is
#: mapped the same way, and every text read is mapped back.
_DLE = "\x10"


def _escape(text: str) -> str:
    if "\x00" not in text and _DLE not in text:
        return text
    return text.replace(_DLE, _DLE + _DLE).replace("\x00", _DLE + "0")


def _unescape(text: str) -> str:
    if _DLE not in text:
        return text
    return re.sub(_DLE + "(.)", lambda m: "\x00" if m.group(1) == "0" else m.group(1), text, flags=re.DOTALL)


class _TextDumper(StrDumperUnknown):
    def dump(self, obj: str) -> Buffer | None:
        return super().dump(_escape(obj))


class _TextBinaryDumper(StrBinaryDumper):
    def dump(self, obj: str) -> Buffer | None:
        return super().dump(_escape(obj))


class _TextLoader(TextLoader):
    def load(self, data: Buffer) -> bytes | str:
        value = super().load(data)
        return _unescape(value) if isinstance(value, str) else value


class _TextBinaryLoader(TextBinaryLoader):
    def load(self, data: Buffer) -> bytes | str:
        value = super().load(data)
        return _unescape(value) if isinstance(value, str) else value


def _nul_safe_text(conn: Conn) -> None:
    conn.adapters.register_dumper(str, _TextDumper)
    conn.adapters.register_dumper(str, _TextBinaryDumper)
    conn.adapters.register_loader("text", _TextLoader)
    conn.adapters.register_loader("text", _TextBinaryLoader)


# The TransactionEvent's fold -------------------------------------------------------------------------
_SELECT_TX_FOR_UPDATE = ("SELECT " + ", ".join(_TX_COLUMNS) + " FROM transactions"
                         " WHERE station_id = %s AND transaction_id = %s FOR UPDATE")
_INSERT_TX = ("INSERT INTO transactions (station_id, transaction_id, " + ", ".join(_TX_COLUMNS) + ") VALUES ("
              + ", ".join(["%s"] * (len(_TX_COLUMNS) + 2)) + ") ON CONFLICT DO NOTHING")
_UPDATE_TX = ("UPDATE transactions SET " + ", ".join(f"{c} = %s" for c in _TX_COLUMNS)
              + " WHERE station_id = %s AND transaction_id = %s")


@contextlib.contextmanager
def _bad_values_refused() -> Iterator[None]:
    """A value PostgreSQL cannot hold (text with a NUL character, an integer beyond its column) is the
    caller's bad input: ValueError, and nothing of the write is stored (its transaction rolls back)."""
    try:
        yield
    except psycopg.DataError as exc:
        raise ValueError(f"cannot be stored in PostgreSQL: {exc}") from None


def _state(row: dict[str, Any]) -> TxState:
    """The stored record as the merge rule reads it."""
    return TxState(started_at=row["started_at"], started_epoch=row["started"].timestamp(),
                   last_seq_no=row["last_seq_no"], active=row["active"], first_seen_as=row["first_seen_as"],
                   evse_id=row["evse_id"], connector_id=row["connector_id"], id_token=row["id_token"],
                   ended_at=row["ended_at"], charging_state=row["charging_state"],
                   stopped_reason=row["stopped_reason"], energy_wh=row["energy_wh"],
                   started_seq_no=row["started_seq_no"], started_by=row["started_by"],
                   registers=Registers.from_record(row.get("registers")))


def _tx_values(tx: TxState) -> tuple[Any, ...]:
    """The row's values in the order of ``_TX_COLUMNS``."""
    return (tx.evse_id, tx.connector_id, tx.id_token, tx.started_at, parse(tx.started_at), tx.ended_at,
            _instant(tx.ended_at),
            tx.active, tx.charging_state, tx.stopped_reason, tx.last_seq_no, tx.energy_wh, tx.first_seen_as,
            tx.started_seq_no, tx.started_by, Json(tx.registers.record()))


# Meter samples ----------------------------------------------------------------------------------------
SampleRow = tuple[Any, ...]


def _sample_rows(station_id: str, samples: Sequence[Sample], received_at: datetime) -> list[SampleRow]:
    return [(station_id, s.evse_id, s.transaction_id, s.timestamp, _instant(s.timestamp), s.measurand, s.phase,
             s.value, s.unit, s.context, s.location, received_at) for s in samples]


async def _insert_samples(conn: Conn, rows: list[SampleRow]) -> None:
    """One statement for all samples (unnest keeps their order, and so their ids)."""
    columns = list(zip(*rows))
    await conn.execute(
        "INSERT INTO meter_samples (station_id, evse_id, transaction_id, timestamp, ts, measurand, phase, value,"
        " unit, context, location, received_at) SELECT a, b, c, d, e, f, g, h, i, j, k, l"
        " FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::text[],"
        " %s::float8[], %s::text[], %s::text[], %s::text[],"
        " %s::timestamptz[]) WITH ORDINALITY AS s(a, b, c, d, e, f, g, h, i, j, k, l, n) ORDER BY n",
        [list(c) for c in columns])
