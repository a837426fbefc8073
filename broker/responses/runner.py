"""Runs the background responses this broker pulls from the work queue
(:data:`~schemas.jetstream.RESPONSE_JOBS_STREAM`, one durable consumer every broker shares).

The broker that gets a job marks the response ``in_progress``, runs it
(:mod:`broker.responses.pipeline_run`: one upstream call however often it is delivered),
stores the outcome (``completed``, ``incomplete`` or ``failed``) and only then acknowledges
the job. A run that fails retryably, or raises, runs again up to ``max_deliver`` times;
after the last one that raised the response is ``failed`` (``server_error``; what raised is
logged). While it runs it tells JetStream so (``in_progress``) well within ``ack_wait_s``; a
broker that dies stops doing so and the job is delivered again. A cancel
(``llm.responses.halt``, which every broker hears) stops the run wherever it is; the
``cancelled`` status is never overwritten.

An upstream that runs background responses itself (OpenAI's) gets the response as one and
answers at once with its queued response: its id is stored, then the response is read there
until it is final (:mod:`broker.responses.upstream`) and charged
(:mod:`broker.responses.charges`), so a broker or worker killed while the upstream works
loses nothing. Any other upstream answers the call itself: a worker killed while that call
is in flight loses the answer (the upstream worked for nothing), and the run calls it again
once the claim's lease has passed; the once-claim still keeps two runs from calling at the
same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext, api

from broker.request import Reply
from broker.responses.charges import UpstreamCharges
from broker.responses.events import ResponseEvents
from broker.responses.pipeline_run import Handle, PipelineRun
from broker.responses.settings import ResponsesSettings
from broker.responses.states import at_upstream, finished, retryable, started, status
from broker.responses.store import EntryTooLarge, ResponseStore, StoreUnavailable
from broker.responses.upstream import UpstreamRuns, running_upstream
from broker.tenancy.tenants import KeyRing
from edge_runtime.process import InFlight
from schemas import error_body, headers, subjects
from schemas.jetstream import RESPONSE_CONSUMER, RESPONSE_JOBS_STREAM
from schemas.responses import ResponseStatus, StoredResponse

__all__ = ["FETCH_S", "Job", "JobRunner"]

log = logging.getLogger("llm_edge.responses")

#: Longest wait of one pull (also how long a stopping broker may take to stop pulling).
FETCH_S = 0.5
#: Waits before a retryably failed run is delivered again (the last one repeats).
BACKOFF_S = (1.0, 5.0, 15.0)
#: The error of a response whose every run raised (``max_deliver`` of them): what raised is
#: logged, not told.
RUN_FAILED_CODE = "server_error"
RUN_FAILED = "the response could not be run; try again"

_T = TypeVar("_T")


class Job(msgspec.Struct):
    """A queued background response: its id and the tenant it runs as."""

    id: str
    tenant: str


_job = msgspec.json.Decoder(Job)


@dataclass(frozen=True, slots=True)
class _Ran:
    """A run's outcome: ``final`` when it is never to run again (an upstream's own
    background response, a stream whose events are out); ``polled``: the entry it was read
    at its upstream on (its answer is charged when it is stored)."""

    reply: Reply
    final: bool
    polled: StoredResponse | None = None


class JobRunner:
    """Pulls background responses' jobs and runs them, a bounded number at a time.

    Args:
        nc: the broker's connection.
        js: its JetStream context.
        store: the stored responses.
        events: the kept events of streamed ones.
        upstream: reads and cancels those that run at their upstream.
        handle: the pipeline's entry point.
        cancel: the pipeline's cancel (request id, owner).
        charges: charges what ran at an upstream.
        keys: the tenants jobs run as.
        settings: ``[responses]``.
    """

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        store: ResponseStore,
        *,
        events: ResponseEvents,
        upstream: UpstreamRuns,
        handle: Handle,
        cancel: Callable[[str, str], None],
        charges: UpstreamCharges,
        keys: KeyRing,
        settings: ResponsesSettings,
    ) -> None:
        self._nc = nc
        self._js = js
        self._store = store
        self._upstream = upstream
        self._events = events
        self._pipeline = PipelineRun(handle, cancel, keys, events)
        self._charges = charges
        self._settings = settings
        self._inflight = InFlight(settings.concurrency)
        #: response id -> set when its run is to stop
        self._running: dict[str, asyncio.Event] = {}
        self._subs: list[Subscription] = []
        self._pull_sub: JetStreamContext.PullSubscription | None = None
        self._pulling: asyncio.Task[None] | None = None
        self._stopping = False

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

    async def stop(self, grace_s: float) -> None:
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
            stored = await self._store.update(job.id, job.tenant, started)
            if stored is None or status(stored) != ResponseStatus.IN_PROGRESS:
                await msg.ack()  # gone, finished or cancelled: nothing to run
                return
            ran = await self._alive(msg, self._work(job, stored))
            if ran is None:  # cancelled while it ran
                await msg.ack()
                return
            delivered = msg.metadata.num_delivered or 1
            retry = not ran.final and retryable(ran.reply.status)
            if retry and delivered < self._settings.max_deliver:
                await msg.nak(delay=BACKOFF_S[min(delivered, len(BACKOFF_S)) - 1])
                return
            await self._finish(job, ran)
            await msg.ack()
        except StoreUnavailable as exc:
            log.warning("background response %s: the store is away (%s); runs again", job.id, exc)
            with contextlib.suppress(Exception):
                await msg.nak(delay=BACKOFF_S[0])
        except Exception:
            delivered = msg.metadata.num_delivered or 1
            if delivered < self._settings.max_deliver:
                log.exception(
                    "background response %s failed (run %d of %d); runs again",
                    job.id,
                    delivered,
                    self._settings.max_deliver,
                )
                with contextlib.suppress(Exception):
                    await msg.nak(delay=BACKOFF_S[0])
                return
            log.exception("background response %s failed on its last run (%d)", job.id, delivered)
            await self._give_up(job, msg)

    async def _give_up(self, job: Job, msg: Msg) -> None:
        """Store a response whose every run raised as ``failed`` (what raised stays in the
        log), end a streamed one's events, and acknowledge its job; run again when even that
        fails (the store away)."""
        failed = Reply(500, error_body(500, RUN_FAILED_CODE, RUN_FAILED))
        try:
            written = await self._store.apply(
                job.id, job.tenant, lambda s: finished(s, job.id, failed)
            )
            if written is not None and written[1] and written[0].streamed:
                await self._events.failed(job.id, RUN_FAILED_CODE, RUN_FAILED)
            await msg.ack()
        except Exception:
            log.exception("background response %s could not be failed; runs again", job.id)
            with contextlib.suppress(Exception):
                await msg.nak(delay=BACKOFF_S[0])

    async def _finish(self, job: Job, ran: _Ran) -> None:
        """Store the outcome; an answer read at its upstream is charged when this write is
        the one that made it final (:mod:`broker.responses.charges`)."""
        charge = None if ran.polled is None else self._charges.price(ran.polled, ran.reply)
        charged = charge.reply_headers() if charge is not None else None
        try:
            written = await self._store.apply(
                job.id, job.tenant, lambda s: finished(s, job.id, ran.reply, charged)
            )
        except EntryTooLarge as exc:  # stored as failed: a run again would only fail again
            message = f"the response could not be stored ({exc}, over the transport limit)"
            failed = Reply(502, error_body(502, "response_too_large", message))
            written = await self._store.apply(
                job.id, job.tenant, lambda s: finished(s, job.id, failed, charged)
            )
        if charge is not None and written is not None and written[1]:
            await self._charges.charge(written[0], charge)

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

    async def _work(self, job: Job, stored: StoredResponse) -> _Ran | None:
        """The run's outcome; ``None`` when it was cancelled meanwhile."""
        if not stored.upstream_id or not stored.provider:
            reply = await self._call(job, stored)
            if reply is None:
                return None
            if stored.streamed:  # its events are out: never run again
                return _Ran(reply, final=True)
            upstream_id = running_upstream(reply)
            if upstream_id is None:
                return _Ran(reply, final=False)
            stored_now = await self._store.update(
                job.id, job.tenant, lambda s: at_upstream(s, upstream_id, reply)
            )
            if stored_now is None or status(stored_now) != ResponseStatus.IN_PROGRESS:
                provider = reply.headers.get(headers.PROVIDER, "")
                await self._upstream.cancel(provider, upstream_id)  # cancelled meanwhile
                return None
            stored = stored_now
        halted = self._running[job.id] = asyncio.Event()
        try:
            polled = await self._upstream.poll(stored, halted)
            return None if polled is None else _Ran(polled, final=True, polled=stored)
        finally:
            self._running.pop(job.id, None)

    async def _call(self, job: Job, stored: StoredResponse) -> Reply | None:
        """The pipeline's answer, or ``None`` when the response was cancelled meanwhile."""
        halted = self._running[job.id] = asyncio.Event()
        try:
            return await self._pipeline(job.id, job.tenant, stored, halted)
        finally:
            self._running.pop(job.id, None)
