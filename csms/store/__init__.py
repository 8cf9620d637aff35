"""Durable records behind one interface (:class:`csms.store.base.Store`)."""

from csms.store.base import Store

__all__ = ["Store", "open_store"]


def open_store(config: "object") -> Store:
    """The store the config asks for (not yet opened)."""
    from csms.config import StoreConfig

    assert isinstance(config, StoreConfig)
    if config.backend == "redis":
        from csms.store.redis_store import RedisStore

        return RedisStore(config.redis_url, prefix=config.redis_prefix, wait_replicas=config.redis_wait_replicas)
    from csms.store.sqlite import SqliteStore

    return SqliteStore(config.sqlite_path)
