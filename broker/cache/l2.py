"""L2: the cache shared by every broker process (Redis, or a NATS KV bucket when embedded).

:class:`GuardedL2` wraps a backend so that L2 can never fail or stall a request: each call has
a short timeout; after a failure the backend is skipped for ``retry_interval_s`` and then tried
again by the next call, so L2 comes back by itself when the server does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from broker import metrics

__all__ = ["DEFAULT_L2_TIMEOUT_S", "DEFAULT_L2_TTL_S", "GuardedL2", "L2Backend"]

log = logging.getLogger("llm_edge.cache")

DEFAULT_L2_TTL_S = 3600.0
DEFAULT_L2_TIMEOUT_S = 0.05
DEFAULT_L2_RETRY_INTERVAL_S = 1.0


class L2Backend(Protocol):
    """A shared key-value store with per-entry TTL.

    Keys look like ``<tenant>:<namespace>:<sha256 hex>``.
    """

    name: str

    async def get(self, key: str) -> bytes | None:
        """The value, or ``None`` when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store with a time to live."""
        ...

    async def purge(self, prefix: str) -> int:
        """Remove the keys starting with ``prefix`` (all when empty); return how many, or -1."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class GuardedL2:
    """Time-bounded, self-healing access to an :class:`L2Backend`.

    Args:
        backend: the store.
        timeout_s: bound on every read and write.
        retry_interval_s: how long to skip the backend after a failure.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        backend: L2Backend,
        *,
        timeout_s: float = DEFAULT_L2_TIMEOUT_S,
        retry_interval_s: float = DEFAULT_L2_RETRY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self._timeout = timeout_s
        self._retry_interval = retry_interval_s
        self._clock = clock
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        """False while the backend is being skipped after a failure."""
        return self._clock() >= self._down_until

    def _failed(self, op: str, exc: BaseException) -> None:
        if self.available:
            log.warning(
                "L2 %s %s failed (%s); skipping L2 for %.1fs",
                self.backend.name,
                op,
                type(exc).__name__,
                self._retry_interval,
            )
        self._down_until = self._clock() + self._retry_interval
        metrics.CACHE_L2_ERRORS.inc()

    async def get(self, key: str) -> bytes | None:
        """The value, or ``None`` on miss, timeout or outage."""
        if not self.available:
            return None
        try:
            async with asyncio.timeout(self._timeout):
                return await self.backend.get(key)
        except Exception as exc:
            self._failed("get", exc)
            return None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store, or give up quietly on timeout or outage."""
        if not self.available:
            return
        try:
            async with asyncio.timeout(self._timeout * 4):
                await self.backend.set(key, value, ttl_s)
        except Exception as exc:
            self._failed("set", exc)

    async def purge(self, prefix: str) -> int:
        """Purge regardless of the outage window (an operator asked); errors propagate."""
        return await self.backend.purge(prefix)
