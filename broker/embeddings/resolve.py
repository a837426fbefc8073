"""Input by input: which vectors the cache holds, the one upstream call for the others, and
the caller's answer assembled from both.

:class:`InputResolver` is the embeddings path's one decision point on vectors: the pipeline
asks it for the vectors L1 holds (inline, no await), for the whole answer (L2, then one
upstream call for the distinct inputs still missing), and to write the new vectors back after
the reply. Each distinct input is looked up once and sent upstream at most once, however often
a request repeats it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from broker import metrics
from broker.cache.front import Outcome
from broker.cache.vectors import CachedVector, VectorCache
from broker.embeddings.assemble import InvalidAnswer, answer_body, fresh_vectors
from broker.embeddings.call import EmbeddingCall
from broker.request import Reply, error_reply
from broker.tenancy.meter import Charge, Meter
from broker.upstream.calls import Upstream
from edge_runtime.tracing import span
from schemas import headers

__all__ = ["Fresh", "InputResolver", "Known"]

#: Vectors found so far, by input key.
Known = dict[str, CachedVector]
#: Reply headers of the upstream call that an assembled answer keeps.
_ANSWERED_BY = (headers.PROVIDER, headers.DEPLOYMENT, headers.ATTEMPTS)


@dataclass(slots=True)
class Fresh:
    """What one attempt's own upstream call brought (a replayed answer brings nothing):
    its charge and the new vectors to write back."""

    charge: Charge | None = None
    vectors: list[tuple[str, CachedVector]] = field(default_factory=list)


class InputResolver:
    """Answers embeddings calls from cached vectors and one upstream call.

    Args:
        vectors: the vector cache, or ``None`` when caching is off.
        upstream: calls to the workers' embeddings subjects (routing, failover, retries).
        meter: prices the upstream's answer and what the cache saved.
    """

    def __init__(self, vectors: VectorCache | None, upstream: Upstream, meter: Meter) -> None:
        self._vectors = vectors
        self._upstream = upstream
        self._meter = meter

    def from_l1(self, call: EmbeddingCall) -> Known:
        """The inputs' vectors L1 holds, by key (no await: the hot path)."""
        if self._vectors is None or not call.reads_cache:
            return {}
        distinct = list(dict.fromkeys(call.keys))
        found = self._vectors.from_l1(distinct)
        return {key: entry for key, entry in zip(distinct, found, strict=True) if entry}

    def hits(self, call: EmbeddingCall, known: Known) -> Reply:
        """The answer when ``known`` holds every input's vector."""
        entries = [known[key] for key in call.keys]
        return self._assembled(call, entries, entries, _answered_by(entries[0]))

    async def resolve(self, call: EmbeddingCall, known: Known, fresh: Fresh) -> Outcome:
        """The whole answer: the vectors ``known`` (L1) and L2 hold, the others from one
        upstream call for the distinct inputs the cache lacks (``fresh`` gets its charge and
        its vectors)."""
        found = dict(known)
        from_l2 = await self._from_l2(call, found)
        cached = [found[key] for key in call.keys if key in found]
        first: dict[str, int] = {}  # a missing input's key -> its first position
        for position, key in enumerate(call.keys):
            if key not in found:
                first.setdefault(key, position)
        if not first:
            entries = [found[key] for key in call.keys]
            reply = self._assembled(call, entries, cached, _answered_by(entries[0]))
            return Outcome(reply, "HIT-L2" if from_l2 else "HIT-L1", fresh=False)
        status = "MISS" if call.cached else "BYPASS"
        sub = call.for_inputs(list(first.values()))
        metrics.EMBEDDING_INPUTS.labels("upstream").inc(len(first))
        upstream = await self._upstream.whole(sub)
        call.queued_s = sub.queued_s  # (it began with the call's own wait)
        if upstream.status != 200:
            return Outcome(upstream, status, fresh=True)
        try:
            vectors = fresh_vectors(upstream.body, sub, upstream.headers)
        except InvalidAnswer as exc:
            return Outcome(error_reply(exc), status, fresh=True)
        fresh.charge = self._meter.price(upstream)
        new = list(zip(sub.keys, vectors, strict=True))
        found.update(new)
        if self._vectors is not None and call.writes_cache:
            self._vectors.keep(new, call.directives.max_age)  # before the reply leaves
            fresh.vectors = new
        answered_by = {n: upstream.headers[n] for n in _ANSWERED_BY if n in upstream.headers}
        reply = self._assembled(call, [found[key] for key in call.keys], cached, answered_by)
        reply.upstream_s = upstream.upstream_s
        return Outcome(reply, status, fresh=True)

    async def write_back(self, call: EmbeddingCall, fresh: Fresh) -> None:
        """Write an attempt's new vectors to L2 (after the reply)."""
        if fresh.vectors and self._vectors is not None:
            await self._vectors.write_back(fresh.vectors, call.directives.max_age)

    async def _from_l2(self, call: EmbeddingCall, found: Known) -> bool:
        """Add the vectors L2 holds of the inputs ``found`` lacks; whether it held any."""
        if self._vectors is None or not call.reads_cache:
            return False
        absent = [key for key in dict.fromkeys(call.keys) if key not in found]
        if not absent:
            return False
        with span("cache.l2"):
            entries = await self._vectors.from_l2(absent)
        hits = {key: entry for key, entry in zip(absent, entries, strict=True) if entry}
        found.update(hits)
        return bool(hits)

    def _assembled(
        self,
        call: EmbeddingCall,
        entries: list[CachedVector],
        cached: list[CachedVector],
        answered_by: dict[str, str],
    ) -> Reply:
        """The caller's answer from its inputs' vectors (``cached``: those the cache gave,
        whose saving ``Llm-Cost-Saved-Usd`` names)."""
        reply_headers = {**answered_by, headers.CACHED_INPUTS: str(len(cached))}
        tokens: Counter[str] = Counter()
        for entry in cached:
            tokens[entry.deployment] += entry.tokens
        saved = self._meter.saved_tokens(call, tokens) if tokens else None
        if saved is not None:
            reply_headers[headers.COST_SAVED] = f"{saved:.6f}"
        return Reply(200, answer_body(entries), reply_headers)


def _answered_by(entry: CachedVector) -> dict[str, str]:
    """Who computed a cached answer (its first input's vector), as a hit names it."""
    return {headers.PROVIDER: entry.provider, headers.DEPLOYMENT: entry.deployment}
