"""The response cache: L1 in process, L2 shared, the semantic tier behind them, and the
embeddings' vectors (:mod:`broker.cache.vectors`: their own L1, the same L2).

Only successful replies are stored. Writes happen after the reply has been sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from broker import metrics
from broker.cache.l1 import L1Cache
from broker.cache.l2 import GuardedL2
from broker.cache.semantic import SemanticCache
from broker.cache.settings import CacheSettings
from broker.cache.vectors import VectorCache
from broker.request import Reply
from schemas import headers

__all__ = ["CachedReply", "ResponseCache", "hit_reply"]


class CachedReply(msgspec.Struct, array_like=True, frozen=True):
    """A stored successful reply and where it came from.

    ``splits`` is a streamed answer's chunk boundaries: per choice (in index order), the
    length of each content piece as it was streamed, so a replay streams the same chunks.
    Entries written before it existed (three fields) decode with ``None`` and replay as one
    content chunk; brokers that predate it ignore the trailing field.
    """

    body: bytes
    provider: str
    deployment: str
    splits: list[list[int]] | None = None


def hit_reply(hit: CachedReply) -> Reply:
    """The reply for a cache hit."""
    return Reply(
        200, hit.body, {headers.PROVIDER: hit.provider, headers.DEPLOYMENT: hit.deployment}
    )


_reply_encoder = msgspec.msgpack.Encoder()
_reply_decoder = msgspec.msgpack.Decoder(CachedReply)


class ResponseCache:
    """L1 + optional L2 + optional semantic L3, and the embeddings' vectors.

    Args:
        settings: sizes and TTLs.
        l2: the guarded shared tier, or ``None``.
        clock: monotonic seconds for L1 TTLs.
    """

    def __init__(
        self,
        settings: CacheSettings,
        l2: GuardedL2 | None = None,
        clock: Callable[[], float] = time.monotonic,
        semantic: SemanticCache | None = None,
    ) -> None:
        self.settings = settings
        self.semantic = semantic
        self.l1: L1Cache[CachedReply] = L1Cache(
            settings.l1_max_entries, settings.l1_max_bytes, clock
        )
        self.l2 = l2
        self.vectors = VectorCache(settings, l2, clock)

    def get_l1(self, key: str) -> CachedReply | None:
        """L1 lookup (the hot path)."""
        hit = self.l1.get(key)
        if hit is None:
            metrics.L1_MISSES.inc()
        else:
            metrics.L1_HITS.inc()
        return hit

    async def get_l2(self, key: str) -> CachedReply | None:
        """L2 lookup; a hit is copied into L1."""
        if self.l2 is None:
            return None
        raw = await self.l2.get(key)
        if raw is None:
            metrics.L2_MISSES.inc()
            return None
        try:
            reply = _reply_decoder.decode(raw)
        except msgspec.MsgspecError:
            metrics.CACHE_L2_ERRORS.inc()
            return None
        metrics.L2_HITS.inc()
        self.l1.put(key, reply, len(reply.body), self.settings.l1_ttl_s)
        return reply

    def store_l1(self, key: str, reply: CachedReply, max_age: float | None) -> None:
        """Write L1 (synchronous and cheap); ``max_age`` caps the TTL for this entry."""
        l1_ttl = self.settings.l1_ttl_s if max_age is None else min(max_age, self.settings.l1_ttl_s)
        self.l1.put(key, reply, len(reply.body), l1_ttl)

    async def store_l2(self, key: str, reply: CachedReply, max_age: float | None) -> None:
        """Write L2, after the reply went out; ``max_age`` sets the TTL for this entry."""
        if self.l2 is None:
            return
        ttl = self.settings.l2_ttl_s if max_age is None else max_age
        if ttl > 0:
            await self.l2.set(key, _reply_encoder.encode(reply), ttl)

    async def purge(self, prefix: str) -> dict[str, int]:
        """Remove entries whose key starts with ``prefix`` from both tiers."""
        removed = {"l1": self.l1.purge(prefix) + self.vectors.purge(prefix)}
        if self.l2 is not None:
            removed["l2"] = await self.l2.purge(prefix)
        if self.semantic is not None:
            removed["semantic"] = await self.semantic.purge(prefix)
        return removed
