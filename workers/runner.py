"""Serves one provider on NATS: consumes ``llm.provider.<name>`` in the workers' queue group
(and ``llm.provider.<name>.embeddings`` when its adapter computes embeddings).

A request speaks the API its caller spoke (``Llm-Api``): chat completions (the provider's own
calls), or the Anthropic Messages API and its token counts (natively, or translated by
:mod:`workers.messages`); its answer, and its errors, are in that API's shapes. A call on the
embeddings subject is an OpenAI embeddings request, whatever its headers say.

Whole requests get one reply, and so does every embeddings call. Streaming requests get a
sequence of messages on the reply subject: ``Llm-Stream: chunk`` (a ``chat.completion.chunk``
as the upstream sent it, or an Anthropic event named by ``Llm-Event``), then ``end`` (a
:class:`schemas.StreamEnd`) or ``error`` (an error envelope); each carries ``Llm-Seq``.
A request id published on ``llm.cancel`` with the call's reply subject as its reply (what the
broker does when its caller leaves) cancels that call here, closing the upstream call; a
cancel without it is ignored, so nobody else can stop the call.

A chunk whose text is large (a whole answer in one upstream event) goes as several
consecutive chunks (:mod:`workers.split`). A message over the server's ``max_payload`` is
never published (the server would close our connection): a whole answer is replaced by a 502
``reply_too_large``, and a stream stops there and ends with that ``error``.

A request that carries ``Llm-Keepalive-Ms`` gets an empty ``Llm-Stream: keepalive`` message
at least that often while it is in flight: the broker takes a silent worker for dead and
fails the call over at once instead of waiting for the deadline.

The upstream's rate-limit headers (``x-ratelimit-*``) go back on the call's last message (a
whole reply, a stream's ``end`` or ``error``): brokers share the provider's limits by them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.service import Service
from opentelemetry.trace import SpanKind

from edge_runtime.discovery import register
from edge_runtime.health import Health
from edge_runtime.lifecycle import serve
from edge_runtime.process import (
    PENDING_BYTES_LIMIT,
    PENDING_MSGS_LIMIT,
    STOP_STEP_S,
    InFlight,
    fits,
    settle,
)
from edge_runtime.tracing import span
from schemas import StreamEnd, error_body, headers, subjects
from schemas.api import Api
from workers.base import Embedder, Provider, ProviderRequest
from workers.batch_service import BatchService
from workers.batches import Batched
from workers.calls import ApiCalls, failure
from workers.errors import ReplyTooLarge
from workers.fanout import Fanout
from workers.metrics import upstream_call
from workers.once import FULL, JOINED, MAX_STREAM_LOG_BYTES, Answer, OnceClaims, StreamCall
from workers.response_service import ResponseService, UpstreamResponses
from workers.upstream_http import noted_limits

__all__ = ["DEFAULT_WORKER_TIMEOUT_S", "WorkerService", "serve_worker", "timeout_from"]

log = logging.getLogger("llm_edge.worker")

#: Used when a request reaches a worker without a time budget (a direct producer).
DEFAULT_WORKER_TIMEOUT_S = 60.0

_encoder = msgspec.json.Encoder()
#: How often the keepalive ticker looks at the calls in flight.
KEEPALIVE_TICK_S = 0.25
_KEEPALIVE = {headers.STREAM: "keepalive"}
#: Sends one message of a call's reply: (status, body, extra headers).
_Send = Callable[[int, bytes, dict[str, str]], Awaitable[None]]


def _keepalive_s(hdrs: dict[str, str]) -> float | None:
    raw = hdrs.get(headers.KEEPALIVE_MS)
    if not raw:
        return None
    try:
        return max(float(raw) / 1000, KEEPALIVE_TICK_S)
    except ValueError:
        return None


def timeout_from(hdrs: dict[str, str] | None, default: float) -> float:
    """The remaining budget in seconds from the ``Llm-Timeout-Ms`` header."""
    if hdrs and (raw := hdrs.get(headers.TIMEOUT_MS)):
        try:
            return max(0.0, float(raw) / 1000)
        except ValueError:
            return default
    return default


class WorkerService:
    """Runs a provider's calls concurrently, one task per request.

    Args:
        nc: connected NATS client.
        provider: the adapter.
        max_concurrency: calls in flight in this process.
    """

    def __init__(self, nc: Client, provider: Provider, *, max_concurrency: int = 1024) -> None:
        self._nc = nc
        self._provider = provider
        self._inflight = InFlight(max_concurrency)
        self._subs: list[Subscription] = []
        #: (reply subject, request id) -> what a cancel of it does
        self._running: dict[tuple[str, str], Callable[[], object]] = {}
        self.subject = subjects.provider_subject(provider.name)
        #: Where embeddings calls arrive, when the adapter computes embeddings.
        self.embeddings_subject: str | None = None
        if isinstance(provider, Embedder):
            self.embeddings_subject = subjects.provider_embeddings_subject(provider.name)
        self._micro: Service | None = None
        #: reply subject -> (keepalive interval, when the last message went there)
        self._alive: dict[str, tuple[float, float]] = {}
        #: Calls answered and, of those, failed (the console's requests/s and errors).
        self.answered = 0
        self.errors = 0
        self._ticker: asyncio.Task[None] | None = None
        self._once = OnceClaims(nc, provider.name)
        self._calls = ApiCalls(provider)
        #: the provider's own Batch API on ``llm.provider.<name>.batch``, when it has one
        self.batches: BatchService | None = None
        if isinstance(provider, Batched) and (native := provider.batches()) is not None:
            self.batches = BatchService(nc, provider.name, native)
        #: the upstream's own background responses on ``llm.provider.<name>.responses``
        self.responses: ResponseService | None = None
        if isinstance(provider, UpstreamResponses) and provider.native_responses:
            self.responses = ResponseService(nc, provider.name, provider)

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """The provider's queue subscriptions and ``llm.cancel``."""
        return tuple(self._subs)

    async def start(self) -> None:
        """Subscribe in the workers' queue group, and to cancellations."""
        await self._once.bind()  # before the first call, so none waits for the lookup
        served: dict[str, Callable[[Msg], Awaitable[None]]] = {self.subject: self._on_msg}
        if self.embeddings_subject is not None:
            served[self.embeddings_subject] = self._on_embeddings
        self._subs = [
            *[
                await self._nc.subscribe(
                    subject,
                    queue=subjects.WORKER_QUEUE,
                    cb=cb,
                    pending_msgs_limit=PENDING_MSGS_LIMIT,
                    pending_bytes_limit=PENDING_BYTES_LIMIT,
                )
                for subject, cb in served.items()
            ],
            await self._nc.subscribe(subjects.CANCEL, cb=self._on_cancel),
        ]
        self._ticker = asyncio.create_task(self._keepalives(), name="keepalives")
        if self.batches is not None:
            await self.batches.start()
            served[self.batches.subject] = self._on_msg  # listed for discovery only
        if self.responses is not None:
            await self.responses.start()
            served[self.responses.subject] = self._on_msg  # listed for discovery only
        self._micro = await register(
            self._nc,
            f"worker-{self._provider.name}",
            list(served),
            lambda: {
                "in_flight": len(self._inflight),
                "provider": self._provider.name,
                "requests": self.answered,
                "errors": self.errors,
            },
        )

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop taking requests, let running ones finish (bounded), release the provider."""
        if self._micro is not None:
            await settle(self._micro.stop(), STOP_STEP_S)
        for sub in self._subs:  # graceful: pending messages are still served
            await settle(sub.drain(), STOP_STEP_S)  # type: ignore[no-untyped-call]
        self._subs = []
        if self.batches is not None:
            await self.batches.stop(drain_timeout)
        if self.responses is not None:
            await self.responses.stop(drain_timeout)
        await self._inflight.drain(drain_timeout)
        if self._ticker is not None:
            self._ticker.cancel()
        await settle(self._provider.aclose(), STOP_STEP_S)

    async def _keepalives(self) -> None:
        """One ticker for every call in flight (no task per request)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(KEEPALIVE_TICK_S)
            now = loop.time()
            for reply, (every, last) in list(self._alive.items()):
                if now - last >= every:
                    self._alive[reply] = (every, now)
                    with contextlib.suppress(Exception):  # reconnecting: the next tick retries
                        await self._nc.publish(reply, b"", headers=_KEEPALIVE)

    async def _on_cancel(self, msg: Msg) -> None:
        """A cancel from the caller: it names the call's reply subject as its reply."""
        cancel = self._running.get((msg.reply, msg.data.decode(errors="replace")))
        if cancel is not None:
            cancel()

    async def _on_msg(self, msg: Msg) -> None:
        await self._inflight.spawn(self._handle(msg))

    async def _on_embeddings(self, msg: Msg) -> None:
        await self._inflight.spawn(self._handle(msg, Api.EMBEDDINGS))

    def _track(
        self, reply: str, request_id: str, every: float | None, cancel: Callable[[], object]
    ) -> None:
        """Answer cancels of (``reply``, ``request_id``) with ``cancel``, and keep ``reply``
        alive every ``every`` seconds."""
        if request_id:
            self._running[(reply, request_id)] = cancel
        if every is not None:
            self._alive[reply] = (every, asyncio.get_running_loop().time())

    def _untrack(self, reply: str, request_id: str, cancel: Callable[[], object]) -> None:
        """Stop tracking ``reply``, unless another call (a stream it joined) tracks it now."""
        if request_id and self._running.get((reply, request_id)) is not cancel:
            return
        self._running.pop((reply, request_id), None)
        self._alive.pop(reply, None)

    async def _handle(self, msg: Msg, api: Api | None = None) -> None:
        """Answer one call in the API ``Llm-Api`` names, or ``api`` when its subject said."""
        if not msg.reply:
            return
        hdrs = msg.headers or {}
        timeout = timeout_from(hdrs, DEFAULT_WORKER_TIMEOUT_S)
        request_id = hdrs.get(headers.REQUEST_ID, "")
        task = asyncio.current_task()
        cancel: Callable[[], object] = task.cancel if task is not None else lambda: None
        self._track(msg.reply, request_id, _keepalive_s(hdrs), cancel)
        with span(f"llm.provider.{self._provider.name}", parent=hdrs, kind=SpanKind.CONSUMER):
            api = api or _api(hdrs)
            try:
                if api is None:
                    raise _unknown_api(hdrs)
                request = ProviderRequest(
                    body=msg.data,
                    upstream_model=hdrs.get(headers.UPSTREAM_MODEL, ""),
                    timeout_s=timeout,
                    request_id=request_id,
                    api=api,
                    upstream_headers={n: hdrs[n] for n in headers.UPSTREAM_HEADERS if n in hdrs},
                )
                if request.stream:
                    await self._stream(msg.reply, request, hdrs)
                else:
                    await self._whole(msg.reply, request, hdrs.get(headers.ONCE_KEY))
            except msgspec.MsgspecError as exc:
                answer = failure(exc, self._provider.name, timeout, api or Api.CHAT)
                await self._reply(msg.reply, *answer)
            except asyncio.CancelledError:
                pass  # cancelled by llm.cancel: the caller is gone, nobody to answer
            finally:
                self._untrack(msg.reply, request_id, cancel)

    async def _reply(
        self, reply: str, status: int, body: bytes, extra: dict[str, str] | None = None
    ) -> None:
        reply_headers = {headers.STATUS: str(status), headers.PROVIDER: self._provider.name}
        if extra:
            reply_headers.update(extra)
        if not fits(self._nc, body, reply_headers):  # the server would close our connection
            too_large = ReplyTooLarge(len(body))
            if reply_headers.get(headers.STREAM) == "chunk":
                raise too_large  # the stream stops and ends with its error message
            body = error_body(502, too_large.code, str(too_large))
            kept = {k: v for k, v in reply_headers.items() if k != headers.STREAM}
            reply_headers = {**kept, headers.STATUS: "502"}
            if extra and headers.STREAM in extra:
                reply_headers[headers.STREAM] = "error"
        await self._nc.publish(reply, body, headers=reply_headers)

    async def _whole(self, reply: str, request: ProviderRequest, once: str | None) -> None:
        """One reply: the upstream's answer, or (``Llm-Once-Key``) the first attempt's."""
        if not once:
            await self._reply(reply, *await self._complete(request))
            return

        async def send(answer: Answer) -> None:
            await self._reply(reply, *answer)

        await self._once.run(once, request.timeout_s, lambda: self._complete(request), send)

    async def _complete(self, request: ProviderRequest) -> Answer:
        with noted_limits() as limits:
            try:
                with upstream_call(self._provider.name):  # outside the timeout: sees TimeoutError
                    async with asyncio.timeout(request.timeout_s):
                        body, extra = await self._calls.whole(request)
            except Exception as exc:
                self._count(failed=True)
                status, envelope, failed = failure(
                    exc, self._provider.name, request.timeout_s, request.api
                )
                return status, envelope, {**limits, **failed}
        self._count(failed=False)
        return 200, body, {**limits, **extra}

    def _count(self, *, failed: bool) -> None:
        self.answered += 1
        self.errors += failed

    async def _stream(self, reply: str, request: ProviderRequest, hdrs: dict[str, str]) -> None:
        """Stream the call to ``reply``; with ``Llm-Once-Key``, share one upstream call with
        the request's other attempts (:meth:`OnceClaims.stream`)."""
        once = hdrs.get(headers.ONCE_KEY)
        if not once:
            await self._streamed(request, functools.partial(self._reply, reply))
            return
        task = asyncio.current_task()
        fanout = Fanout(self._reply, reply, max_log_bytes=self._max_stream_log())
        request_id = request.request_id
        #: reply subject -> what cancels it: the call's own and those of the attempts that
        #: joined it here (a cancel of one attempt of many stops only its messages)
        mine: dict[str, Callable[[], object]] = {}

        def follow(joiner: str, every: float | None) -> None:
            def cancel() -> None:
                self._alive.pop(joiner, None)
                if not fanout.leave(joiner) and task is not None:
                    task.cancel()  # nobody listens any more: stop paying for it

            mine[joiner] = cancel
            self._track(joiner, request_id, every, cancel)

        follow(reply, _keepalive_s(hdrs))

        async def on_join(msg: Msg) -> None:
            joiner = msg.data.decode(errors="replace")
            joined = joiner in fanout.replies or await fanout.join(joiner)
            if joined and joiner not in mine:
                follow(joiner, _keepalive_s(msg.headers or {}))
            with contextlib.suppress(Exception):
                await msg.respond(JOINED if joined else FULL)

        join_headers = {k: hdrs[k] for k in (headers.KEEPALIVE_MS,) if k in hdrs}
        try:
            run = functools.partial(self._streamed, request, fanout.send)
            await self._once.stream(
                once, request.timeout_s, StreamCall(fanout, run, on_join, join_headers)
            )
        finally:  # joined elsewhere in this process, its reply is that call's to track now
            for followed, cancel in mine.items():
                self._untrack(followed, request_id, cancel)

    def _max_stream_log(self) -> int:
        """The most a shared stream keeps of its messages for attempts that join it late."""
        return min(MAX_STREAM_LOG_BYTES, self._nc.max_payload - 64 * 1024)

    async def _streamed(self, request: ProviderRequest, send: _Send) -> int:
        """Stream one upstream call through ``send``; the status of its last message."""
        with noted_limits() as limits:
            return await self._relayed(request, send, limits)

    async def _relayed(self, request: ProviderRequest, send: _Send, limits: dict[str, str]) -> int:
        seq = 0
        end = StreamEnd()
        try:
            with upstream_call(self._provider.name):  # outside the timeout: it sees TimeoutError
                async with asyncio.timeout(request.timeout_s):
                    async for body, extra in self._calls.pieces(request, end):
                        extra.update({headers.STREAM: "chunk", headers.SEQ: str(seq)})
                        await send(200, body, extra)
                        seq += 1
        except Exception as exc:
            self._count(failed=True)
            status, body, extra = failure(exc, self._provider.name, request.timeout_s, request.api)
            extra = {**limits, **extra, headers.STREAM: "error", headers.SEQ: str(seq)}
            await send(status, body, extra)
            return status
        self._count(failed=False)
        last = {**limits, headers.STREAM: "end", headers.SEQ: str(seq)}
        await send(200, _encoder.encode(end), last)
        return 200


def _api(hdrs: dict[str, str]) -> Api | None:
    """The API a request on the provider's own subject speaks (``None``: one this worker does
    not know there; embeddings come on their own subject)."""
    try:
        api = Api(hdrs.get(headers.API, Api.CHAT))
    except ValueError:
        return None
    return None if api is Api.EMBEDDINGS else api


def _unknown_api(hdrs: dict[str, str]) -> msgspec.ValidationError:
    given = hdrs.get(headers.API)
    if given == Api.EMBEDDINGS:
        where = subjects.provider_embeddings_subject("<provider>")
        return msgspec.ValidationError(f"{headers.API}: {given} calls go to {where}")
    return msgspec.ValidationError(f"unknown {headers.API}: {given!r}")


async def serve_worker(
    nc: Client,
    provider: Provider,
    stop: asyncio.Event,
    *,
    max_concurrency: int = 1024,
    health: Health | None = None,
) -> None:
    """Serve ``provider`` until ``stop`` is set, then drain (``health``: what the worker's
    probes answer)."""
    service = WorkerService(nc, provider, max_concurrency=max_concurrency)
    await serve(
        service,
        stop,
        ready=lambda: f"worker ready: {provider.name} on {service.subject}",
        log=log,
        health=health,
        probe=lambda: (f"worker-{provider.name}", nc, lambda: service.subscriptions),
    )
