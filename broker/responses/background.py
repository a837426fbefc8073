"""Background responses (``background: true``): durable jobs on a JetStream work queue.

Creating one stores it ``queued`` and publishes its id on ``llm.responses.job``
(:data:`~schemas.jetstream.RESPONSE_JOBS_STREAM`, deduplicated by id). Every broker pulls
from the one durable consumer; the broker that gets a job marks the response
``in_progress``, runs it through the pipeline as its tenant (cache, routing, retries, the
tenant's limits), stores the outcome (``completed``, ``incomplete`` or ``failed``) and only
then acknowledges the job. While it runs it tells JetStream so (``in_progress``) well within
``ack_wait_s``; a broker that dies stops doing so and the job is delivered again.

A run is one upstream call however often it is delivered: it goes with its response id as
request id and marked idempotent, so the workers' once-claims (``workers/once.py``) answer a
second run from the first one's stored answer instead of calling the upstream again, even
when the broker that started the call is gone. It bypasses the cache both ways (an answer
that is a queued response must never be served to anyone else). A cancel
(``llm.responses.halt``, which every broker hears) stops the run wherever it is; the
``cancelled`` status is never overwritten.

An upstream that runs background responses itself (OpenAI's) gets the response as one and
answers at once with its queued response: its id is stored, then the response is read there
until it is final (:mod:`broker.responses.upstream`), so a broker or worker killed while the
upstream works loses nothing. Any other upstream answers the call itself: a worker killed
while that call is in flight loses the answer (the upstream worked for nothing), and the run
calls it again once the claim's lease has passed; the once-claim still keeps two runs from
calling at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext, api

from broker.batch.runner import CollectSink
from broker.replies.sinks import ReplySink
from broker.request import Reply
from broker.responses.events import RecordingSink, ResponseEvents
from broker.responses.settings import ResponsesSettings
from broker.responses.store import ResponseStore, StoreUnavailable
from broker.responses.upstream import UpstreamRuns, running_upstream
from broker.tenancy.tenants import Caller, KeyRing
from edge_runtime.jetstream import ensure_stream
from edge_runtime.process import InFlight
from schemas import ErrorEnvelope, error_body, headers, subjects
from schemas.api import Api
from schemas.jetstream import RESPONSE_CONSUMER, RESPONSE_JOBS_STREAM
from schemas.responses import ResponseStatus, StoredResponse

__all__ = ["BackgroundJobs", "Handle"]

log = logging.getLogger("llm_edge.responses")

#: Longest wait of one pull (also how long a stopping broker may take to stop pulling).
FETCH_S = 0.5
#: The longest publishing a job may take.
PUBLISH_S = 5.0
#: Waits before a retryably failed run is delivered again (the last one repeats).
BACKOFF_S = (1.0, 5.0, 15.0)

_T = TypeVar("_T")
_encoder = msgspec.json.Encoder()
_any = msgspec.json.Decoder(dict[str, Any])
_envelope = msgspec.json.Decoder(ErrorEnvelope)


class _Job(msgspec.Struct):
    id: str
    tenant: str


_job = msgspec.json.Decoder(_Job)


class Handle(Protocol):
    """``ChatPipeline.handle``."""

    async def __call__(
        self,
        data: bytes,
        hdrs: dict[str, str],
        sink: ReplySink,
        caller: Caller | None = None,
        *,
        reply_to: str = "",
        api: Api = Api.CHAT,
    ) -> None: ...


def _owner(response_id: str) -> str:
    """The reply subject a run's request is owned by (a cancel must name it)."""
    return f"background.{response_id}"


class BackgroundJobs:
    """Queues background responses and runs those this broker pulls.

    Args:
        nc: the broker's connection.
        store: the stored responses.
        handle: the pipeline's entry point.
        cancel: the pipeline's cancel (request id, owner).
        keys: the tenants jobs run as.
        settings: ``[responses]``.
        replicas: of the work-queue stream.
    """

    def __init__(
        self,
        nc: Client,
        store: ResponseStore,
        handle: Handle,
        cancel: Callable[[str, str], None],
        *,
        keys: KeyRing,
        settings: ResponsesSettings,
        replicas: int = 1,
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=PUBLISH_S)
        self._store = store
        self._handle = handle
        self._cancel = cancel
        self._keys = keys
        self._settings = settings
        self._replicas = replicas
        self._inflight = InFlight(settings.concurrency)
        self._upstream = UpstreamRuns(nc, poll_s=settings.poll_s, poll_max_s=settings.poll_max_s)
        #: the kept events of streamed background responses
        self.events = ResponseEvents(nc)
        #: response id -> set when its run is to stop
        self._running: dict[str, asyncio.Event] = {}
        self._subs: list[Subscription] = []
        self._pull_sub: JetStreamContext.PullSubscription | None = None
        self._pulling: asyncio.Task[None] | None = None
        self._stopping = False

    async def open(self) -> None:
        """Create the work queue (or bind to it); jobs can be queued from now on."""
        config = api.StreamConfig(
            name=RESPONSE_JOBS_STREAM,
            subjects=[subjects.RESPONSES_JOB],
            retention=api.RetentionPolicy.WORK_QUEUE,
            num_replicas=self._replicas,
            max_age=self._settings.ttl_s,
        )
        await ensure_stream(self._js, config)
        settings = self._settings
        await self.events.open(
            ttl_s=settings.ttl_s, max_bytes=settings.max_bytes, replicas=self._replicas
        )

    async def start(self) -> None:
        """Pull and run jobs, and hear cancels."""
        consumer = api.ConsumerConfig(
            durable_name=RESPONSE_CONSUMER,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self._settings.ack_wait_s,
            max_deliver=-1,  # the runner fails a response at max_deliver itself
            max_ack_pending=max(1000, self._settings.concurrency * 8),
            filter_subject=subjects.RESPONSES_JOB,
        )
        await self._js.add_consumer(RESPONSE_JOBS_STREAM, consumer)
        sub = await self._js.pull_subscribe_bind(
            durable=RESPONSE_CONSUMER, stream=RESPONSE_JOBS_STREAM
        )
        self._pull_sub = sub
        self._subs = [await self._nc.subscribe(subjects.RESPONSES_HALT, cb=self._on_halt)]
        self._pulling = asyncio.create_task(self._pull(sub), name="background-responses")

    async def stop(self, grace_s: float = 1.0) -> None:
        """Stop pulling; runs in flight are left to finish (bounded), the rest redelivered."""
        self._stopping = True
        if self._pulling is not None:
            self._pulling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pulling
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._pull_sub is not None:
            with contextlib.suppress(Exception):
                await self._pull_sub.unsubscribe()
        await self._inflight.drain(grace_s)

    async def submit(self, response_id: str, tenant: str) -> None:
        """Queue a stored response's job (once: JetStream drops a repeat of its id).

        Raises:
            StoreUnavailable: JetStream did not take it.
        """
        body = _encoder.encode(_Job(response_id, tenant))
        try:
            await self._js.publish(
                subjects.RESPONSES_JOB, body, headers={"Nats-Msg-Id": response_id}
            )
        except (TimeoutError, NatsError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def halt(self, response_id: str) -> None:
        """Tell every broker to stop ``response_id``'s run."""
        await self._nc.publish(subjects.RESPONSES_HALT, response_id.encode())

    async def cancel_upstream(self, stored: StoredResponse) -> None:
        """Cancel ``stored`` at its upstream, when it runs there (bounded)."""
        if stored.upstream_id and stored.provider and _status(stored) not in ResponseStatus.FINAL:
            await self._upstream.cancel(stored.provider, stored.upstream_id)

    async def _on_halt(self, msg: Msg) -> None:
        halted = self._running.get(msg.data.decode(errors="replace"))
        if halted is not None:
            halted.set()

    async def _pull(self, sub: JetStreamContext.PullSubscription) -> None:
        while not self._stopping:
            if self._inflight.free <= 0:
                await self._inflight.slot_free()
                continue
            try:
                msgs = await sub.fetch(self._inflight.free, timeout=FETCH_S)
            except (NatsTimeout, TimeoutError):
                continue
            except Exception:
                log.warning("background responses: fetch failed; retrying", exc_info=True)
                await asyncio.sleep(1)
                continue
            for msg in msgs:
                await self._inflight.spawn(self._run(msg))

    async def _run(self, msg: Msg) -> None:
        """Run one job; acknowledged once its outcome is stored (or nothing is left to do)."""
        try:
            job = _job.decode(msg.data)
        except msgspec.MsgspecError:
            await msg.term()
            return
        try:
            stored = await self._store.update(job.id, job.tenant, _started)
            if stored is None or _status(stored) != ResponseStatus.IN_PROGRESS:
                await msg.ack()  # gone, finished or cancelled: nothing to run
                return
            ran = await self._alive(msg, self._work(job, stored))
            if ran is None:  # cancelled while it ran
                await msg.ack()
                return
            reply, final = ran
            delivered = msg.metadata.num_delivered or 1
            retry = not final and _retryable(reply.status)
            if retry and delivered < self._settings.max_deliver:
                await msg.nak(delay=BACKOFF_S[min(delivered, len(BACKOFF_S)) - 1])
                return
            await self._store.update(job.id, job.tenant, lambda s: _finished(s, job.id, reply))
            await msg.ack()
        except StoreUnavailable as exc:
            log.warning("background response %s: the store is away (%s); runs again", job.id, exc)
            with contextlib.suppress(Exception):
                await msg.nak(delay=BACKOFF_S[0])
        except Exception:
            log.exception("background response %s failed; runs again", job.id)
            with contextlib.suppress(Exception):
                await msg.nak(delay=BACKOFF_S[0])

    async def _alive(self, msg: Msg, work: Awaitable[_T]) -> _T:
        """Await ``work`` while telling JetStream the job is being worked on."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self._settings.ack_wait_s / 3)
                with contextlib.suppress(Exception):
                    await msg.in_progress()

        beating = asyncio.create_task(beat())
        try:
            return await work
        finally:
            beating.cancel()

    async def _work(self, job: _Job, stored: StoredResponse) -> tuple[Reply, bool] | None:
        """The run's outcome and whether it is final as it is (an upstream's own background
        response: never run again); ``None`` when it was cancelled meanwhile."""
        if not stored.upstream_id or not stored.provider:
            reply = await self._call(job, stored)
            if reply is None:
                return None
            if stored.streamed:  # its events are out: never run again
                return reply, True
            upstream_id = running_upstream(reply)
            if upstream_id is None:
                return reply, False
            provider = reply.headers.get(headers.PROVIDER, "")
            stored_now = await self._store.update(
                job.id, job.tenant, lambda s: _at_upstream(s, upstream_id, provider)
            )
            if stored_now is None or _status(stored_now) != ResponseStatus.IN_PROGRESS:
                await self._upstream.cancel(provider, upstream_id)  # cancelled meanwhile
                return None
            stored = stored_now
        halted = self._running[job.id] = asyncio.Event()
        try:
            polled = await self._upstream.poll(stored, halted)
            return None if polled is None else (polled, True)
        finally:
            self._running.pop(job.id, None)

    async def _call(self, job: _Job, stored: StoredResponse) -> Reply | None:
        """The pipeline's answer, or ``None`` when the response was cancelled meanwhile."""
        halted = self._running[job.id] = asyncio.Event()
        try:
            sink = RecordingSink(self.events, job.id) if stored.streamed else CollectSink()
            hdrs = {
                **stored.headers,
                headers.REQUEST_ID: job.id,
                headers.IDEMPOTENT: "1",
                headers.CACHE_CONTROL: "no-cache, no-store",
            }
            caller = Caller(self._keys.named(job.tenant))
            owner = _owner(job.id)
            await self._handle(stored.body, hdrs, sink, caller, reply_to=owner, api=Api.RESPONSES)
            stop: asyncio.Future[Any] = asyncio.ensure_future(halted.wait())
            waits: list[asyncio.Future[Any]] = [sink.reply, stop]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
            if not sink.reply.done():
                self._cancel(job.id, owner)
                if isinstance(sink, RecordingSink):  # its followers learn it ended
                    message = "the response was cancelled"
                    await sink.error(Reply(400, error_body(400, "cancelled", message)), {})
                return None
            return sink.reply.result()
        finally:
            self._running.pop(job.id, None)


def _status(stored: StoredResponse) -> str:
    return str(_any.decode(stored.response).get("status"))


def _retryable(status: int) -> bool:
    return status >= 500 or status == 429


def _started(stored: StoredResponse) -> StoredResponse | None:
    """``queued`` becomes ``in_progress`` (another status is left as it is)."""
    response = _any.decode(stored.response)
    if response.get("status") != ResponseStatus.QUEUED:
        return None
    response["status"] = ResponseStatus.IN_PROGRESS
    return msgspec.structs.replace(stored, response=_encoder.encode(response))


def _at_upstream(stored: StoredResponse, upstream_id: str, provider: str) -> StoredResponse | None:
    """An ``in_progress`` response now known to run at ``provider`` as ``upstream_id``
    (``None``: it is not running any more)."""
    if _status(stored) != ResponseStatus.IN_PROGRESS:
        return None
    return msgspec.structs.replace(stored, upstream_id=upstream_id, provider=provider)


def _finished(stored: StoredResponse, response_id: str, reply: Reply) -> StoredResponse | None:
    """The outcome of a run, under the response's own id (``None``: it was cancelled)."""
    queued = _any.decode(stored.response)
    if queued.get("status") in ResponseStatus.FINAL:
        return None
    upstream_id = ""
    if reply.status == 200:
        response = _any.decode(reply.body)
        upstream_id = str(response.get("id", ""))
        response.update(id=response_id, background=True, created_at=queued.get("created_at"))
    else:
        response = queued
        try:
            error = _envelope.decode(reply.body).error
            code, message = error.code or "server_error", error.message
        except msgspec.MsgspecError:
            code, message = "server_error", reply.body[:300].decode(errors="replace")
        response.update(status=ResponseStatus.FAILED, error={"code": code, "message": message})
    return msgspec.structs.replace(
        stored,
        response=_encoder.encode(response),
        upstream_id=upstream_id if upstream_id != response_id else "",
        provider=reply.headers.get(headers.PROVIDER, stored.provider),
        body=b"",
        headers={},
    )
