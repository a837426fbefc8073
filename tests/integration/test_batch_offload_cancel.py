"""Cancelling a batch whose lines run on a provider's Batch API (OpenAI, Anthropic, Gemini):
the provider batch is cancelled upstream, its finished lines are kept, and the batch ends
``cancelled`` even when the provider refuses the cancel because its batch ended meanwhile."""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter

import msgspec
import pytest

from edge_runtime.batch_store import BatchStore
from schemas.batch import BatchRecord
from schemas.offload import OffloadState
from tests.support.batch import (
    OFFLOAD_ENV,
    batch_stack,
    lines,
    offload_config,
    offload_objects,
    record_until,
    wait_final,
)
from tests.support.fake_provider_batches import FakeBatches, running_batches
from tests.support.stack import StackFactory, config_from

LINES = 30
ENV = OFFLOAD_ENV


def config(fake: FakeBatches) -> str:
    # offload_poll_s is an hour: after its submit, a provider batch is looked at again only
    # when the test says so (it moves the record's offload_next)
    return offload_config(fake.base_url, offload_poll_s=3600)


def rows(model: str) -> list[dict[str, object]]:
    return lines(LINES, model, max_tokens=16)


@pytest.mark.parametrize(
    ("provider", "model"), [("openai", "gpt"), ("anthropic", "claude"), ("gemini", "gem")]
)
async def test_cancel_refused_because_the_provider_batch_ended_still_ends_the_batch(
    make_stack: StackFactory, nats_url: str, provider: str, model: str
) -> None:
    """The provider batch ends between two looks; our batch is then cancelled and the
    provider refuses to cancel a batch that has ended (as the real APIs do). The broker reads
    the batch's status instead, merges its results, and the batch ends ``cancelled`` with
    every line's result once (it used to ask the cancel again at every poll, for ever)."""
    async with running_batches(polls=10**9) as fake:  # in progress until the test says
        fake.refuse_ended_cancel = True
        stack = await batch_stack(make_stack, nats_url, config_from(config(fake)), None, ENV)
        body = {
            "lines": rows(model),
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        reply = await stack.nc.request("llm.batch.submit", msgspec.json.encode(body), timeout=30)
        batch_id = msgspec.json.decode(reply.data)["id"]
        await record_until(  # submitted, and its step over (the next one is an hour away)
            stack.nc,
            batch_id,
            lambda r: (
                bool(r.offload) and r.offload[0].state is OffloadState.RUNNING and not r.lease_owner
            ),
        )
        [provider_batch] = fake.created(provider)
        fake.polls, provider_batch.polls = 0, 2  # the provider batch has ended
        cancel = msgspec.json.encode({"id": batch_id})
        await stack.nc.request("llm.batch.cancel", cancel, timeout=10)
        store = await BatchStore.open(stack.nc)

        def now_due(record: BatchRecord) -> BatchRecord:
            record.offload_next = 0.0
            return record

        await store.update(batch_id, now_due)
        final = await asyncio.wait_for(wait_final(stack.nc, batch_id), 20)

        assert fake.refused_cancels >= 1
        assert final["status"] == "cancelled"
        assert final["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
        buffer = io.BytesIO()
        await store.read_file(final["output_file_id"], buffer)
        out = [json.loads(line) for line in buffer.getvalue().splitlines()]
        assert Counter(line["custom_id"] for line in out) == {f"req-{i}": 1 for i in range(LINES)}
        assert {line["offload"]["batch_id"] for line in out} == {provider_batch.id}
        assert not fake.sync_calls
        assert await offload_objects(stack.nc, batch_id) == []


async def test_lines_past_the_margin_before_their_submit_run_on_the_normal_path(
    make_stack: StackFactory, nats_url: str
) -> None:
    """A sub-batch whose batch is already within ``offload_margin_s`` of its deadline when
    its submit is due is not sent to the provider (it would be cancelled at its first look):
    its lines run on the normal path at once."""
    async with running_batches() as fake:
        late = config(fake).replace(
            "offload_poll_s = 3600", "offload_poll_s = 0.02\noffload_margin_s = 86400"
        )
        stack = await batch_stack(make_stack, nats_url, config_from(late), None, ENV)
        body = {
            "lines": rows("gpt"),
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        reply = await stack.nc.request("llm.batch.submit", msgspec.json.encode(body), timeout=30)
        final = await asyncio.wait_for(
            wait_final(stack.nc, msgspec.json.decode(reply.data)["id"]), 20
        )

        assert final["status"] == "completed"
        assert final["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
        assert not fake.batches  # no provider batch created (and then cancelled)
        assert fake.sync_calls["openai"] == LINES
        assert final["offload"]["fallback"] == LINES
