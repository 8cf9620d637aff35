"""The one place that builds the daemon's Redis clients: no command is ever re-sent by redis-py.

redis-py retries a command (or a whole pipeline) on ConnectionError/TimeoutError when its
connection carries a Retry: ``Redis(host=...)`` gets three by default, and a ``retry_on_timeout``
in the URL gives a pool's connections one. A reply lost after Redis applied the write (a broken
connection, a socket timeout on a big batch) would then apply it twice: a meter sample, a cluster
event or an inbox message stored twice. Our writes are not idempotent by construction (only a
TransactionEvent dedupes by seqNo), so every client here gets no retry whatever its URL says: the
caller gets the error, the station gets no acknowledgement and re-sends, and OCPP handles that
duplicate (see docs/storage.md). Reads fail fast too; their callers already handle a failed read.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
import redis.asyncio.retry
import redis.retry
from redis.backoff import NoBackoff

from csms.store.redis_packing import fast_packing


def async_client(url: str, *, wait_s: float | None = None, max_connections: int = 50) -> aioredis.Redis:
    """A client over its own pool (``aclose()`` closes it), replies decoded, commands packed in C.

    With ``wait_s`` the pool blocks: under a burst, callers queue up to ``wait_s`` for one of
    ``max_connections`` connections instead of failing with "Too many connections"."""
    if wait_s is None:
        pool: aioredis.ConnectionPool = aioredis.ConnectionPool.from_url(url, decode_responses=True)
    else:
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections,
                                                        timeout=wait_s, decode_responses=True)
    pool.connection_kwargs["retry"] = redis.asyncio.retry.Retry(NoBackoff(), 0)  # after the URL's options
    return aioredis.Redis.from_pool(fast_packing(pool))


def sync_client(url: str, timeout: float) -> redis.Redis:
    """A synchronous client (a thread of its own) with ``timeout`` on connecting and on every reply."""
    pool = redis.ConnectionPool.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    pool.connection_kwargs["retry"] = redis.retry.Retry(NoBackoff(), 0)
    return redis.Redis.from_pool(pool)
