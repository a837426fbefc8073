"""Merges an ended provider batch back into our batch.

Each succeeded line's result is stored under its ``custom_id`` (priced at the deployment's
batch rate, marked ``offload``), and every other line is queued on the normal path unless a
result is stored for it already. The sub-batch is marked merged in the record by
compare-and-set, which is also where its counts are added, so a broker killed anywhere in a
merge leaves one the next broker repeats without counting or charging twice. Its objects in
the files bucket (input, results, receipt) are dropped once the record says merged; a broker
killed before that leaves them to the batch's finalization, which drops every sub-batch's.

Memory stays bounded whatever the sub-batch's size: its objects are read line by line, piece by
piece (:meth:`edge_runtime.batch_store.BatchStore.object_lines`), in three passes: the input
for its ``custom_id`` list, the results (each stored as it is read, marked in a byte per
line), then the input again for the lines to re-queue, published a window at a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import msgspec

from broker import metrics
from broker.batch.offload_plan import input_object, objects, results_object
from broker.batch.runner import result_line
from broker.tenancy.usage import metered
from broker.upstream.deployments import Deployment
from edge_runtime.batch_store import PUBLISH_WINDOW, BatchStore
from schemas.batch import BatchOffload, BatchRecord, BatchStatus
from schemas.jetstream import result_key
from schemas.offload import (
    OffloadAnswer,
    OffloadCall,
    OffloadOp,
    OffloadResult,
    OffloadState,
    SubBatch,
)

__all__ = ["REQUEUE_BYTES", "Call", "Merger", "Spend"]

#: ``(tenant, model, provider, usd)``: adds an offloaded line's cost to the tenant's spend.
Spend = Callable[[str, str, str, float], Awaitable[None]]
#: A call on a sub-batch's provider's batch subject.
Call = Callable[[SubBatch, OffloadCall], Awaitable[OffloadAnswer]]
_encode = msgspec.json.Encoder().encode
_result = msgspec.json.Decoder(OffloadResult)
#: Re-queued lines are published at most this many bytes at a time (or PUBLISH_WINDOW lines).
REQUEUE_BYTES = 8 * 1024 * 1024


class _CustomId(msgspec.Struct):
    """Just an input line's ``custom_id`` (its other fields are skipped, not decoded)."""

    custom_id: str


_custom_id = msgspec.json.Decoder(_CustomId)


class Merger:
    """Stores a sub-batch's results, queues its other lines, marks it merged.

    Args:
        store: the batch resources.
        deployments: every configured deployment by name (its batch price).
        call: asks the provider's workers (for the results).
        publish: publishes a batch's event.
        spend: adds a merged line's cost to its tenant's spend.
    """

    def __init__(
        self,
        store: BatchStore,
        deployments: Mapping[str, Deployment],
        call: Call,
        publish: Callable[[BatchRecord], Awaitable[None]],
        spend: Spend | None = None,
    ) -> None:
        self._store = store
        self._deployments = deployments
        self._call = call
        self._publish = publish
        self._spend = spend

    async def merge(self, record: BatchRecord, sub: SubBatch, *, fetch: bool = True) -> str:
        """Merge ``sub`` (``fetch=False``: the provider ran none of it); the error that
        stopped it (the next poll asks again), or ``""``.

        Memory holds the sub-batch's ``custom_id`` list and a byte per line, never a whole
        object: the input is read twice and the results once, piece by piece.
        """
        batch_id = record.batch.id
        if fetch:
            call = OffloadCall(
                OffloadOp.RESULTS,
                provider_batch=sub.provider_batch,
                results=results_object(batch_id, sub.index),
            )
            answer = await self._call(sub, call)
            if answer.error:
                return answer.error
        name = input_object(batch_id, sub.index)
        ids = [_custom_id.decode(line).custom_id async for line in self._store.object_lines(name)]
        stored = bytearray(len(ids))  # 1: line i's result is stored by this merge
        ok, cost = await self._store_results(record, sub, ids, stored) if fetch else (0, 0.0)
        fell_back = 0
        if record.batch.status is BatchStatus.IN_PROGRESS:  # a cancelled batch runs no more
            fell_back = await self._requeue(record, name, ids, stored)
        await self.merged(batch_id, sub, ok, fell_back, cost)
        return ""

    async def _store_results(
        self, record: BatchRecord, sub: SubBatch, ids: list[str], stored: bytearray
    ) -> tuple[int, float]:
        """Store each succeeded line's result (the first, should a line have several) as the
        results object is read, marking it in ``stored``; how many, and what they cost."""
        deployment = self._deployments.get(sub.deployment)
        batch_id, count, total = record.batch.id, 0, 0.0
        async for raw in self._store.object_lines(results_object(batch_id, sub.index)):
            result = _result.decode(raw)
            i = result.i
            if not result.ok or not 0 <= i < len(ids) or stored[i]:
                continue
            stored[i], count = 1, count + 1
            body = bytes(result.body)
            found = metered(body)
            cost = 0.0
            if deployment is not None and found is not None:
                cost = deployment.batch_cost(found.tokens)
            total += cost
            custom_id = ids[i]
            request_id = result_key(batch_id, custom_id).split(".", 1)[1][:24]
            mark = {
                "provider": sub.provider,
                "deployment": sub.deployment,
                "batch_id": sub.provider_batch,
                "cost_usd": round(cost, 8),
            }
            line = result_line(custom_id, request_id, 200, body)
            await self._store.put_result(
                batch_id, custom_id, line[:-1] + b',"offload":' + _encode(mark) + b"}"
            )
        return count, total

    async def _requeue(
        self, record: BatchRecord, name: str, ids: list[str], stored: bytearray
    ) -> int:
        """Queue on the normal path, window by window as the input object is read, each line
        without a result (from this merge or stored before it); how many."""
        batch_id, count = record.batch.id, 0
        window: list[tuple[str, bytes]] = []
        size = 0

        async def publish() -> None:
            await self._store.publish_lines(
                batch_id, window, tenant=record.tenant, priority=record.priority
            )
            window.clear()

        i = -1
        async for line in self._store.object_lines(name):
            i += 1
            if i >= len(ids) or stored[i] or await self._store.has_result(batch_id, ids[i]):
                continue
            window.append((ids[i], line))
            count, size = count + 1, size + len(line)
            if len(window) >= PUBLISH_WINDOW or size >= REQUEUE_BYTES:
                await publish()
                size = 0
        if window:
            await publish()
        return count

    async def merged(
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
        # merged now or before (a repeat after a crash): its objects are read no more
        await self._store.drop_objects(objects(batch_id, index_sub.index))
        if not won or record is None:
            return
        provider = index_sub.provider
        metrics.BATCH_OFFLOAD_LINES.labels(provider, "completed").inc(ok)
        metrics.BATCH_OFFLOAD_LINES.labels(provider, "fallback").inc(fell_back)
        if self._spend is not None and cost > 0:
            await self._spend(record.tenant, index_sub.model, provider, cost)
        await self._publish(record)
