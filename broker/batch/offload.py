"""Runs a batch's sub-batches on the providers' own Batch APIs and merges them back.

The lifecycle calls :meth:`Offloader.step` under the batch's lease every ``offload_poll_s``
while a sub-batch is not yet merged. A step submits pending sub-batches, asks running ones
for their status (cancelling one whose provider batch would miss our deadline less
``offload_margin_s``, or whose batch we cancel), and merges an ended one: each succeeded
line's result is stored under its ``custom_id`` (priced at the deployment's batch rate,
marked ``offload``), and every other line is queued on the normal path unless a result is
stored for it already. The sub-batch is marked merged in the record by compare-and-set,
which is also where its counts are added, so a broker killed anywhere in a step leaves a
step the next broker repeats without counting or charging twice. Every state lives in the
batch record (JetStream KV) and the files bucket: nothing of it is held in memory.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import msgspec
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from broker import metrics
from broker.batch.offload_plan import input_object, results_object
from broker.batch.runner import result_line
from broker.batch.settings import BatchSettings
from broker.tenancy.usage import metered
from broker.upstream.deployments import Deployment
from edge_runtime.batch_store import BatchStore
from schemas.batch import BatchOffload, BatchRecord, BatchStatus, InputLine
from schemas.jetstream import result_key
from schemas.offload import (
    OffloadAnswer,
    OffloadCall,
    OffloadOp,
    OffloadResult,
    OffloadState,
    SubBatch,
)
from schemas.subjects import provider_batch_subject

__all__ = ["OFFLOAD_CALL_TIMEOUT_S", "Offloader", "Spend"]

log = logging.getLogger("llm_edge.batch")

#: How long the broker waits for a worker's batch call (its upstream calls take 120 s at most).
OFFLOAD_CALL_TIMEOUT_S = 150.0
#: ``(tenant, model, provider, usd)``: adds an offloaded line's cost to the tenant's spend.
Spend = Callable[[str, str, str, float], Awaitable[None]]
_encode = msgspec.json.Encoder().encode
_answer = msgspec.json.Decoder(OffloadAnswer)
_result = msgspec.json.Decoder(OffloadResult)
_input = msgspec.json.Decoder(InputLine)


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
        self._deployments = deployments
        self._publish = publish
        self._spend = spend
        self._clock = clock

    async def upload(self, batch_id: str, subs: list[tuple[SubBatch, Path]]) -> None:
        """Store each sub-batch's input lines (same name, same bytes: a repeat is harmless)."""
        for sub, path in subs:
            with path.open("rb") as handle:
                await self._store.put_object(input_object(batch_id, sub.index), handle)

    async def step(self, record: BatchRecord) -> None:
        """Move every unmerged sub-batch of ``record`` on by one step."""
        for sub in record.offload:
            if sub.state is OffloadState.MERGED:
                continue
            try:
                await self._advance(record, sub)
            except (NatsTimeout, TimeoutError):
                log.warning("batch %s: offload call timed out; next poll", record.batch.id)

    def _late(self, record: BatchRecord) -> bool:
        expires = record.batch.expires_at
        return expires is not None and self._clock() >= expires - self._settings.offload_margin_s

    async def _advance(self, record: BatchRecord, sub: SubBatch) -> None:
        batch_id = record.batch.id
        stopping = record.batch.status is not BatchStatus.IN_PROGRESS
        if sub.state is OffloadState.PENDING:
            if stopping:  # cancelled before it was sent: nothing ran, nothing to merge
                await self._merged(batch_id, sub, 0, 0, 0.0)
                return
            await self._submit(record, sub)
            return
        cancel = (stopping or self._late(record)) and not sub.cancel_sent
        try:
            answer = await self._call(
                sub,
                OffloadCall(
                    OffloadOp.CANCEL if cancel else OffloadOp.STATUS,
                    provider_batch=sub.provider_batch,
                ),
            )
        except _NoWorker:
            return  # the provider's workers are away: ask again next poll
        if answer.error:
            log.warning("batch %s: provider batch status: %s", batch_id, answer.error)
            return
        if cancel:
            await self._save(batch_id, sub.index, cancel_sent=True)
        if answer.ended:
            await self.merge(record, sub)

    async def _submit(self, record: BatchRecord, sub: SubBatch) -> None:
        batch_id = record.batch.id
        call = OffloadCall(
            OffloadOp.SUBMIT,
            input=input_object(batch_id, sub.index),
            upstream_model=sub.upstream_model,
        )
        try:
            answer = await self._call(sub, call)
        except _NoWorker:
            answer = OffloadAnswer(error="no worker serves the provider's Batch API", status=404)
        if answer.error and (answer.status < 500 or self._late(record)):
            log.info(
                "batch %s: sub-batch %d runs on the normal path: %s",
                batch_id,
                sub.index,
                answer.error,
            )
            await self.merge(record, sub, fetch=False)
            return
        if answer.error:
            return  # the provider is unavailable now: submit again next poll
        metrics.BATCH_OFFLOAD_LINES.labels(sub.provider, "submitted").inc(sub.lines)
        await self._save(batch_id, sub.index, provider_batch=answer.provider_batch)

    async def _call(self, sub: SubBatch, call: OffloadCall) -> OffloadAnswer:
        try:
            reply = await self._nc.request(
                provider_batch_subject(sub.provider), _encode(call), timeout=OFFLOAD_CALL_TIMEOUT_S
            )
        except NoRespondersError:
            raise _NoWorker from None
        return _answer.decode(reply.data)

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

    async def merge(self, record: BatchRecord, sub: SubBatch, *, fetch: bool = True) -> None:
        """Store the provider's results, queue the other lines, mark the sub-batch merged."""
        batch_id = record.batch.id
        results: dict[int, bytes] = {}
        if fetch:
            call = OffloadCall(
                OffloadOp.RESULTS,
                provider_batch=sub.provider_batch,
                results=results_object(batch_id, sub.index),
            )
            answer = await self._call(sub, call)
            if answer.error:
                log.warning("batch %s: provider results: %s", batch_id, answer.error)
                return  # next poll asks again
        lines = await self._read(input_object(batch_id, sub.index))
        if fetch:
            raw = await self._read(results_object(batch_id, sub.index))
            results = {r.i: bytes(r.body) for r in map(_result.decode, raw) if r.ok}
        ok, cost = await self._store_results(record, sub, _inputs(lines), results)
        rest: list[tuple[str, bytes]] = []
        if record.batch.status is BatchStatus.IN_PROGRESS:  # a cancelled batch runs no more
            for i, (line, raw_line) in enumerate(_inputs(lines)):
                if i not in results and not await self._store.has_result(batch_id, line.custom_id):
                    rest.append((line.custom_id, raw_line))
        if rest:
            await self._store.publish_lines(
                batch_id, rest, tenant=record.tenant, priority=record.priority
            )
        await self._merged(batch_id, sub, ok, len(rest), cost)

    async def _read(self, name: str) -> list[bytes]:
        """An object's lines (a sub-batch's lines are held while it is merged)."""
        buffer = io.BytesIO()
        await self._store.read_file(name, buffer)
        return [line for line in buffer.getvalue().splitlines() if line.strip()]

    async def _store_results(
        self,
        record: BatchRecord,
        sub: SubBatch,
        lines: Iterator[tuple[InputLine, bytes]],
        results: dict[int, bytes],
    ) -> tuple[int, float]:
        """Store each succeeded line's result; how many, and what they cost."""
        deployment = self._deployments.get(sub.deployment)
        batch_id, total = record.batch.id, 0.0
        for i, (line, _) in enumerate(lines):
            body = results.get(i)
            if body is None:
                continue
            found = metered(body)
            cost = 0.0
            if deployment is not None and found is not None:
                cost = deployment.batch_cost(found.tokens)
            total += cost
            request_id = result_key(batch_id, line.custom_id).split(".", 1)[1][:24]
            mark = {
                "provider": sub.provider,
                "deployment": sub.deployment,
                "batch_id": sub.provider_batch,
                "cost_usd": round(cost, 8),
            }
            stored = result_line(line.custom_id, request_id, 200, body)
            await self._store.put_result(
                batch_id, line.custom_id, stored[:-1] + b',"offload":' + _encode(mark) + b"}"
            )
        return len(results), total

    async def _merged(
        self, batch_id: str, index_sub: SubBatch, ok: int, fell_back: int, cost: float
    ) -> None:
        """Mark the sub-batch merged and count it (once: the compare-and-set decides)."""
        won = False

        def change(record: BatchRecord) -> BatchRecord | None:
            nonlocal won
            sub = record.offload[index_sub.index]
            if sub.state is OffloadState.MERGED:
                won = False
                return None
            won = True
            sub.state, sub.succeeded, sub.fell_back = OffloadState.MERGED, ok, fell_back
            summary = record.batch.offload or BatchOffload()
            summary.completed[sub.provider] = summary.completed.get(sub.provider, 0) + ok
            summary.fallback += fell_back
            record.batch.offload = summary
            if record.batch.status is BatchStatus.IN_PROGRESS:
                record.batch.request_counts.completed += ok
            return record

        record = await self._store.update(batch_id, change)
        if not won or record is None:
            return
        provider = index_sub.provider
        metrics.BATCH_OFFLOAD_LINES.labels(provider, "completed").inc(ok)
        metrics.BATCH_OFFLOAD_LINES.labels(provider, "fallback").inc(fell_back)
        if self._spend is not None and cost > 0:
            await self._spend(record.tenant, index_sub.model, provider, cost)
        await self._publish(record)


def _inputs(lines: list[bytes]) -> Iterator[tuple[InputLine, bytes]]:
    """Each input line decoded, with its bytes."""
    for raw in lines:
        yield _input.decode(raw), raw
