"""The request path of ``llm.chat``: decode, validate, resolve, cache, coalesce, forward, reply.

The hot path (decode, key, L1 lookup, reply) runs inline in the subscription callback: no
task, no log line, no re-encode. Everything that waits (L2, the provider) runs as a task, so
one broker serves thousands of requests at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.nuid import NUID

from broker import metrics
from broker.cache import (
    CacheDirectives,
    CachedReply,
    NondeterministicPolicy,
    ResponseCache,
    parse_cache_control,
)
from broker.cache_key import cache_key
from broker.config import Config, Deployment, ModelConfig
from broker.errors import (
    BrokerError,
    DeadlineExceeded,
    InvalidRequest,
    ModelNotFound,
    NoProvider,
    RequestTooLarge,
    from_decode_error,
)
from broker.runtime import InFlight
from schemas import ChatRequest, decode_chat_request, headers, request_extras, subjects

__all__ = ["HEADER_ROOM", "ChatPipeline", "Reply"]

log = logging.getLogger("llm_edge.broker")

#: Bytes kept free under the server's max_payload for headers added on the way.
HEADER_ROOM = 4096
DEFAULT_TENANT = "default"
#: Upper bound on a caller-chosen time budget.
MAX_TIMEOUT_S = 3600.0
_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(slots=True)
class Reply:
    """What goes back on the reply subject."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Prepared:
    """A decoded, validated request and what the pipeline decided about it."""

    request: ChatRequest
    model: ModelConfig
    request_id: str
    deadline: float
    key: str | None
    directives: CacheDirectives


class ChatPipeline:
    """Serves ``llm.chat``.

    Args:
        nc: connected NATS client.
        config: models, providers, limits.
        cache: response cache, or ``None`` to disable caching.
        clock: the event loop's monotonic clock, injectable.
    """

    def __init__(
        self,
        nc: Client,
        config: Config,
        cache: ResponseCache | None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._nc = nc
        self._config = config
        self._cache = cache
        self._clock = clock or asyncio.get_running_loop().time
        self._inflight = InFlight(config.broker.max_in_flight)
        self._pending: dict[str, asyncio.Future[tuple[Reply, str]]] = {}
        self._nuid = NUID()
        self._max_body = min(config.broker.max_request_bytes, nc.max_payload - HEADER_ROOM)

    async def on_message(self, msg: Msg) -> None:
        """Subscription callback: answer L1 hits and errors inline, spawn the rest."""
        reply_to = msg.reply
        if not reply_to:
            return
        try:
            prepared = self._prepare(msg)
        except BrokerError as exc:
            rid = (msg.headers or {}).get(headers.REQUEST_ID) or self._new_id()
            await self._send(reply_to, _error_reply(exc), rid, "BYPASS")
            metrics.requests_counter("", exc.status).inc()
            return
        if (
            prepared.key is not None
            and self._cache is not None
            and not prepared.directives.no_cache
        ):
            hit = self._cache.get_l1(prepared.key)
            if hit is not None:
                await self._send(
                    reply_to, _hit_reply(hit), prepared.request_id, "HIT-L1", prepared.key
                )
                metrics.requests_counter(prepared.model.name, 200).inc()
                return
        await self._inflight.spawn(self._handle_miss(msg, reply_to, prepared))

    async def drain(self, grace_s: float) -> None:
        """Wait for requests in flight (bounded)."""
        await self._inflight.drain(grace_s)

    def _new_id(self) -> str:
        return self._nuid.next().decode()

    def _prepare(self, msg: Msg) -> Prepared:
        data = msg.data
        if len(data) > self._max_body:
            raise RequestTooLarge(
                f"request body is {len(data)} bytes; the limit is {self._max_body}"
            )
        try:
            request = decode_chat_request(data)
        except msgspec.MsgspecError as exc:
            raise from_decode_error(exc) from None
        model = self._config.resolve(request.model)
        if model is None:
            raise ModelNotFound(
                f"The model `{request.model}` does not exist or is not configured.", param="model"
            )
        hdrs = msg.headers or {}
        directives = parse_cache_control(hdrs.get(headers.CACHE_CONTROL))
        timeout = _timeout_s(hdrs, model.timeout_s or self._config.broker.default_timeout_s)
        return Prepared(
            request=request,
            model=model,
            request_id=hdrs.get(headers.REQUEST_ID) or self._new_id(),
            deadline=self._clock() + timeout,
            key=self._key(data, request, model, hdrs, directives),
            directives=directives,
        )

    def _key(
        self,
        data: bytes,
        request: ChatRequest,
        model: ModelConfig,
        hdrs: dict[str, str],
        directives: CacheDirectives,
    ) -> str | None:
        """The cache key, or ``None`` when this request is not cached at all."""
        if self._cache is None or (directives.no_cache and directives.no_store):
            return None
        settings = self._cache.settings
        if settings.nondeterministic is NondeterministicPolicy.BYPASS and _sampled(request):
            return None
        namespace = hdrs.get(headers.CACHE_NAMESPACE, "default")
        if not _NAMESPACE.match(namespace):
            raise InvalidRequest(
                f"{headers.CACHE_NAMESPACE} must be 1-64 of A-Z a-z 0-9 _ -",
                param=headers.CACHE_NAMESPACE,
            )
        tenant = "shared" if settings.shared_across_tenants else DEFAULT_TENANT
        try:
            extras = request_extras(data)
        except msgspec.MsgspecError as exc:
            raise from_decode_error(exc) from None
        return cache_key(request, extras, model.name, f"{tenant}:{namespace}")

    async def _handle_miss(self, msg: Msg, reply_to: str, prepared: Prepared) -> None:
        metrics.IN_FLIGHT.inc()
        started = self._clock()
        try:
            reply, cache_status = await self._resolve(msg, prepared)
        except Exception:
            log.exception("request %s failed", prepared.request_id)
            reply, cache_status = _error_reply(BrokerError("internal broker error")), "MISS"
        finally:
            metrics.IN_FLIGHT.dec()
        await self._send(reply_to, reply, prepared.request_id, cache_status, prepared.key)
        metrics.requests_counter(prepared.model.name, reply.status).inc()
        if cache_status == "HIT-L2" or headers.COALESCED in reply.headers:
            return
        provider = reply.headers.get(headers.PROVIDER, "")
        metrics.REQUEST_DURATION.labels(provider).observe(self._clock() - started)
        entry = self._storable(prepared, reply)
        if entry is not None and self._cache is not None and prepared.key is not None:
            await self._cache.store_l2(prepared.key, entry, prepared.directives.max_age)

    async def _resolve(self, msg: Msg, prepared: Prepared) -> tuple[Reply, str]:
        """Coalesce with an identical request in flight, else L2, else the provider."""
        key = prepared.key
        if key is None or self._cache is None:
            return await self._forward_or_error(msg, prepared), "BYPASS"
        if prepared.directives.no_cache:
            reply = await self._forward_or_error(msg, prepared)
            self._store_l1(prepared, reply)
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
        result = (_error_reply(BrokerError("internal broker error")), "MISS")
        try:
            hit = await self._cache.get_l2(key)
            if hit is not None:
                result = (_hit_reply(hit), "HIT-L2")
            else:
                reply = await self._forward_or_error(msg, prepared)
                self._store_l1(prepared, reply)  # before an identical request can miss again
                result = (reply, "MISS")
        finally:
            del self._pending[key]
            future.set_result(result)  # followers get the leader's answer, whatever it was
        return result

    def _storable(self, prepared: Prepared, reply: Reply) -> CachedReply | None:
        """The entry to cache for a reply, or ``None`` (errors and no-store are never cached)."""
        if reply.status != 200 or prepared.key is None or prepared.directives.no_store:
            return None
        return CachedReply(
            body=reply.body,
            provider=reply.headers.get(headers.PROVIDER, ""),
            deployment=reply.headers.get(headers.DEPLOYMENT, ""),
        )

    def _store_l1(self, prepared: Prepared, reply: Reply) -> None:
        entry = self._storable(prepared, reply)
        if entry is not None and self._cache is not None and prepared.key is not None:
            self._cache.store_l1(prepared.key, entry, prepared.directives.max_age)

    async def _forward_or_error(self, msg: Msg, prepared: Prepared) -> Reply:
        try:
            return await self._forward(msg, prepared)
        except BrokerError as exc:
            return _error_reply(exc)

    async def _forward(self, msg: Msg, prepared: Prepared) -> Reply:
        """Send the request to the deployment's provider workers and wait for the answer."""
        deployment = self._choose(prepared.model)
        remaining = prepared.deadline - self._clock()
        if remaining <= 0:
            raise DeadlineExceeded("the request's deadline passed before it reached a provider")
        forward_headers = {
            headers.TIMEOUT_MS: str(int(remaining * 1000)),
            headers.UPSTREAM_MODEL: deployment.model,
            headers.REQUEST_ID: prepared.request_id,
        }
        trace = (msg.headers or {}).get(headers.TRACEPARENT)
        if trace:
            forward_headers[headers.TRACEPARENT] = trace
        subject = subjects.provider_subject(deployment.provider)
        try:
            answer = await self._nc.request(
                subject, msg.data, timeout=remaining, headers=forward_headers
            )
        except NoRespondersError:
            raise NoProvider(
                f"no worker is serving provider `{deployment.provider}`", retry_after=1
            ) from None
        except NatsTimeout:
            raise DeadlineExceeded(
                f"provider `{deployment.provider}` did not answer within the deadline "
                f"({remaining:.1f}s)"
            ) from None
        answer_headers = answer.headers or {}
        reply_headers = {
            headers.PROVIDER: deployment.provider,
            headers.DEPLOYMENT: deployment.name,
            headers.ATTEMPTS: "1",
        }
        for name in (headers.RETRY_AFTER, headers.RETRYABLE):
            if name in answer_headers:
                reply_headers[name] = answer_headers[name]
        return Reply(int(answer_headers.get(headers.STATUS, "200")), answer.data, reply_headers)

    def _choose(self, model: ModelConfig) -> Deployment:
        return model.deployments[0]

    async def _send(
        self,
        reply_to: str,
        reply: Reply,
        request_id: str,
        cache_status: str,
        key: str | None = None,
    ) -> None:
        hdrs = {
            headers.STATUS: str(reply.status),
            headers.REQUEST_ID: request_id,
            headers.CACHE: cache_status,
        }
        if key is not None:
            hdrs[headers.CACHE_KEY] = key
        if reply.headers:
            hdrs.update(reply.headers)
        await self._nc.publish(reply_to, reply.body, headers=hdrs)


def _error_reply(exc: BrokerError) -> Reply:
    extra = {} if exc.retry_after is None else {headers.RETRY_AFTER: f"{exc.retry_after:g}"}
    return Reply(exc.status, exc.envelope(), extra)


def _hit_reply(hit: CachedReply) -> Reply:
    return Reply(
        200, hit.body, {headers.PROVIDER: hit.provider, headers.DEPLOYMENT: hit.deployment}
    )


def _timeout_s(hdrs: dict[str, str], default: float) -> float:
    raw = hdrs.get(headers.TIMEOUT_MS)
    if raw is None:
        return default
    try:
        value = float(raw) / 1000
    except ValueError:
        raise InvalidRequest(
            f"{headers.TIMEOUT_MS} must be a number of milliseconds", param=headers.TIMEOUT_MS
        ) from None
    if value <= 0:
        raise InvalidRequest(f"{headers.TIMEOUT_MS} must be positive", param=headers.TIMEOUT_MS)
    return min(value, MAX_TIMEOUT_S)


def _sampled(request: ChatRequest) -> bool:
    """Whether the answer is a random sample (OpenAI's default temperature is 1)."""
    temperature = 1.0 if request.temperature is None else request.temperature
    return temperature > 0 and request.seed is None
