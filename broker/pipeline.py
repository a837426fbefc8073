"""The request path: it conducts, the wings decide.

For each request: prepare it (:class:`~broker.prepare.RequestPreparer`), admit it (its
tenant's limits through tenancy's :class:`~broker.tenancy.meter.Meter`, then a broker slot:
:class:`~broker.admission.admit.Admission`, where it waits when they are full), answer from
the cache or from the upstream
(a repeated request id through :class:`~broker.repeats.Repeats`, then the cache's
:class:`~broker.cache.front.ReadThrough` around
:class:`~broker.upstream.calls.Upstream`), reply through a
:class:`~broker.replies.sinks.ReplySink`, then charge, count and log
(:class:`~broker.record.RequestRecord`).

The hot path (decode, key, L1 lookup, reply) runs inline in the subscription callback: no
task, no log line, no re-encode. Everything that waits (limits, L2, the provider) runs as a
task, so one broker serves thousands of requests at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable

from nats.nuid import NUID

from broker import metrics
from broker.admission.admit import Admission
from broker.admission.classes import Priority
from broker.answer import WholeAnswer, queued
from broker.cache.front import ReadThrough
from broker.cache.response import CachedReply, hit_reply
from broker.errors import BrokerError
from broker.prepare import RequestPreparer
from broker.record import RequestRecord
from broker.repeats import Repeats
from broker.replies.heartbeat import Heartbeats
from broker.replies.sinks import ReplySink
from broker.replies.streams import StreamLog, replay, stream_log
from broker.request import Prepared, Reply, error_reply
from broker.running import INTERNAL, Running
from broker.tenancy.identify import identify_later
from broker.tenancy.meter import Meter
from broker.tenancy.pii_restore import RestoringSink
from broker.tenancy.stream_cost import PricedStream
from broker.tenancy.tenants import Caller, KeysNeeded
from broker.upstream.calls import Upstream
from broker.upstream.forward import StreamEvent
from schemas import StreamEnd, headers
from schemas.api import Api

__all__ = ["ChatPipeline"]

log = logging.getLogger("llm_edge.broker")


class ChatPipeline:
    """Serves chat requests from any entry point through a :class:`ReplySink`.

    Args:
        preparer: decodes, validates, authenticates, keys.
        front: the cache in front of the upstream.
        upstream: provider calls with retries and failover.
        meter: admission, pricing, charging.
        record: request counter and log line.
        admission: the broker's slots (``[broker] max_in_flight``) and how requests wait
            for them; beyond its slots and ``admission.max_queued`` waiting, callbacks wait.
        clock: the event loop's monotonic clock.
        repeats: answers a repeated request id from its first attempt (default: kept with
            :mod:`broker.repeats`' bounds).
        heartbeats: keepalives to callers that ask for them while they wait (none without).
    """

    def __init__(
        self,
        *,
        preparer: RequestPreparer,
        front: ReadThrough,
        upstream: Upstream,
        meter: Meter,
        record: RequestRecord,
        admission: Admission,
        clock: Callable[[], float],
        repeats: Repeats | None = None,
        heartbeats: Heartbeats | None = None,
    ) -> None:
        self._preparer = preparer
        self._repeats = repeats if repeats is not None else Repeats(clock)
        self._front = front
        self._upstream = upstream
        self._meter = meter
        self._record = record
        self._clock = clock
        self._admission = admission
        slots = admission.broker.pools[0]
        assert slots is not None
        self._running = Running[Prepared](
            size=slots.size + admission.settings.max_queued,
            record=record,
            heartbeats=heartbeats,
            meta=self._meta,
            span_name="llm.chat",
            what="request",
        )
        self._answer = WholeAnswer(meter, record, clock)
        self._write_back = front.write_back  # bound once, not per answer
        #: requests waiting for a JWT issuer's keys (held so they are not collected)
        self._identifying: set[asyncio.Task[None]] = set()
        self._nuid = NUID()

    @property
    def in_flight(self) -> int:
        """Requests being worked on (cache misses, limited tenants)."""
        return len(self._running)

    @property
    def max_body(self) -> int:
        """The byte limit of a request body."""
        return self._preparer.max_body

    def new_id(self) -> str:
        """A request id for a request that carries none."""
        return self._nuid.next().decode()

    def request_id(self, hdrs: dict[str, str]) -> str:
        """The caller's request id when it is within bounds (it is echoed on the reply), else
        a new one."""
        given = hdrs.get(headers.REQUEST_ID)
        if given and len(given) <= headers.MAX_VALUE_BYTES[headers.REQUEST_ID]:
            return given
        return self.new_id()

    def cancel(self, request_id: str, reply_to: str | None) -> None:
        """Cancel a request in flight (and, through the forwarder, its upstream call) when the
        cancel comes from its caller: ``reply_to`` is the request's own reply subject, which
        only the caller knows (a cancel naming another subject, or none, is ignored)."""
        self._running.cancel(request_id, reply_to)

    async def drain(self, grace_s: float) -> None:
        """Wait for requests in flight (bounded)."""
        await self._running.drain(grace_s)

    async def refuse(self, exc: BrokerError, hdrs: dict[str, str], sink: ReplySink) -> None:
        """Answer a request refused before it was decoded."""
        meta = {
            headers.REQUEST_ID: self.request_id(hdrs),
            headers.CACHE: "BYPASS",
        }
        await sink.error(error_reply(exc), meta, streaming=False)
        metrics.requests_counter("", "", exc.status).inc()

    async def accept(
        self, data: bytes, hdrs: dict[str, str], caller: Caller, api: Api
    ) -> int | None:
        """Validate and admit a request as :meth:`handle` would, without answering it or
        waiting (a background response is accepted so: its run is then handled with
        ``counted``, its budgets checked again but its rate limits not counted twice).

        Returns:
            The tokens counted against its rate limits (``None``: its tenant has none).

        Raises:
            BrokerError: what :meth:`handle` would have answered (a 402 or 429 at once).
        """
        prepared = self._preparer.prepare(data, hdrs, caller, api)
        if not self._meter.limits(prepared):
            return None
        await self._meter.admit(prepared)
        return sum(prepared.estimate())

    async def handle(
        self,
        data: bytes,
        hdrs: dict[str, str],
        sink: ReplySink,
        caller: Caller | None = None,
        *,
        reply_to: str = "",
        api: Api = Api.CHAT,
        counted: bool = False,
    ) -> None:
        """Answer L1 hits and invalid requests inline; spawn a task for the rest.

        ``caller`` is set when the subject named the tenant (or the batch runs as it);
        otherwise the ``Authorization`` header decides.
        ``reply_to`` is the caller's reply subject (a cancel must name it); batch lines have
        none and are cancelled with their batch. ``api`` is what the body speaks.
        ``counted``: its rate limits were counted when it was accepted (:meth:`accept`).
        """
        try:
            prepared = self._preparer.prepare(data, hdrs, caller, api)
            prepared.owner = reply_to
            prepared.counted = counted
        except KeysNeeded:  # a JWT signed by a key not held yet: fetched off the callback
            self._after_keys(data, hdrs, sink, reply_to, api)
            return
        except BrokerError as exc:
            await self.refuse(exc, hdrs, sink)
            return
        except Exception:  # a bug still answers: every request gets exactly one answer
            log.exception("a request could not be prepared")
            await self.refuse(INTERNAL, hdrs, sink)
            return
        if prepared.restore:  # the caller gets its redacted values back; the cache does not
            sink = RestoringSink(sink, prepared.restore)
        limited = self._meter.limits(prepared)  # waits on Redis
        hit = None if limited else self._front.l1(prepared)
        if hit is not None:
            await self._running.guarded(
                prepared, sink, lambda p, s: self._serve_hit(s, p, hit, "HIT-L1")
            )
            return
        sink = self._running.watched(sink, hdrs, reply_to, prepared.request_id)
        if not reply_to:  # batch lines: they take what interactive traffic leaves
            prepared.priority = Priority.BATCH
        await self._running.spawn(self._admit(prepared, sink, limited), reply_to)

    def _after_keys(
        self, data: bytes, hdrs: dict[str, str], sink: ReplySink, reply_to: str, api: Api
    ) -> None:
        """Handle the request once its token's keys are fetched, off the callback
        (:func:`~broker.tenancy.identify.identify_later`)."""

        async def proceed(caller: Caller) -> None:
            await self.handle(data, hdrs, sink, caller, reply_to=reply_to, api=api)

        identify_later(
            self._preparer.keys,
            hdrs,
            sink,
            refuse=self.refuse,
            proceed=proceed,
            tasks=self._identifying,
        )

    async def _admit(self, prepared: Prepared, sink: ReplySink, limited: bool) -> None:
        """Wait for capacity (a limited tenant's, then a broker slot), then answer. A cancel
        reaches the request while it waits too."""
        await self._running.cancellable(
            prepared, sink, lambda p, s: self._admitted(p, s, limited=limited)
        )

    async def _admitted(self, prepared: Prepared, sink: ReplySink, *, limited: bool) -> None:
        try:
            if limited:
                count = not prepared.counted
                await self._admission.tenant(
                    prepared, lambda: self._meter.admit(prepared, count=count)
                )
            permit = await self._admission.enter(prepared)
        except BrokerError as exc:
            self._record.count(prepared, "", exc.status)
            meta = queued(self._meta(prepared, "BYPASS"), prepared)
            await sink.error(error_reply(exc), meta, streaming=prepared.stream)
            return
        try:
            hit = self._front.l1(prepared) if limited else None
            if hit is not None:
                await self._serve_hit(sink, prepared, hit, "HIT-L1")
                return
            work = self._stream_miss if prepared.stream else self._whole_miss
            await self._running.traced(prepared, sink, work)
        finally:
            permit.release()

    def _meta(self, prepared: Prepared, cache_status: str) -> dict[str, str]:
        meta = {headers.REQUEST_ID: prepared.request_id, headers.CACHE: cache_status}
        if prepared.key is not None:
            meta[headers.CACHE_KEY] = prepared.key
        return meta

    async def _serve_hit(
        self,
        sink: ReplySink,
        prepared: Prepared,
        hit: CachedReply,
        cache_status: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        self._record.count(prepared, "cache", 200)
        reply = hit_reply(hit)
        if extra:
            reply.headers.update(extra)
        saved = self._meter.saved(prepared, hit)
        if saved is not None:
            reply.headers[headers.COST_SAVED] = f"{saved:.6f}"
        meta = self._meta(prepared, cache_status)
        if self._record.logs_hits:
            self._record.log(
                prepared,
                status=200,
                cache=cache_status,
                reply_headers=reply.headers,
                started=self._record.now(),
            )
        if not prepared.stream:
            await sink.whole(reply, meta)
            return
        meta.update(reply.headers)
        pieces, end = replay(prepared, hit)
        for piece in pieces:
            await sink.chunk(piece, meta)
        await sink.end(end, meta)

    async def _whole_miss(self, prepared: Prepared, sink: ReplySink) -> None:
        started, perf_started = self._clock(), self._record.now()
        outcome = await self._repeats.once(
            prepared,
            lambda: self._front.resolve(prepared, lambda: self._upstream.whole(prepared)),
        )
        reply = outcome.reply
        await self._answer.send(
            prepared,
            sink,
            outcome,
            self._meter.price(reply) if outcome.fresh else None,
            self._meta(prepared, outcome.cache),
            started=started,
            perf_started=perf_started,
            write_back=self._write_back,
            kept=reply,
        )

    async def _stream_miss(self, prepared: Prepared, sink: ReplySink) -> None:
        started = self._clock()
        stored = await self._front.stored(prepared)
        if stored is not None:
            await self._serve_hit(sink, prepared, stored.entry, stored.cache, stored.headers)
            return
        perf_started = self._record.now()
        meta = self._meta(prepared, "MISS" if prepared.key is not None else "BYPASS")
        try:
            first, events, answered_by, deployment = await self._upstream.open_stream(prepared)
        except BrokerError as exc:
            self._record.count(prepared, "", exc.status)
            await sink.error(error_reply(exc), queued(meta, prepared), streaming=True)
            return
        meta.update(answered_by)
        queued(meta, prepared)
        metrics.TIME_TO_FIRST_CHUNK.labels(deployment.provider).observe(
            self._record.now() - perf_started
        )
        kept = stream_log(prepared)
        priced = PricedStream(sink, self._meter, prepared, kept, meta)  # cost on the end
        status = 200
        try:
            async with contextlib.aclosing(events):
                await _relay(first, events, sink=priced, meta=meta, kept=kept)
        except BrokerError as exc:
            status = exc.status
            await sink.error(error_reply(exc), meta, streaming=True)
            if kept.usage is not None:  # what the upstream reported before it failed
                await priced.settle()  # (Anthropic's input tokens, in message_start) is billed
        self._record.count(prepared, deployment.provider, status)
        metrics.duration_histogram(deployment.provider, prepared.model.name).observe(
            self._clock() - started
        )
        self._record.log(
            prepared,
            status=status,
            cache=meta.get(headers.CACHE, "MISS"),
            reply_headers=meta,
            started=perf_started,
            usage=kept.usage,
        )
        if status == 200:
            answer = kept.answer()
            reply = Reply(200, answer.body, dict(meta), splits=answer.splits)
            if answer.whole:  # an answer that cannot be rebuilt is relayed, never stored
                self._front.keep(prepared, reply)
                await self._front.write_back(prepared, reply)
            await priced.settle()


async def _relay(
    first: StreamEvent,
    events: AsyncGenerator[StreamEvent, None],
    *,
    sink: ReplySink,
    meta: dict[str, str],
    kept: StreamLog,
) -> None:
    """Pass a stream's pieces to the sink as they came, keeping the answer they add up to."""
    event: StreamEvent | None = first
    while event is not None:
        if isinstance(event, StreamEnd):
            await sink.end(event, meta)
            return
        if kept.feed(event):
            await sink.chunk(event, meta)
        event = await anext(events, None)
