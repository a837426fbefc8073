"""Merges an ended provider batch back into our batch.

Each succeeded line's result is stored under its ``custom_id`` (priced at the deployment's
batch rate, marked ``offload``), and every other line is queued on the normal path unless a
result is stored for it already. The sub-batch is marked merged in the record by
compare-and-set, which is also where its counts are added, so a broker killed anywhere in a
merge leaves one the next broker repeats without counting or charging twice. Its objects in
the files bucket (input, results, receipt) are dropped once the record says merged; a broker
killed before that leaves them to the batch's finalization, which drops every sub-batch's.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable, Iterator, Mapping

import msgspec

from broker import metrics
from broker.batch.offload_plan import input_object, objects, results_object
from broker.batch.runner import result_line
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

__all__ = ["Call", "Merger", "Spend"]

#: ``(tenant, model, provider, usd)``: adds an offloaded line's cost to the tenant's spend.
Spend = Callable[[str, str, str, float], Awaitable[None]]
#: A call on a sub-batch's provider's batch subject.
Call = Callable[[SubBatch, OffloadCall], Awaitable[OffloadAnswer]]
_encode = msgspec.json.Encoder().encode
_result = msgspec.json.Decoder(OffloadResult)
_input = msgspec.json.Decoder(InputLine)


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
        stopped it (the next poll asks again), or ``""``."""
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
                return answer.error
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
        await self.merged(batch_id, sub, ok, len(rest), cost)
        return ""

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


def _inputs(lines: list[bytes]) -> Iterator[tuple[InputLine, bytes]]:
    """Each input line decoded, with its bytes."""
    for raw in lines:
        yield _input.decode(raw), raw
