"""Exactly-once submission of native batch offload (OpenAI, Anthropic, Gemini): a broker
that dies after the provider accepted a sub-batch but before the record saved its provider
batch id does not submit it again; the next step finds the provider batch (the worker's
receipt, or the provider's list of batches) and the batch completes with every line once."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter

import msgspec
import pytest

from broker.batch.offload import Offloader
from edge_runtime.batch_store import BatchStore
from schemas.batch import BatchRecord
from schemas.offload import SUBMIT_SETTLE_S, OffloadState, SubBatch, receipt_object
from tests.support.batch import (
    OFFLOAD_ENV,
    batch_stack,
    lines,
    offload_config,
    offload_objects,
    wait_final,
)
from tests.support.fake_provider_batches import FakeBatches, running_batches
from tests.support.stack import Stack, StackFactory, config_from

LINES = 40
SUB_LINES = 20  # two sub-batches
ENV = OFFLOAD_ENV


def config(fake: FakeBatches) -> str:
    return offload_config(fake.base_url, limits=(SUB_LINES, SUB_LINES, SUB_LINES))


class BrokerDied(Exception):
    """The broker's step ends here, as it would if its process were killed."""


async def offloading(
    make_stack: StackFactory, nats_url: str, fake: FakeBatches
) -> tuple[Stack, Offloader, BatchStore]:
    """A stack offloading to ``fake``, its broker's offloader, and the batch records."""
    stack = await batch_stack(make_stack, nats_url, config_from(config(fake)), None, ENV)
    assert stack.brokers[0].batch is not None
    return stack, stack.brokers[0].batch.offloader, await BatchStore.open(stack.nc)


def rows(model: str) -> list[dict[str, object]]:
    return lines(LINES, model, max_tokens=16)


@pytest.mark.parametrize("receipt", [True, False], ids=["receipt", "provider-list"])
@pytest.mark.parametrize(
    ("provider", "model"), [("openai", "gpt"), ("anthropic", "claude"), ("gemini", "gem")]
)
async def test_submit_interrupted_before_the_record_write_is_not_repeated(
    make_stack: StackFactory, nats_url: str, provider: str, model: str, *, receipt: bool
) -> None:
    """Each sub-batch's step dies after the worker's submit answered and before the record
    saved the provider batch id (without the worker's receipt, too: as when the worker died
    right after the provider's answer); the next step finds the provider batch: the provider
    saw one submission per sub-batch, no line ran on the normal path, every custom_id once."""
    async with running_batches(polls=1) as fake:
        stack, offloader, store = await offloading(make_stack, nats_url, fake)
        died: list[int] = []

        async def die(sub: SubBatch) -> None:
            if sub.index in died:
                return
            died.append(sub.index)
            if not receipt:
                await store.files.delete(receipt_object(f"offload-{batch_id}-{sub.index}"))
            raise BrokerDied

        offloader.after_submit = die
        body = {
            "lines": rows(model),
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        reply = await stack.nc.request("llm.batch.submit", msgspec.json.encode(body), timeout=30)
        batch_id = msgspec.json.decode(reply.data)["id"]
        final = await asyncio.wait_for(wait_final(stack.nc, batch_id), 30)

        assert sorted(died) == [0, 1]  # each sub-batch's first step died at the fault point
        assert [len(b.rows) for b in fake.created(provider)] == [SUB_LINES, SUB_LINES]
        assert not [b for b in fake.batches.values() if b.kind != provider]
        assert (fake.list_calls[provider] > 0) is not receipt  # the list only without receipt
        assert final["status"] == "completed"
        assert final["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
        assert final["offload"]["completed"] == {provider: LINES}
        assert not fake.sync_calls
        buffer = io.BytesIO()
        await store.read_file(final["output_file_id"], buffer)
        out = [json.loads(line) for line in buffer.getvalue().splitlines()]
        assert Counter(line["custom_id"] for line in out) == {f"req-{i}": 1 for i in range(LINES)}
        assert await offload_objects(stack.nc, batch_id) == []
        assert {line["offload"]["batch_id"] for line in out} == {
            b.id for b in fake.created(provider)
        }


@pytest.mark.parametrize("end", ["cancelled", "expired"])
async def test_batch_whose_submits_cannot_be_found_still_ends(
    make_stack: StackFactory, nats_url: str, end: str
) -> None:
    """Each sub-batch's step dies after the worker's submit answered, without the receipt,
    and the provider's list of batches is refused (a revoked key, an outage): ``find``
    cannot tell whether the provider holds them. Once the batch is cancelled (and a submit
    in flight has surely settled), the sub-batches are given up; once it is past its
    deadline, their lines expire on the normal path. Nothing is submitted again, no line
    runs, and the batch ends; it used to ask ``find`` for ever, the batch stuck."""
    async with running_batches(polls=10**9) as fake:
        fake.list_status = 401
        stack, offloader, store = await offloading(make_stack, nats_url, fake)
        died: list[int] = []

        async def die(sub: SubBatch) -> None:
            died.append(sub.index)
            await store.files.delete(receipt_object(f"offload-{batch_id}-{sub.index}"))
            raise BrokerDied

        offloader.after_submit = die
        body = {
            "lines": rows("gpt"),
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        reply = await stack.nc.request("llm.batch.submit", msgspec.json.encode(body), timeout=30)
        batch_id = msgspec.json.decode(reply.data)["id"]
        kv = await stack.nc.jetstream().key_value("llm_edge_batches")
        watcher = await kv.watch(f"batch.{batch_id}")
        try:
            async with asyncio.timeout(30):  # both submitted, both intents left unresolved
                async for entry in watcher:  # (each step's end writes the record)
                    asked = fake.list_calls["openai"] > 0
                    if entry is not None and entry.value and sorted(died) == [0, 1] and asked:
                        record = msgspec.json.decode(entry.value, type=BatchRecord)
                        if {s.state for s in record.offload} == {OffloadState.SUBMITTING}:
                            break
        finally:
            await watcher.stop()
        assert fake.list_calls["openai"] > 0  # find asked the provider, and was refused
        if end == "cancelled":
            await stack.nc.request("llm.batch.cancel", msgspec.json.encode({"id": batch_id}))

        def settled(record: BatchRecord) -> BatchRecord:
            for sub in record.offload:
                sub.submit_at -= SUBMIT_SETTLE_S
            if end == "expired":
                record.batch.expires_at = int(time.time()) - 1
            return record

        await store.update(batch_id, settled)
        final = await asyncio.wait_for(wait_final(stack.nc, batch_id), 20)

        assert final["status"] == end
        assert final["request_counts"]["completed"] == 0
        assert final["request_counts"]["failed"] == (LINES if end == "expired" else 0)
        assert [len(b.rows) for b in fake.created("openai")] == [SUB_LINES, SUB_LINES]
        assert not fake.sync_calls
        assert await offload_objects(stack.nc, batch_id) == []
