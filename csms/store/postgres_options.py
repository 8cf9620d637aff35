"""The PostgreSQL store's options, checked without connecting: the config checks them at load time
(errors name ``store.postgres_dsn`` / ``store.postgres_schema``) and the store again when built."""

from __future__ import annotations

import re

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: A schema name used as it is (unquoted) in ``search_path``: lower case, digits, underscore.
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def dsn_problem(dsn: object) -> str | None:
    """Why ``dsn`` is not a libpq connection string or URI, or None."""
    if not isinstance(dsn, str) or not dsn.strip():
        return f"must be a libpq connection string or postgresql:// URI, got {dsn!r}"
    if "://" in dsn and not dsn.startswith(("postgresql://", "postgres://")):
        return f"a URI must start with postgresql:// or postgres://, got {dsn.split('://', 1)[0]}://..."
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        return f"not a libpq connection string: {exc}"
    return None


def schema_problem(schema: object) -> str | None:
    """Why ``schema`` cannot name this system's schema, or None."""
    if not isinstance(schema, str) or not _SCHEMA.fullmatch(schema) or schema.startswith("pg_"):
        return (f"must be 1-63 characters of a-z, 0-9 and _, not starting with a digit or pg_, got {schema!r}")
    return None


def redact(dsn: str) -> str:
    """The connection string without its password, for error messages and logs."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable dsn>"
    if "password" in parts:
        parts["password"] = "***"
    return make_conninfo(**{k: str(v) for k, v in parts.items() if v is not None})
