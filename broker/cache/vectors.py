"""The embeddings cache: one entry per input's vector, in its own L1 and in the shared L2.

An embeddings request is cached input by input, not as a whole: a request of 100 texts of
which 90 were embedded before (alone or in other requests) costs an upstream call for the 10
others only. An entry's key covers everything that can change the vector: the model's
canonical name (aliases share entries), ``dimensions``, ``encoding_format`` (the entry holds
the vector as the upstream wrote it, floats or base64, and is served as it is), the provider
passthrough fields, and the input itself (a text, or a token array: never equal to a text).
Keys have the response cache's form, ``<owner>:<namespace>:<hex>``, so namespace and tenant
purges remove vectors too.

Vectors have their own L1, bounded apart from the chat answers' (a vector is 8-30 KB, and one
request may bring 2,048 of them: they must not push the answers out); L2 is the response
cache's, read for many keys at once (one Redis MGET, one burst of NATS direct gets).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
from blake3 import blake3

from broker import metrics
from broker.cache.l1 import L1Cache
from broker.cache.l2 import GuardedL2
from broker.cache.settings import CacheSettings
from schemas.embeddings import Input

__all__ = ["CachedVector", "VectorCache", "vector_keys"]

_params_encoder = msgspec.json.Encoder(order="sorted")
_DOMAIN = b"llm-edge embeddings\x00"


class CachedVector(msgspec.Struct, array_like=True, frozen=True):
    """One input's vector and where it came from.

    Attributes:
        embedding: the vector's JSON as the upstream wrote it (an array of floats, or a
            base64 string).
        tokens: the input's tokens (its share of the upstream call's ``prompt_tokens``).
        model: the model the upstream named in its answer.
        provider, deployment: who computed it (a hit's saving is priced at the deployment's).
    """

    embedding: bytes
    tokens: int
    model: str
    provider: str
    deployment: str


def vector_keys(
    inputs: list[Input],
    *,
    model: str,
    dimensions: int | None,
    encoding_format: str,
    extras: dict[str, Any],
    namespace: str,
) -> list[str]:
    """One key per input, ``<namespace>:<hex digest>`` (BLAKE3, 32 bytes).

    Args:
        inputs: texts or token arrays.
        model: the canonical model name the request resolved to.
        dimensions: the request's ``dimensions`` (``None``: the model's own).
        encoding_format: ``float`` or ``base64``.
        extras: provider passthrough fields, decoded.
        namespace: tenant and caller namespace; a namespace never reads another's entries.
    """
    head = blake3(_DOMAIN)
    head.update(_params_encoder.encode([model, dimensions, encoding_format, extras]))
    keys = []
    for item in inputs:
        digest = head.copy()
        if isinstance(item, str):
            digest.update(b"\x00s")
            digest.update(item.encode("utf-8", "surrogatepass"))
        else:
            digest.update(b"\x00t")
            digest.update(_params_encoder.encode(item))
        keys.append(f"{namespace}:{digest.hexdigest()}")
    return keys


_entry_encoder = msgspec.msgpack.Encoder()
_entry_decoder = msgspec.msgpack.Decoder(CachedVector)


class VectorCache:
    """Vectors in process (L1) and shared (the response cache's L2).

    Args:
        settings: the vectors' L1 bounds and the TTLs.
        l2: the guarded shared tier, or ``None``.
        clock: monotonic seconds for L1 TTLs.
    """

    def __init__(
        self,
        settings: CacheSettings,
        l2: GuardedL2 | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._l2 = l2
        self.l1: L1Cache[CachedVector] = L1Cache(
            settings.embeddings_l1_max_entries, settings.embeddings_l1_max_bytes, clock
        )

    def from_l1(self, keys: list[str]) -> list[CachedVector | None]:
        """Each key's L1 entry, or ``None`` (no await: the hot path)."""
        found = [self.l1.get(key) for key in keys]
        hits = sum(entry is not None for entry in found)
        if hits:
            metrics.EMBEDDING_INPUTS.labels("l1").inc(hits)
        return found

    async def from_l2(self, keys: list[str]) -> list[CachedVector | None]:
        """Each key's L2 entry, or ``None``; hits are copied into L1."""
        if self._l2 is None or not keys:
            return [None] * len(keys)
        found: list[CachedVector | None] = []
        for key, raw in zip(keys, await self._l2.get_many(keys), strict=True):
            entry = None
            if raw is not None:
                try:
                    entry = _entry_decoder.decode(raw)
                except msgspec.MsgspecError:
                    metrics.CACHE_L2_ERRORS.inc()
                else:
                    self.l1.put(key, entry, len(entry.embedding), self._settings.l1_ttl_s)
            found.append(entry)
        hits = sum(entry is not None for entry in found)
        if hits:
            metrics.EMBEDDING_INPUTS.labels("l2").inc(hits)
        return found

    def keep(self, entries: list[tuple[str, CachedVector]], max_age: float | None) -> None:
        """Write vectors to L1 (before the reply: a repeat must not miss them);
        ``max_age`` caps their TTL."""
        ttl = self._settings.l1_ttl_s
        if max_age is not None:
            ttl = min(ttl, max_age)
        for key, entry in entries:
            self.l1.put(key, entry, len(entry.embedding), ttl)

    async def write_back(
        self, entries: list[tuple[str, CachedVector]], max_age: float | None
    ) -> None:
        """Write vectors to L2 (after the reply); ``max_age`` sets their TTL."""
        ttl = self._settings.l2_ttl_s if max_age is None else max_age
        if self._l2 is None or not entries or ttl <= 0:
            return
        await self._l2.set_many([(key, _entry_encoder.encode(e)) for key, e in entries], ttl)

    def purge(self, prefix: str) -> int:
        """Remove L1 vectors whose key starts with ``prefix`` (L2 is purged with the answers)."""
        return self.l1.purge(prefix)
