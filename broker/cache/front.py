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
from broker.cache.response import CachedReply, ResponseCache, hit_reply
from broker.errors import DeadlineExceeded
from broker.request import Prepared, Reply, error_reply
from edge_runtime.tracing import span
from schemas import headers

__all__ = ["Outcome", "ReadThrough", "Stored"]

Fetch = Callable[[], Awaitable[Reply]]
#: How many leaders in a row a request follows before it runs on its own.
FOLLOW_ROUNDS = 2


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored answer a stream is served from, its ``X-Cache`` value and extra headers."""

    entry: CachedReply
    cache: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where a whole answer came from.

    Attributes:
        cache: the ``X-Cache`` value (``MISS``, ``BYPASS``, ``HIT-L2``, ``HIT-SEMANTIC``).
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
        clock: the clock of ``Prepared.deadline`` (followers wait until their own).
    """

    def __init__(self, cache: ResponseCache | None, clock: Callable[[], float]) -> None:
        self._cache = cache
        self._clock = clock
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
        """A whole answer: coalesced with an identical request in flight, else L2, else fetched.

        A follower keeps its own deadline, and never inherits a failure that another attempt
        could fix: when the leader is cancelled (its caller left), raises, or answers with a
        retryable status, the follower runs the request again (following a new leader, or
        leading itself).
        """
        key = prepared.key
        if key is None or self._cache is None:
            return Outcome(await fetch(), "BYPASS", fresh=True)
        if prepared.directives.no_cache:
            reply = await fetch()
            self.keep(prepared, reply)
            return Outcome(reply, "MISS", fresh=True)
        for _ in range(FOLLOW_ROUNDS):
            leader = self._pending.get(key)
            if leader is None:
                break
            metrics.CACHE_COALESCED.inc()
            shared = await self._follow(prepared, leader)
            if shared is not None:
                return shared
        if key in self._pending:  # still led by another attempt: run this one on its own
            return await self._lead(prepared, key, fetch)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            outcome = await self._lead(prepared, key, fetch)
        except BaseException as exc:
            del self._pending[key]
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: followers re-run rather than re-raise it
            raise
        del self._pending[key]
        future.set_result(outcome)
        return outcome

    async def _follow(self, prepared: Prepared, leader: asyncio.Future[Outcome]) -> Outcome | None:
        """The leader's answer as a coalesced copy, a 504 at this request's own deadline, or
        ``None`` when the leader's outcome is no answer for others (run again)."""
        remaining = prepared.deadline - self._clock()
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                shared = await asyncio.shield(leader)
        except TimeoutError:
            failure = DeadlineExceeded("no answer within the request's deadline")
            return Outcome(error_reply(failure), "MISS", fresh=False)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if leader.cancelled() and task is not None and not task.cancelling():
                return None  # the leader's caller left; this caller still waits
            raise
        except Exception:
            return None
        reply = shared.reply
        if reply.status >= 500 or reply.status == 429:
            return None  # another attempt may succeed where the leader's failed
        copy = Reply(reply.status, reply.body, {**reply.headers, headers.COALESCED: "1"})
        return Outcome(copy, shared.cache, fresh=False)

    async def _lead(self, prepared: Prepared, key: str, fetch: Fetch) -> Outcome:
        assert self._cache is not None
        with span("cache.l2"):
            hit = await self._cache.get_l2(key)
        if hit is not None:
            return Outcome(hit_reply(hit), "HIT-L2", fresh=False)
        similar = await self._semantic(prepared)
        if similar is not None:
            return similar
        reply = await fetch()
        self.keep(prepared, reply)  # into L1 before an identical request can miss again
        return Outcome(reply, "MISS", fresh=True)

    async def _semantic(self, prepared: Prepared) -> Outcome | None:
        """An earlier answer to a reworded question (L3), as a whole reply."""
        similar = await self._similar(prepared)
        if similar is None:
            return None
        hit, similarity = similar
        reply = hit_reply(hit)
        reply.headers[headers.SEMANTIC_SIMILARITY] = similarity
        return Outcome(reply, "HIT-SEMANTIC", fresh=False)

    async def stored(self, prepared: Prepared) -> Stored | None:
        """What a stream may be served from before one is opened: its L2 entry, else an
        earlier answer to a reworded question (L3)."""
        hit = await self.l2(prepared)
        if hit is not None:
            return Stored(hit, "HIT-L2", {})
        if self._cache is None or prepared.key is None or prepared.directives.no_cache:
            return None
        similar = await self._similar(prepared)
        if similar is None:
            return None
        return Stored(similar[0], "HIT-SEMANTIC", {headers.SEMANTIC_SIMILARITY: similar[1]})

    async def _similar(self, prepared: Prepared) -> tuple[CachedReply, str] | None:
        """The answer of the most similar earlier question (read by its exact key, so an
        expired or purged answer serves nobody) and the similarity, or ``None``."""
        assert self._cache is not None
        semantic = self._cache.semantic
        if semantic is None:
            return None
        with span("cache.semantic"):
            match = await semantic.lookup(prepared)
            if match is None:
                metrics.SEMANTIC_MISSES.inc()
                return None
            hit = self._cache.get_l1(match.answer) or await self._cache.get_l2(match.answer)
        if hit is None:
            metrics.SEMANTIC_MISSES.inc()
            return None
        metrics.SEMANTIC_HITS.inc()
        return hit, f"{match.similarity:.4f}"

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
            if self._cache.semantic is not None:
                ttl = self._cache.settings.l2_ttl_s
                max_age = prepared.directives.max_age
                await self._cache.semantic.remember(prepared, ttl if max_age is None else max_age)

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
            splits=reply.splits,
        )
