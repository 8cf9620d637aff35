"""The Redis the tests use, and removing a test's keys (each test has its own key prefix)."""

from __future__ import annotations

import redis.asyncio as aioredis

REDIS_URL = "redis://127.0.0.1:6379/0"


async def delete_prefix(prefix: str) -> int:
    """Delete every key starting with ``prefix``; returns how many there were."""
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()
