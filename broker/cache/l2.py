"""L2: the cache shared by every broker process (Redis, or a NATS KV bucket when embedded).

:class:`GuardedL2` wraps a backend so that L2 can never fail or stall a request: each call has
a short timeout; after a failure the backend is skipped for ``retry_interval_s`` and then tried
again by the next call, so L2 comes back by itself when the server does (the one
:class:`~broker.guard.Guard` that rate limits and budgets use too).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from broker import metrics
from broker.cache.settings import DEFAULT_L2_TIMEOUT_S
from broker.guard import DEFAULT_RETRY_INTERVAL_S, Guard, Unavailable

__all__ = ["DEFAULT_L2_RETRY_INTERVAL_S", "GuardedL2", "L2Backend", "L2Size"]

DEFAULT_L2_RETRY_INTERVAL_S = DEFAULT_RETRY_INTERVAL_S
#: Bound on the console's size query (outside the guard: a slow answer skips no request).
SIZE_TIMEOUT_S = 1.0
#: Keys of a :meth:`GuardedL2.get_many` read within one ``timeout_s``; a larger read gets
#: a share more per this many (an embeddings request of 2,048 inputs reads 2,048 entries).
KEYS_PER_TIMEOUT = 100


@dataclass(frozen=True, slots=True)
class L2Size:
    """The shared cache's size: ``scope`` says what was counted (``cache``: its entries
    only; ``database``: the whole Redis database the cache lives in, other keys included)."""

    backend: str
    entries: int
    bytes: int
    scope: str


class L2Backend(Protocol):
    """A shared key-value store with per-entry TTL.

    Keys look like ``<tenant>:<namespace>:<digest hex>``.
    """

    name: str
    #: Whether ``set`` only queues the write (it cannot stall: no timeout is needed).
    queued_writes: bool

    def known_absent(self, key: str) -> bool:
        """Whether the store certainly does not hold ``key`` (known without asking it)."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The value, or ``None`` when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store with a time to live."""
        ...

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        """The values of ``keys``, in order (``None`` for each one absent)."""
        ...

    async def set_many(self, items: list[tuple[str, bytes]], ttl_s: float) -> None:
        """Store many values with one time to live."""
        ...

    async def purge(self, prefix: str) -> int:
        """Remove the keys starting with ``prefix`` (all when empty); return how many, or -1."""
        ...

    async def size(self) -> L2Size:
        """How many entries the store holds and how many bytes they take (one cheap call to
        the server: the console asks, never a request)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class GuardedL2:
    """Time-bounded, self-healing access to an :class:`L2Backend` (through a
    :class:`~broker.guard.Guard`).

    Args:
        backend: the store.
        timeout_s: bound on every read (writes get four times as long).
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
        self.guard = Guard(
            f"L2 {backend.name}",
            timeout_s=timeout_s,
            retry_interval_s=retry_interval_s,
            clock=clock,
            on_failure=metrics.CACHE_L2_ERRORS.inc,
        )

    @property
    def available(self) -> bool:
        """False while the backend is being skipped after a failure."""
        return self.guard.available

    async def get(self, key: str) -> bytes | None:
        """The value, or ``None`` on miss, timeout or outage."""
        if self.backend.known_absent(key):
            return None
        try:
            return await self.guard.call(lambda: self.backend.get(key))
        except Unavailable:
            return None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store, or give up quietly on timeout or outage."""
        if self.backend.queued_writes:
            await self.backend.set(key, value, ttl_s)
            return
        with contextlib.suppress(Unavailable):
            await self.guard.call(
                lambda: self.backend.set(key, value, ttl_s), timeout_s=self.guard.timeout_s * 4
            )

    def _many_timeout(self, keys: int) -> float:
        return self.guard.timeout_s * (1 + keys / KEYS_PER_TIMEOUT)

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        """The values of ``keys`` in order, ``None`` for each miss; all ``None`` on timeout or
        outage (one bounded call for them all, a little longer for many)."""
        values: list[bytes | None] = [None] * len(keys)
        asked = [i for i, key in enumerate(keys) if not self.backend.known_absent(key)]
        if not asked:
            return values
        wanted = [keys[i] for i in asked]
        try:
            found = await self.guard.call(
                lambda: self.backend.get_many(wanted), timeout_s=self._many_timeout(len(wanted))
            )
        except Unavailable:
            return values
        for i, value in zip(asked, found, strict=True):
            values[i] = value
        return values

    async def set_many(self, items: list[tuple[str, bytes]], ttl_s: float) -> None:
        """Store many values, or give up quietly on timeout or outage."""
        if self.backend.queued_writes:
            await self.backend.set_many(items, ttl_s)
            return
        with contextlib.suppress(Unavailable):
            await self.guard.call(
                lambda: self.backend.set_many(items, ttl_s),
                timeout_s=self._many_timeout(len(items)) * 4,
            )

    async def purge(self, prefix: str) -> int:
        """Purge regardless of the outage window (an operator asked); errors propagate."""
        return await self.backend.purge(prefix)

    async def size(self) -> L2Size | None:
        """The backend's size, or ``None`` when it does not answer within a second."""
        try:
            return await asyncio.wait_for(self.backend.size(), SIZE_TIMEOUT_S)
        except Exception:  # down or slow: the console shows the size as unknown
            return None
