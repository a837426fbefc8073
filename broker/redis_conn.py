"""Redis clients for the request path: short socket timeouts, no sleeping retries.

Every caller (L2, rate limits, budgets, run-time keys) bounds its own call and falls back when
Redis is away, so redis-py's default retry (ten attempts with growing sleeps) would only spend
the caller's time budget. One immediate retry is kept: it heals a pooled connection that went
stale when the server restarted.
"""

from __future__ import annotations

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["request_path_client"]

SOCKET_TIMEOUT_S = 0.5


def request_path_client(url: str, max_connections: int | None = None) -> redis.Redis:
    """A pooled client for ``url`` that connects lazily and never stalls a request."""
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        max_connections=max_connections,
        retry=Retry(NoBackoff(), 1),
    )
