"""Calls to an outside store that can never stall a request: bounded, skipped after a failure,
healed after a while.

Redis (rate limits, spend, the L2 cache) and the NATS KV L2 sit beside the request path: when
one hangs or fails, requests go on without it. A :class:`Guard` bounds every call with a
timeout; a failure opens a skip window of ``retry_interval_s`` in which calls fail at once
(:class:`Unavailable`, no round trip); the first call after the window tries the store again,
so service comes back by itself when the store does.

One guard per connection: the rate limiter and the spend ledger share the request path's Redis
guard, so a hung Redis costs a limited request one timeout, and the requests after it none
while the window lasts (with a timeout block per call, each limited request waited up to
2 x 50 ms: the budget check, then the rate-limit script).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["DEFAULT_RETRY_INTERVAL_S", "DEFAULT_TIMEOUT_S", "Guard", "Unavailable"]

log = logging.getLogger("llm_edge.broker")

T = TypeVar("T")

#: Bound on one call (a Redis round trip on a LAN is well under a millisecond).
DEFAULT_TIMEOUT_S = 0.05
#: How long a failed store is skipped before the next call tries it again.
DEFAULT_RETRY_INTERVAL_S = 1.0


class Unavailable(Exception):
    """The store failed, timed out, or is being skipped after a recent failure.

    Attributes:
        store: the guard's name.
    """

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"{store} is unavailable: {reason}")
        self.store = store


class Guard:
    """Time-bounded, self-healing access to one outside store.

    Args:
        name: the store, for logs (``redis``, ``L2 nats-kv`` ...).
        timeout_s: default bound on a call.
        retry_interval_s: how long to skip the store after a failure.
        clock: monotonic seconds.
        on_failure: called once per failed call (a metric).
    """

    def __init__(
        self,
        name: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry_interval_s: float = DEFAULT_RETRY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self._retry_interval = retry_interval_s
        self._clock = clock
        self._on_failure = on_failure
        self._down_until = 0.0
        #: Calls let through to the store (skipped ones are not counted).
        self.attempts = 0

    @property
    def available(self) -> bool:
        """False while the store is being skipped after a failure."""
        return self._clock() >= self._down_until

    async def call(self, op: Callable[[], Awaitable[T]], *, timeout_s: float | None = None) -> T:
        """``await op()`` within the timeout.

        Raises:
            Unavailable: skipped (a recent failure), or it failed or timed out now (which
                opens the skip window).
        """
        if not self.available:
            raise Unavailable(self.name, "skipped after a recent failure")
        self.attempts += 1
        try:
            async with asyncio.timeout(self.timeout_s if timeout_s is None else timeout_s):
                return await op()
        except Exception as exc:
            self._failed(exc)
            raise Unavailable(self.name, type(exc).__name__) from exc

    def _failed(self, exc: BaseException) -> None:
        if self.available:
            log.warning(
                "%s failed (%s); skipping it for %.1fs",
                self.name,
                type(exc).__name__,
                self._retry_interval,
            )
        self._down_until = self._clock() + self._retry_interval
        if self._on_failure is not None:
            self._on_failure()
