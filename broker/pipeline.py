"""The request path: prepare, cache, coalesce, forward, reply (whole or streamed).

The hot path (decode, key, L1 lookup, reply) runs inline in the subscription callback: no
task, no log line, no re-encode. Everything that waits (L2, the provider) runs as a task, so
one broker serves thousands of requests at once. A request id published on ``llm.cancel``
cancels that request's task (and, in the worker, its upstream call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.nuid import NUID
from opentelemetry.trace import SpanKind

from broker import metrics
from broker.anthropic import to_openai_request
from broker.cache.response import CachedReply, ResponseCache
from broker.config import Config, Deployment
from broker.control import model_list
from broker.errors import BrokerError, InvalidRequest, RequestTooLarge, Unauthorized
from broker.replies.assemble import StreamAssembler, replay_chunks
from broker.replies.sinks import AnthropicSink, NatsSink, ReplySink
from broker.request import Prepared, Reply, RequestPreparer, error_reply, hit_reply
from broker.tenancy.budget import BudgetExceeded, SpendLedger, cost_of, usage_of
from broker.tenancy.limits import RateLimiter, rate_limited
from broker.tenancy.pii_restore import RestoringSink
from broker.tenancy.tenants import TenantConfig
from broker.upstream.forward import Forwarder, StreamEvent
from broker.upstream.resilience import Resilient, with_attempt_headers
from broker.upstream.router import Router
from edge_runtime.logs import request_line
from edge_runtime.process import InFlight
from edge_runtime.tracing import span
from schemas import ChatCompletion, ChatCompletionChunk, StreamEnd, Usage, headers, subjects

__all__ = ["ChatPipeline"]

log = logging.getLogger("llm_edge.broker")

_encoder = msgspec.json.Encoder()
_completion_decoder = msgspec.json.Decoder(ChatCompletion)
_INTERNAL = BrokerError("internal broker error")
_Opened = tuple[StreamEvent, AsyncGenerator[StreamEvent, None]]
_Priced = tuple[Deployment | None, float, Usage | None]


class ChatPipeline:
    """Serves chat requests from any entry point through a :class:`ReplySink`.

    Args:
        nc: connected NATS client.
        config: models, providers, limits.
        cache: response cache, or ``None`` to disable caching.
        clock: the event loop's monotonic clock, injectable.
        sleep: waits between retries, injectable.
        limiter: per-tenant rate limits (in-process counting when not given).
        ledger: per-tenant spend (in-process sums when not given).
    """

    def __init__(
        self,
        nc: Client,
        config: Config,
        cache: ResponseCache | None,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        limiter: RateLimiter | None = None,
        ledger: SpendLedger | None = None,
    ) -> None:
        self._nc = nc
        self._cache = cache
        self._clock = clock or asyncio.get_running_loop().time
        self._inflight = InFlight(config.broker.max_in_flight)
        self._pending: dict[str, asyncio.Future[tuple[Reply, str]]] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._nuid = NUID()
        #: When the last interactive request arrived (the batch runner yields to them).
        self.last_interactive = 0.0
        self._forwarder = Forwarder(nc, self._clock)
        self.limiter = limiter or RateLimiter(None)
        self.ledger = ledger or SpendLedger(None)
        self._request_log = config.broker.request_log
        self._tenant_metrics = config.broker.tenant_metrics
        self._tenant_subjects = config.nats_tenant_subjects
        self._tenants = config.tenants
        self._models = _encoder.encode(model_list(config))
        self._deployments = {d.name: d for m in config.models.values() for d in m.deployments}
        router = Router(config.breaker, clock=self._clock)
        self.resilient = Resilient(config, router, self._clock, sleep=sleep)
        self.preparer = RequestPreparer(
            config,
            cache.settings if cache is not None else None,
            min(config.broker.max_request_bytes, nc.max_payload - headers.HEADER_ROOM),
            self._clock,
            self._new_id,
        )

    @property
    def in_flight(self) -> int:
        """Requests being worked on (cache misses, limited tenants)."""
        return len(self._inflight)

    def _new_id(self) -> str:
        return self._nuid.next().decode()

    async def on_message(self, msg: Msg) -> None:
        """``llm.chat`` subscription callback."""
        self.last_interactive = self._clock()
        if msg.reply:
            await self.handle(msg.data, msg.headers or {}, NatsSink(self._nc, msg.reply))

    async def on_tenant_message(self, msg: Msg) -> None:
        """``llm.tenant.<tenant>.chat``: the subject names the tenant (NATS permissions)."""
        self.last_interactive = self._clock()
        if not msg.reply:
            return
        hdrs = msg.headers or {}
        sink = NatsSink(self._nc, msg.reply)
        try:
            tenant = self._subject_tenant(msg.subject)
        except BrokerError as exc:
            await self._refuse(exc, hdrs, sink)
            return
        await self.handle(msg.data, hdrs, sink, tenant)

    def _subject_tenant(self, subject: str) -> TenantConfig:
        """The configured tenant a tenant-bound subject names, or 401."""
        if not self._tenant_subjects:
            raise Unauthorized(
                "Tenant subjects are off: set auth.nats_tenant_subjects = true (and restrict "
                "who may publish to them in the NATS server's permissions)."
            )
        tenant = self._tenants.get(subjects.tenant_of(subject))
        if tenant is None:
            raise Unauthorized(f"No tenant is configured for subject {subject!r}.")
        return tenant

    async def _refuse(self, exc: BrokerError, hdrs: dict[str, str], sink: ReplySink) -> None:
        """Answer a request refused before it was decoded."""
        meta = {
            headers.REQUEST_ID: hdrs.get(headers.REQUEST_ID) or self._new_id(),
            headers.CACHE: "BYPASS",
        }
        await sink.error(error_reply(exc), meta, streaming=False)
        metrics.requests_counter("", "", exc.status).inc()

    async def on_messages(self, msg: Msg) -> None:
        """``llm.messages`` (and ``llm.tenant.<tenant>.messages``): the Anthropic Messages API."""
        self.last_interactive = self._clock()
        if not msg.reply:
            return
        hdrs = msg.headers or {}
        tenant: TenantConfig | None = None
        try:
            if len(msg.data) > self.preparer.max_body:
                raise RequestTooLarge(
                    f"request body is {len(msg.data)} bytes; the limit is {self.preparer.max_body}"
                )
            if msg.subject != subjects.MESSAGES:
                tenant = self._subject_tenant(msg.subject)
            body, model = to_openai_request(msg.data)
        except (BrokerError, msgspec.MsgspecError, ValueError, TypeError, AttributeError) as exc:
            failure = exc if isinstance(exc, BrokerError) else InvalidRequest(str(exc))
            meta = {headers.REQUEST_ID: hdrs.get(headers.REQUEST_ID) or self._new_id()}
            sink = AnthropicSink(self._nc, msg.reply, "")
            await sink.error(error_reply(failure), meta, streaming=False)
            return
        await self.handle(body, hdrs, AnthropicSink(self._nc, msg.reply, model), tenant)

    async def on_models(self, msg: Msg) -> None:
        """``llm.models``: the model list, for callers with a key when keys are required."""
        if not msg.reply:
            return
        hdrs = msg.headers or {}
        try:
            self.preparer.keys.authenticate(hdrs.get(headers.AUTHORIZATION))
        except Unauthorized as exc:
            await self._refuse(exc, hdrs, NatsSink(self._nc, msg.reply))
            return
        await self._nc.publish(msg.reply, self._models, headers={headers.STATUS: "200"})

    async def on_cancel(self, msg: Msg) -> None:
        """``llm.cancel`` subscription callback: the body is a request id."""
        task = self._running.get(msg.data.decode(errors="replace"))
        if task is not None:
            task.cancel()

    async def handle(
        self,
        data: bytes,
        hdrs: dict[str, str],
        sink: ReplySink,
        tenant: TenantConfig | None = None,
    ) -> None:
        """Answer L1 hits and invalid requests inline; spawn a task for the rest.

        ``tenant`` is set when the subject named it; otherwise the API key decides.
        """
        try:
            prepared = self.preparer.prepare(data, hdrs, tenant)
        except BrokerError as exc:
            await self._refuse(exc, hdrs, sink)
            return
        if prepared.restore:  # the caller gets its redacted values back; the cache does not
            sink = RestoringSink(sink, prepared.restore)
        tenant = prepared.tenant
        if tenant.rpm or tenant.tpm or tenant.budget_usd is not None:  # waits on Redis
            await self._inflight.spawn(self._limited(prepared, sink))
            return
        if prepared.reads_cache and self._cache is not None:
            hit = self._cache.get_l1(prepared.key)  # type: ignore[arg-type]  # reads_cache: key set
            if hit is not None:
                await self._serve_hit(sink, prepared, hit, "HIT-L1")
                return
        await self._inflight.spawn(self._miss(prepared, sink))

    async def _limited(self, prepared: Prepared, sink: ReplySink) -> None:
        """Check the tenant's budget and count the request against its limits, then answer."""
        tenant = prepared.tenant
        if tenant.budget_usd is not None:
            try:
                await self.ledger.check(tenant.name, tenant.budget_usd, tenant.budget_period)
            except BudgetExceeded as exc:
                self._count(prepared, "", exc.status)
                await sink.error(
                    error_reply(exc), self._meta(prepared, "BYPASS"), streaming=prepared.stream
                )
                return
        request = prepared.request
        estimate = len(prepared.data) // 4 + (
            request.max_completion_tokens or request.max_tokens or 0
        )
        prepared.token_estimate = estimate
        usage = await self.limiter.take(tenant.name, estimate, tenant.rpm, tenant.tpm)
        if not usage.allowed:
            self._count(prepared, "", 429)
            failure = rate_limited(usage, tenant.rpm, tenant.tpm)
            await sink.error(
                error_reply(failure), self._meta(prepared, "BYPASS"), streaming=prepared.stream
            )
            return
        if prepared.reads_cache and self._cache is not None:
            hit = self._cache.get_l1(prepared.key)  # type: ignore[arg-type]
            if hit is not None:
                await self._serve_hit(sink, prepared, hit, "HIT-L1")
                return
        await self._miss(prepared, sink)

    async def drain(self, grace_s: float) -> None:
        """Wait for requests in flight (bounded)."""
        await self._inflight.drain(grace_s)

    def _count(self, prepared: Prepared, provider: str, status: int) -> None:
        """Count an answered request in ``llm_edge_requests_total``."""
        tenant = prepared.tenant.name if self._tenant_metrics else ""
        metrics.requests_counter(provider, prepared.model.name, status, tenant).inc()

    def _meta(self, prepared: Prepared, cache_status: str) -> dict[str, str]:
        meta = {headers.REQUEST_ID: prepared.request_id, headers.CACHE: cache_status}
        if prepared.key is not None:
            meta[headers.CACHE_KEY] = prepared.key
        return meta

    async def _serve_hit(
        self, sink: ReplySink, prepared: Prepared, hit: CachedReply, cache_status: str
    ) -> None:
        self._count(prepared, "cache", 200)
        reply = hit_reply(hit)
        deployment = self._deployments.get(hit.deployment)
        if deployment is not None and (deployment.input_price or deployment.output_price):
            reply.headers[headers.COST_SAVED] = f"{cost_of(hit.body, deployment)[0]:.6f}"
        meta = self._meta(prepared, cache_status)
        if self._request_log == "all":
            self._log(
                prepared,
                status=200,
                cache=cache_status,
                reply_headers=reply.headers,
                started=time.perf_counter(),
            )
        if not prepared.stream:
            await sink.whole(reply, meta)
            return
        meta.update(reply.headers)
        completion = _completion_decoder.decode(hit.body)
        for chunk in replay_chunks(completion, include_usage=prepared.include_usage):
            await sink.chunk(chunk, meta)
        finish = completion.choices[0].finish_reason if completion.choices else None
        await sink.end(StreamEnd(usage=completion.usage, finish_reason=finish), meta)

    async def _miss(self, prepared: Prepared, sink: ReplySink) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running[prepared.request_id] = task
        metrics.IN_FLIGHT.inc()
        parent = {"traceparent": prepared.trace} if prepared.trace else None
        try:
            with span(
                "llm.chat",
                parent=parent,
                kind=SpanKind.CONSUMER,
                attributes={"llm.model": prepared.model.name, "llm.tenant": prepared.tenant.name},
            ):
                if prepared.stream:
                    await self._stream_miss(prepared, sink)
                else:
                    await self._whole_miss(prepared, sink)
        except asyncio.CancelledError:
            pass  # the caller cancelled (llm.cancel): nobody is waiting for an answer
        except Exception:
            # a bug must still answer the caller, never leave it waiting for its timeout
            log.exception("request %s failed", prepared.request_id)
            with contextlib.suppress(Exception):
                meta = self._meta(prepared, "MISS")
                await sink.error(error_reply(_INTERNAL), meta, streaming=prepared.stream)
        finally:
            metrics.IN_FLIGHT.dec()
            self._running.pop(prepared.request_id, None)

    # -- whole replies -------------------------------------------------------------------

    def _log(
        self,
        prepared: Prepared,
        *,
        status: int,
        cache: str,
        reply_headers: dict[str, str],
        started: float,
        usage: Usage | None = None,
    ) -> None:
        """The request's one log line (ids, routing, cache, tokens: never content)."""
        if self._request_log == "off":
            return
        fields: dict[str, object] = {
            "request_id": prepared.request_id,
            "tenant": prepared.tenant.name,
            "model": prepared.model.name,
            "status": status,
            "cache": cache,
            "deployment": reply_headers.get(headers.DEPLOYMENT, ""),
            "attempts": reply_headers.get(headers.ATTEMPTS, "0"),
            "stream": prepared.stream,
        }
        if usage is not None:
            fields["prompt_tokens"] = usage.prompt_tokens
            fields["completion_tokens"] = usage.completion_tokens
        request_line(fields, started)

    async def _whole_miss(self, prepared: Prepared, sink: ReplySink) -> None:
        started = self._clock()
        perf_started = time.perf_counter()
        try:
            reply, cache_status = await self._resolve(prepared)
        except Exception:
            log.exception("request %s failed", prepared.request_id)
            reply, cache_status = error_reply(_INTERNAL), "MISS"
        upstream = cache_status != "HIT-L2" and headers.COALESCED not in reply.headers
        # A budgeted tenant's spend is recorded before the reply, so its next request sees it.
        budgeted = upstream and prepared.tenant.budget_usd is not None
        priced = self._price(reply) if upstream else (None, 0.0, None)
        if budgeted:
            await self._charge(prepared, priced)
        await sink.whole(reply, self._meta(prepared, cache_status))
        provider = reply.headers.get(headers.PROVIDER, "")
        self._count(prepared, provider if upstream else "cache", reply.status)
        if not upstream:
            return
        elapsed = self._clock() - started
        metrics.REQUEST_DURATION.labels(provider).observe(elapsed)
        if prepared.upstream_s:
            metrics.OVERHEAD.observe(max(0.0, elapsed - prepared.upstream_s))
        await self._store_l2(prepared, self._storable(prepared, reply))
        if not budgeted:
            await self._charge(prepared, priced)
        if self._request_log != "off":
            usage = usage_of(reply.body) if reply.status == 200 else None
            self._log(
                prepared,
                status=reply.status,
                cache=cache_status,
                reply_headers=reply.headers,
                started=perf_started,
                usage=usage,
            )

    async def _resolve(self, prepared: Prepared) -> tuple[Reply, str]:
        """Coalesce with an identical request in flight, else L2, else the provider."""
        key = prepared.key
        if key is None or self._cache is None:
            return await self._forward_or_error(prepared), "BYPASS"
        if prepared.directives.no_cache:
            reply = await self._forward_or_error(prepared)
            self._store_l1(prepared, self._storable(prepared, reply))
            return reply, "MISS"
        leader = self._pending.get(key)
        if leader is not None:
            metrics.CACHE_COALESCED.inc()
            shared, status = await asyncio.shield(leader)
            return Reply(
                shared.status, shared.body, {**shared.headers, headers.COALESCED: "1"}
            ), status
        future: asyncio.Future[tuple[Reply, str]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        result = (error_reply(_INTERNAL), "MISS")
        try:
            with span("cache.l2"):
                hit = await self._cache.get_l2(key)
            if hit is not None:
                result = (hit_reply(hit), "HIT-L2")
            else:
                reply = await self._forward_or_error(prepared)
                # into L1 before an identical request can miss again
                self._store_l1(prepared, self._storable(prepared, reply))
                result = (reply, "MISS")
        finally:
            del self._pending[key]
            future.set_result(result)  # followers get the leader's answer, whatever it was
        return result

    async def _forward_or_error(self, prepared: Prepared) -> Reply:
        async def attempt(deployment: Deployment, deadline: float) -> Reply:
            return await self._forwarder.whole(prepared, deployment, deadline)

        try:
            with span("route"):
                reply, deployment, attempts = await self.resilient.run(prepared, attempt)
        except BrokerError as exc:
            return error_reply(exc)
        return with_attempt_headers(reply, deployment, attempts)

    # -- streams -------------------------------------------------------------------------

    async def _open_stream(self, prepared: Prepared) -> tuple[_Opened, Deployment, int]:
        """A stream whose first event has arrived: failures before it are retried/failed over."""

        async def attempt(deployment: Deployment, deadline: float) -> _Opened:
            events = self._forwarder.stream(prepared, deployment, deadline)
            try:
                first = await anext(events)
            except BaseException:
                await events.aclose()
                raise
            return first, events

        return await self.resilient.run(prepared, attempt)

    async def _stream_miss(self, prepared: Prepared, sink: ReplySink) -> None:
        if prepared.reads_cache and self._cache is not None:
            hit = await self._cache.get_l2(prepared.key)  # type: ignore[arg-type]
            if hit is not None:
                await self._serve_hit(sink, prepared, hit, "HIT-L2")
                return
        perf_started = time.perf_counter()
        meta = self._meta(prepared, "MISS" if prepared.key is not None else "BYPASS")
        try:
            (first, events), deployment, attempts = await self._open_stream(prepared)
        except BrokerError as exc:
            self._count(prepared, "", exc.status)
            await sink.error(error_reply(exc), meta, streaming=True)
            return
        meta.update(with_attempt_headers(Reply(200, b""), deployment, attempts).headers)
        metrics.TIME_TO_FIRST_CHUNK.labels(deployment.provider).observe(
            time.perf_counter() - perf_started
        )
        assembler = StreamAssembler()
        status = 200
        try:
            async with contextlib.aclosing(events):
                await self._relay(
                    first, events, prepared=prepared, sink=sink, meta=meta, assembler=assembler
                )
        except BrokerError as exc:
            status = exc.status
            self.resilient.router.stats(deployment).breaker.record(False)  # broke mid-stream
            await sink.error(error_reply(exc), meta, streaming=True)
        self._count(prepared, deployment.provider, status)
        self._log(
            prepared,
            status=status,
            cache=meta.get(headers.CACHE, "MISS"),
            reply_headers=meta,
            started=perf_started,
            usage=assembler.usage,
        )
        if status == 200:
            body = _encoder.encode(assembler.completion())
            entry = self._storable(prepared, Reply(200, body, meta))
            self._store_l1(prepared, entry)
            await self._store_l2(prepared, entry)
            await self._charge(prepared, self._price(Reply(200, body, dict(meta))))

    @staticmethod
    async def _relay(
        first: StreamEvent,
        events: AsyncGenerator[StreamEvent, None],
        *,
        prepared: Prepared,
        sink: ReplySink,
        meta: dict[str, str],
        assembler: StreamAssembler,
    ) -> None:
        event: StreamEvent | None = first
        while event is not None:
            if isinstance(event, ChatCompletionChunk):
                assembler.feed(event)
                if event.choices or prepared.include_usage:
                    await sink.chunk(event, meta)
            else:
                await sink.end(event, meta)
                return
            event = await anext(events, None)

    def _price(self, reply: Reply) -> _Priced:
        """The deployment, cost and usage of an upstream answer; names the cost in a header."""
        if reply.status != 200:
            return None, 0.0, None
        deployment = self._deployments.get(reply.headers.get(headers.DEPLOYMENT, ""))
        if deployment is None:
            return None, 0.0, None
        cost, usage = cost_of(reply.body, deployment)
        if deployment.input_price or deployment.output_price:
            reply.headers[headers.COST] = f"{cost:.6f}"
        return deployment, cost, usage

    async def _charge(self, prepared: Prepared, priced: _Priced) -> None:
        """Count tokens, true up the tenant's tpm, add the cost to its spend."""
        deployment, cost, usage = priced
        if deployment is None:
            return
        tenant = prepared.tenant
        model, provider = prepared.model.name, deployment.provider
        label = tenant.name if self._tenant_metrics else ""
        if usage is not None:
            metrics.TOKENS.labels(provider, model, "prompt", label).inc(usage.prompt_tokens)
            metrics.TOKENS.labels(provider, model, "completion", label).inc(usage.completion_tokens)
            if tenant.tpm:  # the estimate was counted up front
                await self.limiter.settle(tenant.name, usage.total_tokens - prepared.token_estimate)
        if cost > 0:
            metrics.COST.labels(provider, model, label).inc(cost)
        await self.ledger.add(tenant.name, tenant.budget_period, cost, model)

    # -- shared --------------------------------------------------------------------------

    def _storable(self, prepared: Prepared, reply: Reply) -> CachedReply | None:
        """The entry to cache for a reply, or ``None`` (errors and no-store are never cached)."""
        if reply.status != 200 or prepared.key is None or prepared.directives.no_store:
            return None
        return CachedReply(
            body=reply.body,
            provider=reply.headers.get(headers.PROVIDER, ""),
            deployment=reply.headers.get(headers.DEPLOYMENT, ""),
        )

    def _store_l1(self, prepared: Prepared, entry: CachedReply | None) -> None:
        if entry is not None and self._cache is not None and prepared.key is not None:
            self._cache.store_l1(prepared.key, entry, prepared.directives.max_age)

    async def _store_l2(self, prepared: Prepared, entry: CachedReply | None) -> None:
        if entry is not None and self._cache is not None and prepared.key is not None:
            await self._cache.store_l2(prepared.key, entry, prepared.directives.max_age)
