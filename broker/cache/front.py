"""The cache in front of the upstream: L1, coalescing, L2, then the caller's ``fetch``.

The pipeline hands the front a prepared request and a ``fetch`` callable; the front decides
whether the answer comes from a tier, from an identical request already in flight, or from
``fetch``, and what of it to keep. Errors and ``no-store`` answers are never kept. L1 is
written before the reply leaves (an identical request must not miss again); L2 is written
after it, by :meth:`ReadThrough.write_back`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from broker import metrics
from broker.cache.response import CachedReply, ResponseCache
from broker.errors import BrokerError
from broker.request import Prepared, Reply, error_reply, hit_reply
from edge_runtime.tracing import span
from schemas import headers

__all__ = ["Outcome", "ReadThrough"]

Fetch = Callable[[], Awaitable[Reply]]
_INTERNAL = BrokerError("internal broker error")


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where a whole answer came from.

    Attributes:
        cache: the ``X-Cache`` value (``MISS``, ``BYPASS``, ``HIT-L2``).
        fresh: this request called the upstream itself (not a hit, not a coalesced copy):
            it is the one to charge, time and write back.
    """

    reply: Reply
    cache: str
    fresh: bool


class ReadThrough:
    """Read-through, write-back access to the response cache.

    Args:
        cache: the tiers, or ``None`` when caching is off (every request is fetched).
    """

    def __init__(self, cache: ResponseCache | None) -> None:
        self._cache = cache
        self._pending: dict[str, asyncio.Future[Outcome]] = {}

    def l1(self, prepared: Prepared) -> CachedReply | None:
        """The L1 entry that may serve the request (the hot path: no await)."""
        if self._cache is None or prepared.key is None or prepared.directives.no_cache:
            return None
        return self._cache.get_l1(prepared.key)

    async def l2(self, prepared: Prepared) -> CachedReply | None:
        """The L2 entry that may serve the request (streams read it before opening one)."""
        if self._cache is None or prepared.key is None or prepared.directives.no_cache:
            return None
        return await self._cache.get_l2(prepared.key)

    async def resolve(self, prepared: Prepared, fetch: Fetch) -> Outcome:
        """A whole answer: coalesced with an identical request in flight, else L2, else fetched."""
        key = prepared.key
        if key is None or self._cache is None:
            return Outcome(await fetch(), "BYPASS", fresh=True)
        if prepared.directives.no_cache:
            reply = await fetch()
            self.keep(prepared, reply)
            return Outcome(reply, "MISS", fresh=True)
        leader = self._pending.get(key)
        if leader is not None:
            metrics.CACHE_COALESCED.inc()
            shared = await asyncio.shield(leader)
            copy = Reply(
                shared.reply.status,
                shared.reply.body,
                {**shared.reply.headers, headers.COALESCED: "1"},
            )
            return Outcome(copy, shared.cache, fresh=False)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        outcome = Outcome(error_reply(_INTERNAL), "MISS", fresh=False)
        try:
            outcome = await self._lead(prepared, key, fetch)
        finally:
            del self._pending[key]
            future.set_result(outcome)  # followers get the leader's answer, whatever it was
        return outcome

    async def _lead(self, prepared: Prepared, key: str, fetch: Fetch) -> Outcome:
        assert self._cache is not None
        with span("cache.l2"):
            hit = await self._cache.get_l2(key)
        if hit is not None:
            return Outcome(hit_reply(hit), "HIT-L2", fresh=False)
        reply = await fetch()
        self.keep(prepared, reply)  # into L1 before an identical request can miss again
        return Outcome(reply, "MISS", fresh=True)

    def keep(self, prepared: Prepared, reply: Reply) -> CachedReply | None:
        """Write an answer to L1 if it may be kept; returns the entry for :meth:`write_back`."""
        entry = self._entry(prepared, reply)
        if entry is not None and self._cache is not None and prepared.key is not None:
            self._cache.store_l1(prepared.key, entry, prepared.directives.max_age)
        return entry

    async def write_back(self, prepared: Prepared, reply: Reply) -> None:
        """Write an answer to L2 if it may be kept (after the caller has it)."""
        entry = self._entry(prepared, reply)
        if entry is not None and self._cache is not None and prepared.key is not None:
            await self._cache.store_l2(prepared.key, entry, prepared.directives.max_age)

    def _entry(self, prepared: Prepared, reply: Reply) -> CachedReply | None:
        if (
            self._cache is None
            or reply.status != 200
            or prepared.key is None
            or prepared.directives.no_store
        ):
            return None
        return CachedReply(
            body=reply.body,
            provider=reply.headers.get(headers.PROVIDER, ""),
            deployment=reply.headers.get(headers.DEPLOYMENT, ""),
        )
