"""Runs a batch's sub-batches on the providers' own Batch APIs.

The lifecycle runs :meth:`Offloader.run` (one step under the batch's lease) every
``offload_poll_s`` while a sub-batch is not yet merged. A step submits pending sub-batches,
asks running ones for their status (cancelling one whose provider batch would miss our
deadline less ``offload_margin_s``, or whose batch we cancel), and merges an ended one
(:mod:`broker.batch.offload_merge`). Every state lives in the batch record (JetStream KV)
and the files bucket: nothing of it is held in memory.

A submit is exactly-once: the intent (state ``submitting``, ``submit_at``) is written to the
record before the worker is asked, and a step that finds an intent without a provider batch
id (the broker died, or the call timed out, after the provider accepted it) asks the worker
to ``find`` that provider batch instead of submitting again. Only when the provider surely
holds none (:data:`~schemas.offload.SUBMIT_SETTLE_S` after the intent) is it submitted again.

A submit the provider rate-limited (429: it created nothing) puts the sub-batch back to
pending until the provider's ``Retry-After`` (else the next poll); only when that would miss
our deadline less ``offload_margin_s`` do its lines run on the normal path. Another 4xx is
a refusal retrying cannot help: the lines run on the normal path at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from pathlib import Path

import msgspec
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from broker import metrics
from broker.batch.lease import Leases, release
from broker.batch.offload_merge import Merger, Spend
from broker.batch.offload_plan import input_object
from broker.batch.settings import BatchSettings
from broker.upstream.deployments import Deployment
from edge_runtime.batch_store import BatchStore
from schemas.batch import BatchRecord, BatchStatus
from schemas.offload import (
    SUBMIT_SETTLE_S,
    SUBMIT_WINDOW_S,
    OffloadAnswer,
    OffloadCall,
    OffloadOp,
    OffloadState,
    SubBatch,
)
from schemas.subjects import provider_batch_subject

__all__ = ["OFFLOAD_CALL_TIMEOUT_S", "Offloader", "Spend"]

log = logging.getLogger("llm_edge.batch")

#: How long the broker waits for a worker's batch call (its upstream calls take 120 s at most).
OFFLOAD_CALL_TIMEOUT_S = 150.0
_encode = msgspec.json.Encoder().encode
_answer = msgspec.json.Decoder(OffloadAnswer)


class _NoWorker(Exception):
    """No worker of the provider serves its Batch API."""


class Offloader:
    """Submits, watches and merges sub-batches.

    Args:
        nc: NATS connection (the workers' batch subjects).
        store: the batch resources.
        settings: poll interval, margin.
        deployments: every configured deployment by name (its batch price).
        publish: publishes a batch's event.
        spend: adds a merged line's cost to its tenant's spend.
        clock: wall-clock seconds.

    Attributes:
        after_submit: a fault point: awaited between a worker's answer to a submit and the
            record's write of the provider batch id (tests end a sub-batch's step there, as
            a broker that dies at that moment would).
    """

    def __init__(  # noqa: PLR0917  (the collaborators, injected in the engine)
        self,
        nc: Client,
        store: BatchStore,
        settings: BatchSettings,
        deployments: Mapping[str, Deployment],
        publish: Callable[[BatchRecord], Awaitable[None]],
        spend: Spend | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._store = store
        self._settings = settings
        self._clock = clock
        self._merger = Merger(store, deployments, self._call, publish, spend)
        self.after_submit: Callable[[SubBatch], Awaitable[None]] | None = None

    async def upload(self, batch_id: str, subs: list[tuple[SubBatch, Path]]) -> None:
        """Store each sub-batch's input lines (same name, same bytes: a repeat is harmless)."""
        for sub, path in subs:
            with path.open("rb") as handle:
                await self._store.put_object(input_object(batch_id, sub.index), handle)

    async def run(self, leases: Leases, batch_id: str) -> None:
        """One step of a batch's provider batches, under its lease; the next one is due
        ``offload_poll_s`` after it ended."""
        claimed = await leases.take(batch_id, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING)
        if claimed is None:
            return
        record, token = claimed
        async with leases.holding(batch_id, token):
            await self.step(record)
        next_poll = self._clock() + self._settings.offload_poll_s

        def later(record: BatchRecord) -> None:
            record.offload_next = next_poll

        await self._store.update(batch_id, release(token, later))

    async def step(self, record: BatchRecord) -> None:
        """Move every unmerged sub-batch of ``record`` on by one step. A sub-batch's failure
        (a call timed out, an answer that does not decode, a store write) puts off its own
        step to the next poll: the others still go on, and the step ends, so the next one is
        ``offload_poll_s`` away (every change is a compare-and-set a repeat can redo)."""
        for sub in record.offload:
            if sub.state is OffloadState.MERGED:
                continue
            try:
                await self._advance(record, sub)
            except (NatsTimeout, TimeoutError):
                metrics.BATCH_OFFLOAD_DEFERRED.labels(sub.provider, "timeout").inc()
                log.warning(
                    "batch %s: sub-batch %d: offload call timed out; next poll",
                    record.batch.id,
                    sub.index,
                )
            except Exception:
                metrics.BATCH_OFFLOAD_DEFERRED.labels(sub.provider, "error").inc()
                log.warning(
                    "batch %s: sub-batch %d: offload step failed; next poll",
                    record.batch.id,
                    sub.index,
                    exc_info=True,
                )

    def _late(self, record: BatchRecord) -> bool:
        expires = record.batch.expires_at
        return expires is not None and self._clock() >= expires - self._settings.offload_margin_s

    async def _advance(self, record: BatchRecord, sub: SubBatch) -> None:
        stopping = record.batch.status is not BatchStatus.IN_PROGRESS
        if sub.state is OffloadState.PENDING:
            if stopping:  # cancelled before it was sent: nothing ran, nothing to merge
                await self._merger.merged(record.batch.id, sub, 0, 0, 0.0)
            elif self._late(record):  # it would be cancelled at its first look: run it here
                await self._merge(record, sub, fetch=False)
            elif self._clock() < sub.retry_at:
                return  # the provider rate-limited its submit: not yet
            else:
                await self._submit(record, sub)
            return
        if sub.state is OffloadState.SUBMITTING:
            await self._resume(record, sub, stopping=stopping)
            return
        await self._watch(record, sub, stopping=stopping)

    async def _watch(self, record: BatchRecord, sub: SubBatch, *, stopping: bool) -> None:
        """Ask a running provider batch's status (or cancel it); merge it once it ended."""
        batch_id = record.batch.id
        cancel = (stopping or self._late(record)) and not sub.cancel_sent
        status = OffloadCall(OffloadOp.STATUS, provider_batch=sub.provider_batch)
        try:
            if cancel:
                answer = await self._call(sub, msgspec.structs.replace(status, op=OffloadOp.CANCEL))
                if answer.error:  # refused: e.g. the batch ended meanwhile; its status says
                    log.info("batch %s: provider batch cancel: %s", batch_id, answer.error)
                    cancel, answer = False, await self._call(sub, status)
            else:
                answer = await self._call(sub, status)
        except _NoWorker:
            return  # the provider's workers are away: ask again next poll
        if answer.error:
            log.warning("batch %s: provider batch status: %s", batch_id, answer.error)
            return
        if cancel:
            await self._save(batch_id, sub.index, cancel_sent=True)
        if answer.ended:
            await self._merge(record, sub)

    async def _merge(self, record: BatchRecord, sub: SubBatch, *, fetch: bool = True) -> None:
        error = await self._merger.merge(record, sub, fetch=fetch)
        if error:
            log.warning("batch %s: provider results: %s", record.batch.id, error)

    async def _submit(self, record: BatchRecord, sub: SubBatch) -> None:
        """Record the intent, then ask a worker to submit the sub-batch."""
        batch_id, now = record.batch.id, self._clock()
        if not await self._intend(batch_id, sub.index, now):
            return
        call = OffloadCall(
            OffloadOp.SUBMIT,
            input=input_object(batch_id, sub.index),
            upstream_model=sub.upstream_model,
            not_after=now + SUBMIT_WINDOW_S,
        )
        try:
            answer = await self._call(sub, call)
        except _NoWorker:  # no worker took the call: nothing was submitted
            answer = OffloadAnswer(error="no worker serves the provider's Batch API", status=404)
        if answer.status == HTTPStatus.TOO_MANY_REQUESTS:
            await self._throttled(record, sub, answer, intent=now)
            return
        if answer.error and answer.status < 500:  # refused: no provider batch was created
            log.info("batch %s: sub-batch %d: normal path: %s", batch_id, sub.index, answer.error)
            await self._merge(record, sub, fetch=False)
            return
        if answer.error:  # it may have been created all the same: the next steps find out
            log.warning("batch %s: sub-batch %d: submit: %s", batch_id, sub.index, answer.error)
            return
        if self.after_submit is not None:
            await self.after_submit(sub)
        await self._running(batch_id, sub, answer.provider_batch)

    async def _throttled(
        self, record: BatchRecord, sub: SubBatch, answer: OffloadAnswer, *, intent: float
    ) -> None:
        """The provider rate-limited the submit (it created nothing): back to pending until
        its ``Retry-After`` (else the next poll), or to the normal path if that is too late."""
        batch_id, expires = record.batch.id, record.batch.expires_at
        metrics.BATCH_OFFLOAD_DEFERRED.labels(sub.provider, "rate_limited").inc()
        retry_at = self._clock() + answer.retry_after if answer.retry_after > 0 else 0.0
        if expires is not None and retry_at >= expires - self._settings.offload_margin_s:
            log.info("batch %s: sub-batch %d: normal path: rate-limited", batch_id, sub.index)
            await self._merge(record, sub, fetch=False)
            return
        log.info("batch %s: sub-batch %d: submit rate-limited", batch_id, sub.index)
        index = sub.index

        def change(record: BatchRecord) -> BatchRecord | None:
            sub = record.offload[index]
            if sub.state is not OffloadState.SUBMITTING or sub.submit_at != intent:
                return None
            sub.state, sub.submit_at, sub.retry_at = OffloadState.PENDING, 0.0, retry_at
            return record

        await self._store.update(batch_id, change)

    async def _resume(self, record: BatchRecord, sub: SubBatch, *, stopping: bool) -> None:
        """A submit whose provider batch id was never recorded: find it, else (once the
        provider surely holds none) submit again, or give the lines to the normal path."""
        batch_id = record.batch.id
        call = OffloadCall(
            OffloadOp.FIND, input=input_object(batch_id, sub.index), since=sub.submit_at
        )
        try:
            answer = await self._call(sub, call)
        except _NoWorker:
            answer = OffloadAnswer(error="no worker serves the provider's Batch API", status=404)
        if answer.error:
            log.info("batch %s: sub-batch %d: find: %s", batch_id, sub.index, answer.error)
            await self._unfound(record, sub, stopping=stopping)
            return
        if answer.provider_batch:
            log.info("batch %s: sub-batch %d: found %s", batch_id, sub.index, answer.provider_batch)
            await self._running(batch_id, sub, answer.provider_batch)
            return
        if self._clock() < sub.submit_at + SUBMIT_SETTLE_S:
            return  # a submit still in flight may yet create it: look again next poll
        if stopping:
            await self._merger.merged(batch_id, sub, 0, 0, 0.0)
        elif self._late(record):
            await self._merge(record, sub, fetch=False)
        else:
            await self._submit(record, sub)

    async def _unfound(self, record: BatchRecord, sub: SubBatch, *, stopping: bool) -> None:
        """A submit ``find`` cannot resolve (the provider's list refused, no worker) must not
        hold the batch for ever: once the batch is cancelled (and a submit in flight has
        settled), its lines are given up, and once it is past its deadline they expire on the
        normal path. Neither runs a line twice; a provider batch find could not see is left
        to run unmerged."""
        now, expires = self._clock(), record.batch.expires_at
        if stopping and now >= sub.submit_at + SUBMIT_SETTLE_S:
            log.warning("batch %s: sub-batch %d: given up unfound", record.batch.id, sub.index)
            await self._merger.merged(record.batch.id, sub, 0, 0, 0.0)
        elif not stopping and expires is not None and now > expires:
            log.warning("batch %s: sub-batch %d: expired unfound", record.batch.id, sub.index)
            await self._merge(record, sub, fetch=False)

    async def _call(self, sub: SubBatch, call: OffloadCall) -> OffloadAnswer:
        try:
            reply = await self._nc.request(
                provider_batch_subject(sub.provider), _encode(call), timeout=OFFLOAD_CALL_TIMEOUT_S
            )
        except NoRespondersError:
            raise _NoWorker from None
        return _answer.decode(reply.data)

    async def _intend(self, batch_id: str, index: int, now: float) -> bool:
        """Write the submit's intent; whether the sub-batch is still to be submitted."""

        def change(record: BatchRecord) -> BatchRecord | None:
            sub = record.offload[index]
            if sub.state not in {OffloadState.PENDING, OffloadState.SUBMITTING}:
                return None
            sub.state, sub.submit_at = OffloadState.SUBMITTING, now
            return record

        record = await self._store.update(batch_id, change)
        return record is not None and record.offload[index].submit_at == now

    async def _running(self, batch_id: str, sub: SubBatch, provider_batch: str) -> None:
        metrics.BATCH_OFFLOAD_LINES.labels(sub.provider, "submitted").inc(sub.lines)
        await self._save(batch_id, sub.index, provider_batch=provider_batch)

    async def _save(
        self, batch_id: str, index: int, *, provider_batch: str = "", cancel_sent: bool = False
    ) -> None:
        def change(record: BatchRecord) -> BatchRecord | None:
            sub = record.offload[index]
            if sub.state is OffloadState.MERGED:
                return None
            if provider_batch:
                sub.provider_batch, sub.state = provider_batch, OffloadState.RUNNING
            sub.cancel_sent = sub.cancel_sent or cancel_sent
            return record

        await self._store.update(batch_id, change)
