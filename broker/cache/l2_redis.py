"""L2 on Redis via ``redis.asyncio`` (pooled; ``SET ... EX``)."""

from __future__ import annotations

import math

import redis.asyncio as redis

from broker.cache.l2 import L2Size
from broker.redis_conn import request_path_client

__all__ = ["RedisL2"]

KEY_PREFIX = "llm-edge:cache:"
SCAN_BATCH = 1000


class RedisL2:
    """Redis-backed L2.

    Args:
        client: a ``redis.asyncio.Redis``; built by :meth:`from_url` in services.
    """

    name = "redis"
    queued_writes = False

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    @classmethod
    def from_url(cls, url: str) -> RedisL2:
        """Connect lazily to ``url`` with short socket timeouts (L2 must never stall)."""
        return cls(request_path_client(url, max_connections=256))

    def known_absent(self, key: str) -> bool:
        """Redis is always asked."""
        return False

    async def get(self, key: str) -> bytes | None:
        """GET."""
        value = await self._client.get(KEY_PREFIX + key)
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """SET with EX (whole seconds, rounded up)."""
        await self._client.set(KEY_PREFIX + key, value, ex=max(1, math.ceil(ttl_s)))

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        """One MGET."""
        values = await self._client.mget([KEY_PREFIX + key for key in keys])
        return [v.encode() if isinstance(v, str) else v for v in values]

    async def set_many(self, items: list[tuple[str, bytes]], ttl_s: float) -> None:
        """One pipeline of SET with EX (one connection, one round trip)."""
        ttl = max(1, math.ceil(ttl_s))
        pipe = self._client.pipeline(transaction=False)
        for key, value in items:
            pipe.set(KEY_PREFIX + key, value, ex=ttl)
        await pipe.execute()

    async def purge(self, prefix: str) -> int:
        """SCAN and UNLINK the matching keys."""
        removed = 0
        batch: list[bytes] = []
        async for key in self._client.scan_iter(match=f"{KEY_PREFIX}{prefix}*", count=SCAN_BATCH):
            batch.append(key)
            if len(batch) >= SCAN_BATCH:
                removed += await self._client.unlink(*batch)
                batch.clear()
        if batch:
            removed += await self._client.unlink(*batch)
        return removed

    async def size(self) -> L2Size:
        """``DBSIZE`` and ``INFO memory``'s ``used_memory``: both O(1) on the server, both of
        the whole database (counting only the cache's keys would mean a SCAN of them all)."""
        entries = await self._client.dbsize()
        memory = await self._client.info("memory")
        return L2Size(self.name, int(entries), int(memory.get("used_memory", 0)), "database")

    async def aclose(self) -> None:
        """Close the pool."""
        await self._client.aclose()
