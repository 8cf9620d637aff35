"""PostgreSQL for the tests: one database (created if missing), one schema per test, dropped after.

The server is the one on 127.0.0.1:5432 (trust auth; .ci/run starts it and creates the database).
``NETBEWUST_TEST_PG_DSN`` names another. When it cannot be reached the test fails with a message
saying so: a missing PostgreSQL never turns into a skipped (and so silently untested) backend.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import NoReturn

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PG_DSN = os.environ.get("NETBEWUST_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/netbewust_test")


def _admin_dsn(dsn: str) -> str:
    """The same server, its ``postgres`` maintenance database (to create the test database)."""
    return make_conninfo(dsn, dbname="postgres")


async def ensure_database(dsn: str = PG_DSN) -> None:
    """Create the test database if it is missing; fail the test plainly if PostgreSQL is not there."""
    try:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as first:
        if "does not exist" not in str(first):
            _unreachable(dsn, first)
    else:
        await conn.close()
        return
    name = conninfo_to_dict(dsn).get("dbname")
    try:
        conn = await psycopg.AsyncConnection.connect(_admin_dsn(dsn), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        _unreachable(dsn, exc)
    try:
        with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
    finally:
        await conn.close()


def _unreachable(dsn: str, exc: Exception) -> NoReturn:
    pytest.fail(f"PostgreSQL is needed by the postgres store tests and cannot be reached at {dsn}: {exc}\n"
                "Start it and create the database (bash .ci/run does both) or set NETBEWUST_TEST_PG_DSN.",
                pytrace=False)


async def drop_schema(schema: str, dsn: str = PG_DSN) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def schema_exists(schema: str, dsn: str = PG_DSN) -> bool:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = await (await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))).fetchone()
        return row is not None


@contextlib.asynccontextmanager
async def pg_schema() -> AsyncIterator[str]:
    """A fresh schema name for one test (the store creates it at open); dropped afterwards."""
    await ensure_database()
    schema = f"nbtest_{uuid.uuid4().hex}"
    try:
        yield schema
    finally:
        await drop_schema(schema)
