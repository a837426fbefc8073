"""The semantic tier (L3): an earlier answer serves a reworded question.

A request that missed L1 and L2 is a candidate when its model (and tenant) has the tier on
and its last message is a user's plain text. Its *context* (the cache key with that text
removed, :func:`broker.cache.key.context_key`) selects the earlier questions it may match:
same namespace, model, system prompt, earlier turns, tools and parameters. Among them the
most similar by cosine (all-MiniLM-L6-v2, :mod:`broker.cache.embed`) at or over the
threshold that the decision's check passes (:mod:`broker.cache.decision`: by default the
token-level verifier of :mod:`broker.cache.verify`) wins, and its answer is read by its exact
key from L1, then L2: an answer that expired or was purged serves nobody, so L3 entries
expire with their answers.

Entries live in a NATS KV bucket (``llm_edge_semantic``) that every broker watches into an
in-process index, so brokers see each other's entries. Embedding runs on one thread of its
own: ONNX Runtime's one call per embedding and the Rust tokenizer release the GIL, so the
event loop keeps serving on the other core. One thread, not asyncio's pool of up to six:
several embeddings at once on two cores starve the loop (its 1 ms timers woke 17-23 ms late at
p99 with 32 lookups waiting, 1.1 ms with one thread), and one thread caps the tier at one core;
a process pool or an embedding service on NATS keep the loop as free but add 0.4-0.9 ms to
every lookup (``bench/semantic_placement.py``, figures in docs/semantic-cache.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import msgspec
from nats.aio.client import Client
from nats.js import api

from broker.cache.decision import Decision, rung_for
from broker.cache.key import context_key
from broker.cache.semantic_index import Entry, Match, SemanticIndex
from edge_runtime.jetstream import ensure_key_value
from schemas.jetstream import kv_key, kv_purge_subject
from schemas.responses import ResponsesRequest

if TYPE_CHECKING:
    from broker.cache.embed import Embedder, Vector
    from broker.cache.settings import SemanticSettings
    from broker.request import Prepared

__all__ = [
    "Match",
    "SemanticCache",
    "SemanticIndex",
]

log = logging.getLogger("llm_edge.broker")
#: How often expired entries are swept out of the index.
SWEEP_S = 1.0
#: Purges remembered for the watch (see ``SemanticCache._purged``).
MAX_PURGES_KEPT = 64
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Entry).decode


class SemanticCache:
    """The L3 tier: decides candidates, looks up, remembers, purges.

    Args:
        settings: the ``[cache.semantic]`` table.
        embedder: text to unit vector (run on a thread).
        nc: the connection to the shared bucket's server, or ``None`` for this process alone.
        clock: wall-clock seconds (entries' expiry is shared between hosts).
    """

    def __init__(
        self,
        settings: SemanticSettings,
        embedder: Embedder,
        nc: Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.index = SemanticIndex(settings.max_entries)
        #: The serve-or-miss rule, picked by ``settings.target_error_rate``.
        self.decision = Decision(
            rung_for(settings.target_error_rate),
            settings.threshold,
            vocabulary=getattr(embedder, "words", frozenset()),
        )
        self._embedder = embedder
        self._nc = nc
        self._js = nc.jetstream() if nc is not None else None
        self._clock = clock
        self._watch: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-edge-embed")
        self._memo: dict[str, Vector] = {}  # the lookup's vector, reused by the write
        #: Notified when the bucket's updates change the index (readers wait on it).
        self.changed = asyncio.Condition()
        #: Recent purges: (KV key prefix, the bucket's last revision when purged). A watch
        #: event of an entry written before a purge can arrive after it (watches lag under
        #: load); it must not bring the purged entry back into the index.
        self._purged: deque[tuple[str, int]] = deque(maxlen=MAX_PURGES_KEPT)

    @classmethod
    async def open(
        cls,
        nc: Client,
        settings: SemanticSettings,
        embedder: Embedder,
        ttl_s: float,
        *,
        replicas: int = 1,
    ) -> SemanticCache:
        """Create (or open, raising its replicas) the bucket, bounded by
        ``settings.max_bytes``, and start watching it into the index and sweeping the
        index's expired entries."""
        config = api.KeyValueConfig(
            bucket=settings.bucket,
            history=1,
            ttl=ttl_s,
            max_bytes=settings.max_bytes,
            replicas=replicas,
        )
        js = nc.jetstream()
        kv = await ensure_key_value(js, config)
        stream = (await js.stream_info(f"KV_{settings.bucket}")).config
        # the bound configured now applies; when full, the oldest entries go (a bucket that
        # refused new ones would keep fresh questions from the other brokers)
        if stream.max_bytes != settings.max_bytes or stream.discard != api.DiscardPolicy.OLD:
            stream.max_bytes = settings.max_bytes
            stream.discard = api.DiscardPolicy.OLD
            await js.update_stream(stream)
        cache = cls(settings, embedder, nc)
        watcher = await kv.watchall()
        cache._watch = asyncio.create_task(cache._follow(watcher), name="semantic-watch")
        cache.start_sweeping()
        return cache

    def start_sweeping(self) -> None:
        """Remove expired entries from the index every :data:`SWEEP_S` (an entry the bucket
        drops by its age sends no watch event)."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="semantic-sweep")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            if self.index.sweep(self._clock()):
                async with self.changed:
                    self.changed.notify_all()

    async def _follow(self, watcher: Any) -> None:
        async for entry in watcher:
            if entry is None:
                continue  # the initial values are all in
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self.index.remove(entry.key)
            elif self._purged_before(entry.key, entry.revision):
                continue  # written before a purge, delivered after it: it stays purged
            else:
                with contextlib.suppress(msgspec.MsgspecError):
                    self.index.put(entry.key, _decode(entry.value))
            async with self.changed:
                self.changed.notify_all()

    def _candidate(self, prepared: Prepared) -> tuple[str, str] | None:
        settings = self.settings
        if prepared.key is None or prepared.directives.no_cache:
            return None
        if settings.models and prepared.model.name not in settings.models:
            return None
        if settings.tenants and prepared.tenant.name not in settings.tenants:
            return None
        basis = prepared.basis
        request = prepared.request
        if basis.whole_body or isinstance(request, ResponsesRequest):
            return None  # keyed over its body: no context to take the last turn from
        namespace = prepared.key.rsplit(":", 1)[0]
        return context_key(request, basis.extras, prepared.model.name, namespace, salt=basis.salt)

    async def _vector(self, text: str) -> Vector:
        vector = self._memo.pop(text, None)
        if vector is None:
            loop = asyncio.get_running_loop()
            vector = await loop.run_in_executor(self._thread, self._embedder.embed, text)
        return vector

    async def lookup(self, prepared: Prepared) -> Match | None:
        """The earlier answer's key and similarity for a request, if one may serve it."""
        candidate = self._candidate(prepared)
        if candidate is None:
            return None
        context, text = candidate
        loop = asyncio.get_running_loop()
        # embedding and ranking both grow with their input: one trip to the thread for both
        try:
            vector, rows = await loop.run_in_executor(
                self._thread, self._embed_and_rank, context, text
            )
        except Exception:  # a bug or a broken model: the tier costs a miss, never an error
            log.exception("semantic lookup failed: served as a miss")
            return None
        if len(self._memo) > 1024:  # lookups whose answers were never written
            self._memo.clear()
        self._memo[text] = vector
        decision = self.decision
        return self.index.choose(
            context,
            rows,
            vector,
            text,
            threshold=decision.threshold,
            now=self._clock(),
            accepts=decision.accepts,
        )

    def _embed_and_rank(self, context: str, text: str) -> tuple[Vector, list[int]]:
        vector = self._embedder.embed(text)
        return vector, self.index.rank(context, vector)

    async def remember(self, prepared: Prepared, ttl_s: float) -> None:
        """Record a fresh answer's question (its answer is in L1/L2 under ``prepared.key``)."""
        candidate = self._candidate(prepared)
        if candidate is None or prepared.key is None or ttl_s <= 0:
            return
        context, text = candidate
        try:
            vector = await self._vector(text)
        except Exception:  # as in lookup: the answer is kept in L1/L2 all the same
            log.exception("semantic entry not made: embedding failed")
            return
        entry = Entry(context, prepared.key, text, vector.tobytes(), self._clock() + ttl_s)
        entry_id = kv_key(f"{context}:{prepared.key.rsplit(':', 1)[1]}")
        self.index.put(entry_id, entry)
        if self._nc is None:
            return
        # published, not put: no wait for JetStream's acknowledgement (the write is after
        # the reply, and an entry that is not stored only costs other brokers a hit), so an
        # unavailable JetStream never holds the request's remaining steps
        try:
            await self._nc.publish(f"$KV.{self.settings.bucket}.{entry_id}", _encode(entry))
        except Exception as exc:  # a closed or draining connection: the entry stays local
            log.debug("semantic entry not shared: %r", exc)

    async def purge(self, prefix: str) -> int:
        """Remove the entries whose context starts with ``prefix`` (``""``: all) from this
        index and from the bucket; returns how many this index held.

        The bucket is purged in one request, its stream filtered to the prefix's subjects
        (an entry's key is its context's, :func:`kv_key`), not one purge per entry: 100k
        entries would take that many round trips. Every broker receives the purge command
        and empties its own index, as for L1."""
        ids = self.index.ids(prefix)
        for entry_id in ids:
            self.index.remove(entry_id)
        if self._js is not None:
            bucket = self.settings.bucket
            info = await self._js.stream_info(f"KV_{bucket}")
            self._purged.append((kv_key(prefix), info.state.last_seq))
            await self._js.purge_stream(f"KV_{bucket}", subject=kv_purge_subject(bucket, prefix))
        return len(ids)

    def _purged_before(self, key: str, revision: int | None) -> bool:
        """Whether a purge since this entry was written covers it."""
        return revision is not None and any(
            key.startswith(prefix) and revision <= last for prefix, last in self._purged
        )

    async def aclose(self) -> None:
        """Stop watching the bucket and let the embedding thread end."""
        for task in (self._watch, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._thread.shutdown(wait=False, cancel_futures=True)
