"""The store backend the config asks for."""

from __future__ import annotations

from csms.config import StoreConfig
from csms.store.base import Store
from csms.store.postgres import PostgresStore
from csms.store.redis_store import RedisStore
from csms.store.sqlite import SqliteStore


def open_store(config: StoreConfig) -> Store:
    """The store the config asks for (not yet opened)."""
    if config.backend == "redis":
        return RedisStore(config.redis_url, prefix=config.redis_prefix, wait_replicas=config.redis_wait_replicas)
    if config.backend == "postgres":
        return PostgresStore(config.postgres_dsn, config.postgres_schema, pool_size=config.postgres_pool_size)
    return SqliteStore(config.sqlite_path)
