"""The embeddings request path: it conducts, the wings decide (as :mod:`broker.pipeline` does
for chat, whose hot path this one leaves alone).

For each request: prepare it (:class:`~broker.embeddings.prepare.EmbeddingPreparer`: the
caller identified by API key, JWT or tenant subject, the model checked against the tenant's
and the key's lists), admit it (tenancy's :class:`~broker.tenancy.meter.Meter`: budgets, rpm
and tpm of the tenant and of the key, as for chat), answer it input by input
(:class:`~broker.embeddings.resolve.InputResolver`: the vector cache's L1 and L2, then one
upstream call through :class:`~broker.upstream.calls.Upstream`, with routing, breakers,
failover and retries as for chat), reply through a :class:`~broker.replies.sinks.ReplySink`,
then write the new vectors back, charge, count and log
(:class:`~broker.record.RequestRecord`). A JWT whose issuer key is not held yet is verified
in a task of its own once the key is fetched, as for chat.

An answer whose every input is in L1 is sent inline in the subscription callback, as a chat
L1 hit is; everything that waits runs as a task. A repeated request id is answered from its
first attempt (:class:`~broker.repeats.Repeats`); an idempotent one
(``Llm-Idempotent: 1``) shares its upstream call with its other attempts across brokers
(the workers' claims), so a retry never calls the upstream twice for the same inputs.

Embeddings requests wait for capacity as chat requests do (:mod:`broker.admission`): their
tenant's and key's limits, then a broker slot (the broker's slots are shared with chat), then
a permit of their deployment's limits; they have their own cancel registry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from broker import metrics
from broker.admission.admit import Admission
from broker.admission.classes import Priority
from broker.answer import WholeAnswer, queued
from broker.cache.vectors import VectorCache
from broker.embeddings.call import EmbeddingCall
from broker.embeddings.prepare import EmbeddingPreparer
from broker.embeddings.resolve import Fresh, InputResolver, Known
from broker.errors import BrokerError
from broker.record import RequestRecord
from broker.repeats import Repeats
from broker.replies.heartbeat import Heartbeats
from broker.replies.sinks import ReplySink
from broker.request import error_reply
from broker.running import INTERNAL, Running
from broker.tenancy.identify import identify_later
from broker.tenancy.meter import Meter
from broker.tenancy.tenants import Caller, KeysNeeded
from broker.upstream.calls import Upstream
from schemas import headers

__all__ = ["EmbeddingsPipeline"]

log = logging.getLogger("llm_edge.broker")


class EmbeddingsPipeline:
    """Serves embeddings requests from any entry point through a :class:`ReplySink`.

    Args:
        preparer: decodes, validates, authenticates, keys each input.
        vectors: the vector cache, or ``None`` when caching is off.
        upstream: provider calls with retries and failover (to the workers' embeddings
            subjects).
        meter: admission, pricing, charging.
        record: request counter and log line.
        admission: the broker's slots and how requests wait for them (shared with chat).
        clock: the event loop's monotonic clock.
        repeats: answers a repeated request id from its first attempt.
        heartbeats: keepalives to callers that ask for them while they wait.
    """

    def __init__(
        self,
        *,
        preparer: EmbeddingPreparer,
        vectors: VectorCache | None,
        upstream: Upstream,
        meter: Meter,
        record: RequestRecord,
        admission: Admission,
        clock: Callable[[], float],
        repeats: Repeats | None = None,
        heartbeats: Heartbeats | None = None,
    ) -> None:
        self._preparer = preparer
        self._inputs = InputResolver(vectors, upstream, meter)
        self._meter = meter
        self._record = record
        self._clock = clock
        self._repeats = repeats if repeats is not None else Repeats(clock)
        self._admission = admission
        slots = admission.broker.pools[0]
        assert slots is not None
        self._running = Running[EmbeddingCall](
            size=slots.size + admission.settings.max_queued,
            record=record,
            heartbeats=heartbeats,
            meta=self._meta,
            span_name="llm.embeddings",
            what="embeddings request",
        )
        self._answer = WholeAnswer(meter, record, clock)
        #: requests waiting for a JWT issuer's keys (held so they are not collected)
        self._identifying: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """Requests being worked on."""
        return len(self._running)

    @property
    def max_body(self) -> int:
        """The byte limit of a request body."""
        return self._preparer.max_body

    def cancel(self, request_id: str, reply_to: str | None) -> None:
        """Cancel a request in flight when the cancel names its own reply subject."""
        self._running.cancel(request_id, reply_to)

    async def drain(self, grace_s: float) -> None:
        """Wait for requests in flight (bounded)."""
        await self._running.drain(grace_s)

    async def refuse(self, exc: BrokerError, hdrs: dict[str, str], sink: ReplySink) -> None:
        """Answer a request refused before it was decoded."""
        given = hdrs.get(headers.REQUEST_ID, "")
        if not given or len(given) > headers.MAX_VALUE_BYTES[headers.REQUEST_ID]:
            given = self._preparer.new_id()
        meta = {headers.REQUEST_ID: given, headers.CACHE: "BYPASS"}
        await sink.error(error_reply(exc), meta, streaming=False)
        metrics.requests_counter("", "", exc.status).inc()

    async def handle(
        self,
        data: bytes,
        hdrs: dict[str, str],
        sink: ReplySink,
        caller: Caller | None = None,
        *,
        reply_to: str = "",
    ) -> None:
        """Answer L1 hits and invalid requests inline; spawn a task for the rest.

        ``caller`` is set when the subject named the tenant (or the batch runs as it);
        otherwise the ``Authorization`` header decides. ``reply_to`` is the caller's reply
        subject (a cancel must name it); batch lines have none.
        """
        try:
            call = self._preparer.prepare(data, hdrs, caller)
            call.owner = reply_to
        except KeysNeeded:  # a JWT signed by a key not held yet: fetched off the callback
            self._after_keys(data, hdrs, sink, reply_to)
            return
        except BrokerError as exc:
            await self.refuse(exc, hdrs, sink)
            return
        except Exception:  # a bug still answers: every request gets exactly one answer
            log.exception("an embeddings request could not be prepared")
            await self.refuse(INTERNAL, hdrs, sink)
            return
        limited = self._meter.limits(call)  # (admission then waits on Redis)
        known: Known = {} if limited else self._inputs.from_l1(call)
        if not limited and all(key in known for key in call.keys):
            await self._running.guarded(call, sink, lambda c, s: self._serve_hits(c, s, known))
            return
        sink = self._running.watched(sink, hdrs, reply_to, call.request_id)
        if not reply_to:  # batch lines: they take what interactive traffic leaves
            call.priority = Priority.BATCH
        await self._running.spawn(self._admit(call, sink, known, limited=limited), reply_to)

    def _after_keys(
        self, data: bytes, hdrs: dict[str, str], sink: ReplySink, reply_to: str
    ) -> None:
        """Handle the request once its token's keys are fetched, off the callback
        (:func:`~broker.tenancy.identify.identify_later`)."""

        async def proceed(caller: Caller) -> None:
            await self.handle(data, hdrs, sink, caller, reply_to=reply_to)

        identify_later(
            self._preparer.keys,
            hdrs,
            sink,
            refuse=self.refuse,
            proceed=proceed,
            tasks=self._identifying,
        )

    async def _admit(
        self, call: EmbeddingCall, sink: ReplySink, known: Known, *, limited: bool
    ) -> None:
        """Wait for capacity (a limited tenant's, then a broker slot), then answer. A cancel
        reaches the request while it waits too."""
        await self._running.cancellable(
            call, sink, lambda c, s: self._admitted(c, s, known, limited=limited)
        )

    async def _admitted(
        self, call: EmbeddingCall, sink: ReplySink, known: Known, *, limited: bool
    ) -> None:
        try:
            if limited:
                await self._admission.tenant(call, lambda: self._meter.admit(call))
            permit = await self._admission.enter(call)
        except BrokerError as exc:
            self._record.count(call, "", exc.status)
            meta = queued(self._meta(call, "BYPASS"), call)
            await sink.error(error_reply(exc), meta, streaming=False)
            return
        try:
            if limited:
                known = self._inputs.from_l1(call)
                if all(key in known for key in call.keys):
                    await self._serve_hits(call, sink, known)
                    return
            await self._running.traced(call, sink, lambda c, s: self._answer_with(c, s, known))
        finally:
            permit.release()

    def _meta(self, call: EmbeddingCall, cache_status: str) -> dict[str, str]:
        return {headers.REQUEST_ID: call.request_id, headers.CACHE: cache_status}

    async def _serve_hits(self, call: EmbeddingCall, sink: ReplySink, known: Known) -> None:
        """Every input's vector was in L1: the answer, assembled inline."""
        reply = self._inputs.hits(call, known)
        self._record.count(call, "cache", 200)
        if self._record.logs_hits:
            self._record.log(
                call,
                status=200,
                cache="HIT-L1",
                reply_headers=reply.headers,
                started=self._record.now(),
            )
        await sink.whole(reply, self._meta(call, "HIT-L1"))

    async def _answer_with(self, call: EmbeddingCall, sink: ReplySink, known: Known) -> None:
        """The work of a request L1 could not answer whole: the inputs L1 did not know
        resolved, then the answer sent and settled."""
        started, perf_started = self._clock(), self._record.now()
        fresh = Fresh()
        outcome = await self._repeats.once(call, lambda: self._inputs.resolve(call, known, fresh))
        await self._answer.send(
            call,
            sink,
            outcome,
            fresh.charge if outcome.fresh else None,
            self._meta(call, outcome.cache),
            started=started,
            perf_started=perf_started,
            write_back=self._inputs.write_back,
            kept=fresh,
        )
