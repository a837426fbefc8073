"""The response cache: L1 in process, L2 shared, plus the per-request cache directives.

Only successful replies are stored. Writes happen after the reply has been sent.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from broker import metrics
from broker.cache.l1 import DEFAULT_L1_MAX_BYTES, DEFAULT_L1_MAX_ENTRIES, DEFAULT_L1_TTL_S, L1Cache
from broker.cache.l2 import DEFAULT_L2_TIMEOUT_S, DEFAULT_L2_TTL_S, GuardedL2
from broker.cache.l2_nats import DEFAULT_L2_NATS_MAX_BYTES
from broker.cache.semantic import SemanticCache, SemanticSettings
from edge_runtime.tables import check_keys, field_names

__all__ = [
    "CacheDirectives",
    "CacheSettings",
    "CachedReply",
    "L2Kind",
    "NondeterministicPolicy",
    "ResponseCache",
    "parse_cache_control",
]


class L2Kind(enum.StrEnum):
    """Which shared cache to use."""

    AUTO = "auto"  # Redis when REDIS_URL is set, else the NATS KV bucket
    REDIS = "redis"
    NATS = "nats"
    OFF = "off"


class NondeterministicPolicy(enum.StrEnum):
    """What to do with requests whose answer is sampled (temperature > 0 or unset)."""

    CACHE = "cache"  # a cached answer is one valid sample; callers opt out with no-cache
    BYPASS = "bypass"  # never cache them unless they set temperature 0 or a seed


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheSettings:
    """The ``[cache]`` table."""

    enabled: bool = True
    l1_max_entries: int = DEFAULT_L1_MAX_ENTRIES
    l1_max_bytes: int = DEFAULT_L1_MAX_BYTES
    l1_ttl_s: float = DEFAULT_L1_TTL_S
    l2: L2Kind = L2Kind.AUTO
    l2_ttl_s: float = DEFAULT_L2_TTL_S
    l2_timeout_s: float = DEFAULT_L2_TIMEOUT_S
    l2_nats_max_bytes: int = DEFAULT_L2_NATS_MAX_BYTES
    nondeterministic: NondeterministicPolicy = NondeterministicPolicy.CACHE
    shared_across_tenants: bool = False
    semantic: SemanticSettings = field(default_factory=SemanticSettings)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> CacheSettings:
        """Build from the ``[cache]`` table; raises ``ValueError`` naming the bad key."""
        check_keys("cache", raw, field_names(cls))
        values = dict(raw)
        if "l2" in values:
            values["l2"] = L2Kind(values["l2"])
        if "semantic" in values:
            values["semantic"] = SemanticSettings.from_mapping(values["semantic"])
        if "nondeterministic" in values:
            values["nondeterministic"] = NondeterministicPolicy(values["nondeterministic"])
        settings = cls(**values)
        if (
            min(settings.l1_max_entries, settings.l1_max_bytes, settings.l2_nats_max_bytes) < 1
            or min(settings.l1_ttl_s, settings.l2_ttl_s, settings.l2_timeout_s) <= 0
        ):
            raise ValueError("cache: sizes and durations must be positive")
        return settings


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


_reply_encoder = msgspec.msgpack.Encoder()
_reply_decoder = msgspec.msgpack.Decoder(CachedReply)


@dataclass(frozen=True, slots=True)
class CacheDirectives:
    """Per-request cache control (``Cache-Control`` header, NATS or HTTP)."""

    no_cache: bool = False  # skip the read, still write
    no_store: bool = False  # do not write
    max_age: float | None = None  # TTL for the entry this request writes


NO_DIRECTIVES = CacheDirectives()
_MAX_AGE = re.compile(r"max-age\s*=\s*(\d+)")


def parse_cache_control(value: str | None) -> CacheDirectives:
    """Parse ``no-cache``, ``no-store`` and ``max-age=N`` (other directives are ignored)."""
    if not value:
        return NO_DIRECTIVES
    lowered = value.lower()
    match = _MAX_AGE.search(lowered)
    return CacheDirectives(
        no_cache="no-cache" in lowered,
        no_store="no-store" in lowered,
        max_age=float(match.group(1)) if match else None,
    )


class ResponseCache:
    """L1 + optional L2 + optional semantic L3.

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
        removed = {"l1": self.l1.purge(prefix)}
        if self.l2 is not None:
            removed["l2"] = await self.l2.purge(prefix)
        if self.semantic is not None:
            removed["semantic"] = await self.semantic.purge(prefix)
        return removed
