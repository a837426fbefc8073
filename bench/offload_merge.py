"""``python -m bench.offload_merge [LINES] [LINE_BYTES]``: peak memory of merging a sub-batch.

A nats-server of our own, the batch store on it, and one offloaded sub-batch of ``LINES``
input lines of about ``LINE_BYTES`` bytes each (20,000 of 2 KB by default) whose provider
results succeeded for nine lines in ten (each result about as large as its line); the rest go
back to the normal path. The broker's merge (:class:`broker.batch.offload_merge.Merger`) runs
under ``tracemalloc``; the peak of Python's allocations during it and its wall time are
printed, with the sizes of the two objects it reads.
"""

from __future__ import annotations

import asyncio
import io
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import msgspec
import nats

from broker.batch.offload_merge import Merger
from broker.batch.offload_plan import input_object, results_object
from edge_runtime.batch_store import BatchStore
from edge_runtime.embedded import EmbeddedNats
from schemas.batch import BatchObject, BatchRecord, BatchStatus
from schemas.offload import OffloadAnswer, OffloadCall, OffloadResult, OffloadState, SubBatch

_encode = msgspec.json.Encoder().encode


def objects(lines: int, line_bytes: int) -> tuple[bytes, bytes]:
    """The sub-batch's input object and its results object."""
    pad = "x" * max(0, line_bytes - 120)
    inputs, results = bytearray(), bytearray()
    for i in range(lines):
        body = {"model": "m", "messages": [{"role": "user", "content": f"{i} {pad}"}]}
        line = {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions"}
        inputs += _encode({**line, "body": body}) + b"\n"
        ok = i % 10 != 0
        answer = {
            "id": f"chatcmpl-{i}",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": pad}}],
            "usage": {"prompt_tokens": 500, "completion_tokens": 500, "total_tokens": 1000},
        }
        raw = msgspec.Raw(_encode(answer) if ok else b"null")
        results += _encode(OffloadResult(i, ok, raw, "" if ok else "failed")) + b"\n"
    return bytes(inputs), bytes(results)


async def run(lines: int, line_bytes: int) -> None:
    """Store a sub-batch's objects, then merge it under tracemalloc."""
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(Path(tmp) / "js", port=-1)
        url = server.start()
        nc = await nats.connect(url)
        try:
            store = await BatchStore.open(nc)
            batch_id = "batch_bench"
            sub = SubBatch(0, "openai", "d", "m", "m", lines, OffloadState.RUNNING, 0, 0, "pb")
            batch = BatchObject(batch_id, "/v1/chat/completions", "file-x", "24h",
                                BatchStatus.IN_PROGRESS, int(time.time()))  # fmt: skip
            record = BatchRecord(batch, offload=[sub])
            await store.create(record)
            data, results = objects(lines, line_bytes)
            await store.put_object(input_object(batch_id, 0), io.BytesIO(data))
            await store.put_object(results_object(batch_id, 0), io.BytesIO(results))
            sizes = f"input {len(data) / 1e6:.1f} MB, results {len(results) / 1e6:.1f} MB"
            del data, results

            async def call(_sub: SubBatch, _call: OffloadCall) -> OffloadAnswer:
                return OffloadAnswer()

            async def publish(_record: BatchRecord) -> None:
                return None

            merger = Merger(store, {}, call, publish)
            tracemalloc.start()
            started = time.perf_counter()
            error = await merger.merge(record, sub)
            took = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert not error, error
            merged = await store.get(batch_id)
            assert merged is not None
            assert merged.offload[0].state is OffloadState.MERGED
            done = merged.offload[0]
            print(
                f"{lines} lines of ~{line_bytes} B ({sizes}): merged {done.succeeded} results,"
                f" re-queued {done.fell_back}; peak Python memory {peak / 1e6:.1f} MB,"
                f" {took:.2f} s"
            )
        finally:
            await nc.close()
            server.stop()


def main() -> None:
    """Entry point: ``[LINES] [LINE_BYTES]``."""
    args = [int(a) for a in sys.argv[1:3]]
    asyncio.run(run(*(args + [20_000, 2_000][len(args) :])))


if __name__ == "__main__":
    main()
