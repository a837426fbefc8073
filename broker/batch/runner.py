"""Runs queued batch lines through the broker pipeline (cache, routing, breakers, retries).

Every tenant's lines of each priority have their own work-queue subject and durable consumer;
every broker pulls from all of them, giving each tenant its weighted share of line slots
(:mod:`broker.batch.fairshare`), so lines spread over all brokers and one tenant's flood never
delays another's batch by more than its share. A line is acknowledged only after its result is
stored; retryable failures are redelivered with backoff, and a line that keeps failing is dead-
lettered to the error file with its last error. A rate-limited line (429: the tenant's limit or
the provider's) is not a failure: it waits for ``Retry-After`` and runs again, for as long as
the completion window lasts. Nor is a line whose provider is unavailable (503: no worker, every
deployment open; 504: out of time): it waits with backoff and runs again while the window
lasts, so a worker outage slows a batch down instead of filling its error file. Only errors
that retrying cannot fix (4xx) and failures that keep recurring (``max_deliver``) are
dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext, api

from broker import metrics
from broker.batch.fairshare import Queue, SlotShares
from broker.batch.settings import BatchSettings
from broker.replies.sinks import ReplySink
from broker.request import Piece, Reply
from broker.tenancy.tenants import Caller, KeyRing
from edge_runtime.batch_store import BatchStore
from edge_runtime.process import InFlight
from schemas import StreamEnd, headers
from schemas.batch import BatchRecord, BatchStatus, InputLine
from schemas.jetstream import LINES_STREAM, batch_consumer, line_subject, result_key
from schemas.subjects import DEFAULT_TENANT

__all__ = [
    "UNAVAILABLE",
    "BatchRunner",
    "CollectSink",
    "LineHandler",
    "result_line",
]

log = logging.getLogger("llm_edge.batch")

#: ``ChatPipeline.handle``: body, headers, where the answer goes, the tenant it runs as.
LineHandler = Callable[[bytes, dict[str, str], ReplySink, Caller | None], Awaitable[None]]

#: Longest wait of one pull (also how long a graceful stop may take to stop pulling).
FETCH_S = 0.25
#: How long a pull waits on a queue the subject index said had lines (the rest may be in
#: flight on other brokers): short, so an empty queue never holds up another tenant's.
EMPTY_FETCH_S = 0.05
#: How often the queued lines per tenant are read (and how soon a new batch is seen).
REFRESH_S = 0.2
#: Longest wait before a rate-limited or unavailable line is tried again.
MAX_RATE_LIMIT_WAIT_S = 60.0
#: Statuses that say "not now" rather than "this line is wrong": no worker or no open
#: deployment (503), the line's time budget ran out (504). Such a line waits and runs again.
UNAVAILABLE = frozenset({503, 504})
#: While yielding to interactive traffic, how often the runner looks for a free line slot.
YIELD_POLL_S = 0.005
_line_decoder = msgspec.json.Decoder(InputLine)
_encoder = msgspec.json.Encoder()
_STOPPED = {
    BatchStatus.CANCELLING,
    BatchStatus.CANCELLED,
    BatchStatus.FAILED,
    BatchStatus.COMPLETED,
    BatchStatus.EXPIRED,
}


def _retry_after(reply_headers: dict[str, str], backoff: tuple[float, ...]) -> float:
    """Seconds to wait before a rate-limited line runs again (``Retry-After``, capped)."""
    try:
        wait = float(reply_headers[headers.RETRY_AFTER])
    except (KeyError, ValueError):
        wait = backoff[0] if backoff else 1.0
    return min(max(wait, 0.0), MAX_RATE_LIMIT_WAIT_S)


def _unavailable_wait(
    reply_headers: dict[str, str], backoff: tuple[float, ...], delivered: int
) -> float:
    """Seconds before a line whose provider was unavailable runs again: the redelivery
    backoff for this delivery (its last step repeats), at least ``Retry-After``, capped."""
    step = backoff[min(delivered - 1, len(backoff) - 1)] if backoff else 1.0
    try:
        hinted = float(reply_headers[headers.RETRY_AFTER])
    except (KeyError, ValueError):
        hinted = 0.0
    return min(max(step, hinted), MAX_RATE_LIMIT_WAIT_S)


class CollectSink:
    """A :class:`broker.replies.sinks.ReplySink` that hands the whole reply to the batch runner."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        """Keep the reply."""
        if not self.reply.done():
            self.reply.set_result(reply)

    async def chunk(self, piece: Piece, meta: dict[str, str]) -> None:
        """Batch lines are never streamed."""

    async def end(self, end: StreamEnd, meta: dict[str, str]) -> None:
        """Batch lines are never streamed."""

    async def error(self, reply: Reply, meta: dict[str, str], *, streaming: bool) -> None:
        """Keep the failure."""
        await self.whole(reply, meta)


def result_line(
    custom_id: str,
    request_id: str,
    status: int | None,
    body: bytes | None,
    error: tuple[str, str] | None = None,
) -> bytes:
    """One output/error file line; the response body is embedded without re-encoding."""
    head = (
        b'{"id":'
        + _encoder.encode(f"batch_req_{request_id}")
        + b',"custom_id":'
        + _encoder.encode(custom_id)
    )
    if body is None or status is None:
        response = b"null"
    else:
        response = (
            b'{"status_code":'
            + str(status).encode()
            + b',"request_id":'
            + _encoder.encode(request_id)
            + b',"body":'
            + body
            + b"}"
        )
    err = b"null" if error is None else _encoder.encode({"code": error[0], "message": error[1]})
    return head + b',"response":' + response + b',"error":' + err + b"}"


class BatchRunner:
    """Pulls lines and answers them through ``handle`` (the pipeline's entry point).

    Args:
        nc: NATS connection.
        store: the batch resources.
        handle: ``ChatPipeline.handle``: answers chat lines.
        settings: concurrency, redelivery.
        keys: resolves a batch's tenant name (lines run as that tenant).
        clock: wall-clock seconds (completion windows are wall-clock).
        endpoints: the handlers of lines to other endpoints, by ``url``
            (``/v1/embeddings``: ``EmbeddingsPipeline.handle``).
    """

    def __init__(
        self,
        nc: Client,
        store: BatchStore,
        handle: LineHandler,
        settings: BatchSettings,
        clock: Callable[[], float] = time.time,
        *,
        keys: KeyRing | None = None,
        interactive: Callable[[], bool] = lambda: False,
        endpoints: Mapping[str, LineHandler] | None = None,
    ) -> None:
        self._nc = nc
        self._keys = keys
        self._store = store
        self._handle = handle
        self._endpoints = dict(endpoints or {})
        self._settings = settings
        self._clock = clock
        self._interactive = interactive
        self._inflight = InFlight(settings.concurrency)
        self._records: dict[str, tuple[float, BatchRecord | None]] = {}
        self.progress: dict[str, Counter[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._shares = SlotShares(settings.concurrency, self._weight)
        self._subs: dict[Queue, JetStreamContext.PullSubscription] = {}
        self._depth: dict[str, int] = {}
        self._refreshed = 0.0

    async def start(self) -> None:
        """Move lines of the old layout, then start pulling from every tenant's queues."""
        try:
            moved = await self._store.move_legacy_lines()
        except Exception:  # the lines stay queued; the next start moves them
            log.warning("batch lines of the old layout were not moved", exc_info=True)
        else:
            if moved:
                log.info("moved %d queued batch lines to their tenant's queue", moved)
        self._stopping = False
        self._task = asyncio.create_task(self._pull(), name="batch-runner")

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop pulling; let lines in flight finish (the rest are redelivered elsewhere).

        The pull loop is let finish its current fetch rather than cancelled: lines a
        cancelled fetch had already been sent would wait out ``ack_wait`` before redelivery.
        """
        self._stopping = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, FETCH_S + 1)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self._inflight.drain(grace_s)
        for sub in self._subs.values():  # a subscription left behind stalls nc.drain()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _weight(self, tenant: str) -> float:
        return self._keys.named(tenant).weight if self._keys is not None else 1.0

    def _label(self, tenant: str) -> str:
        """A metric label: configured tenant names only (run-time key tenants are ``other``)."""
        if self._keys is None or tenant in self._keys.tenants or tenant == DEFAULT_TENANT:
            return tenant
        return "other"

    async def _consumer(self, queue: Queue) -> JetStreamContext.PullSubscription:
        """The durable consumer of one tenant's lines of one priority (made on first use)."""
        sub = self._subs.get(queue)
        if sub is not None:
            return sub
        tenant, priority = queue
        name = batch_consumer(tenant, priority)
        config = api.ConsumerConfig(
            durable_name=name,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self._settings.ack_wait_s,
            # Unlimited on the server: a line whose deliveries were used up by crashes would
            # otherwise sit in the queue forever. The runner dead-letters at max_deliver.
            max_deliver=-1,
            max_ack_pending=max(1000, self._settings.concurrency * 8),
            filter_subject=line_subject(tenant, priority, "*"),
        )
        js = self._nc.jetstream()
        await js.add_consumer(LINES_STREAM, config)  # creates, or updates changed settings
        sub = await js.pull_subscribe_bind(durable=name, stream=LINES_STREAM)
        self._subs[queue] = sub
        return sub

    async def _refresh(self) -> None:
        """Read how many lines each tenant has queued (and publish it as a metric)."""
        depth = self._shares.refresh(await self._store.queued())
        for tenant in set(self._depth) - set(depth):
            metrics.BATCH_QUEUE_DEPTH.labels(self._label(tenant)).set(0)
        for tenant, lines in depth.items():
            metrics.BATCH_QUEUE_DEPTH.labels(self._label(tenant)).set(lines)
        self._depth = depth
        self._refreshed = time.monotonic()

    def _want(self) -> int:
        """Line slots to fill now (few while interactive requests arrive)."""
        want = min(64, self._inflight.free)
        if self._interactive():  # interactive traffic first: run only a few lines
            want = min(want, self._settings.yield_concurrency - len(self._inflight))
        return want

    async def _pull(self) -> None:
        while not self._stopping:
            want = self._want()
            if want <= 0:
                if self._inflight.free <= 0:
                    await self._inflight.slot_free()
                else:
                    await asyncio.sleep(YIELD_POLL_S)
                continue
            try:
                await self._pull_once(want)
            except Exception:
                log.warning("batch fetch failed; retrying", exc_info=True)
                await asyncio.sleep(1)

    async def _pull_once(self, want: int) -> None:
        """Fetch lines for the tenant furthest below its share and start them."""
        if time.monotonic() - self._refreshed >= REFRESH_S:
            await self._refresh()
        pick = self._shares.next(want)
        if pick is None:  # nothing queued that is not already running
            await asyncio.sleep(REFRESH_S)
            await self._refresh()
            return
        queue, count = pick
        sub = await self._consumer(queue)
        try:
            msgs = await sub.fetch(count, timeout=EMPTY_FETCH_S)
        except (TimeoutError, NatsTimeout):
            self._shares.drained(queue)
            return
        tenant = queue[0]
        for msg in msgs:
            self._shares.started(tenant)
            await self._inflight.spawn(self._process(msg, tenant))

    async def _record(self, batch_id: str) -> BatchRecord | None:
        """The batch record, cached for a second (cancel is seen within that)."""
        now = time.monotonic()
        cached = self._records.get(batch_id)
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        record = await self._store.get(batch_id)
        self._records[batch_id] = (now, record)
        return record

    async def _process(self, msg: Msg, tenant: str) -> None:
        batch_id = msg.subject.rsplit(".", 1)[-1]
        label = self._label(tenant)
        if msg.metadata.num_delivered == 1 and msg.metadata.timestamp is not None:
            waited = self._clock() - msg.metadata.timestamp.timestamp()
            metrics.BATCH_WAIT.labels(label).observe(max(0.0, waited))
        try:
            await self._process_line(msg, batch_id)
        finally:
            self._shares.finished(tenant)
            metrics.BATCH_TENANT_LINES.labels(label).inc()

    async def _process_line(self, msg: Msg, batch_id: str) -> None:
        try:
            record = await self._record(batch_id)
            if record is None or record.batch.status in _STOPPED:
                await msg.ack()  # cancelled or gone: nothing to do
                return
            await self._run_line(msg, batch_id, record)
        except Exception as exc:
            log.exception("batch %s: line failed in the engine", batch_id)
            await self._dead_letter(msg, batch_id, exc)

    async def _dead_letter(self, msg: Msg, batch_id: str, exc: Exception) -> None:
        """Redeliver, or on the last delivery store the failure so the line is not lost."""
        if msg.metadata.num_delivered < self._settings.max_deliver:
            return  # not acknowledged: redelivered after ack_wait
        with contextlib.suppress(Exception):
            line = _line_decoder.decode(msg.data)
            request_id = result_key(batch_id, line.custom_id).split(".", 1)[1][:24]
            await self._finish(
                msg,
                batch_id,
                line.custom_id,
                "failed",
                result_line(
                    line.custom_id, request_id, None, None, ("engine_error", str(exc)[:300])
                ),
            )

    async def _run_line(self, msg: Msg, batch_id: str, record: BatchRecord) -> None:
        line = _line_decoder.decode(msg.data)
        request_id = result_key(batch_id, line.custom_id).split(".", 1)[1][:24]
        expires = record.batch.expires_at
        if expires is not None and self._clock() > expires:
            await self._finish(
                msg,
                batch_id,
                line.custom_id,
                "expired",
                result_line(
                    line.custom_id,
                    request_id,
                    None,
                    None,
                    ("batch_expired", "the batch expired before this request was run"),
                ),
            )
            return
        body = dict(line.body)
        body.pop("stream", None)
        sink = CollectSink()
        tenant = self._keys.named(record.tenant) if self._keys is not None else None
        caller = Caller(tenant) if tenant is not None else None
        handle = self._endpoints.get(line.url, self._handle)
        await handle(_encoder.encode(body), {headers.REQUEST_ID: request_id}, sink, caller)
        reply = await sink.reply
        if reply.status == 200:
            await self._finish(
                msg,
                batch_id,
                line.custom_id,
                "completed",
                result_line(line.custom_id, request_id, 200, reply.body),
            )
            return
        if reply.status == 429:  # a rate limit (the tenant's or the provider's) means wait
            await msg.nak(delay=_retry_after(reply.headers, self._settings.backoff_s))
            return
        delivered = msg.metadata.num_delivered
        if reply.status in UNAVAILABLE:  # an outage means wait too, while the window lasts
            wait = _unavailable_wait(reply.headers, self._settings.backoff_s, delivered)
            await msg.nak(delay=wait)
            return
        retryable = headers.RETRYABLE in reply.headers or reply.status == 502
        if retryable and delivered < self._settings.max_deliver:
            backoff = self._settings.backoff_s
            await msg.nak(delay=backoff[min(delivered - 1, len(backoff) - 1)] if backoff else None)
            return
        await self._finish(
            msg,
            batch_id,
            line.custom_id,
            "failed",
            result_line(line.custom_id, request_id, reply.status, reply.body),
        )

    async def _finish(
        self, msg: Msg, batch_id: str, custom_id: str, outcome: str, line: bytes
    ) -> None:
        await self._store.put_result(batch_id, custom_id, line)
        await msg.ack()
        self.progress.setdefault(batch_id, Counter())[outcome] += 1
        metrics.BATCH_LINES.labels(outcome).inc()
