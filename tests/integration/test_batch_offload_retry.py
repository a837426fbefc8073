"""Native batch offload when a step cannot go on: a rate-limited (429) submit keeps its
sub-batch pending and submits it again later (at its ``Retry-After``, else the next poll),
not on the normal path at full price; only a wait past the batch's deadline less
``offload_margin_s`` sends its lines there. A sub-batch whose step fails holds up neither
the batch's other sub-batches nor the poll's pace."""

from __future__ import annotations

import asyncio
import time

import msgspec
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from edge_runtime.batch_store import BatchStore
from schemas.batch import BatchRecord
from schemas.offload import OffloadAnswer, OffloadCall, OffloadOp, OffloadState
from schemas.subjects import provider_batch_subject
from tests.integration.test_batch_offload_once import ENV, LINES, SUB_LINES, config, rows
from tests.support.batch import batch_stack, record_until, wait_final
from tests.support.fake_provider_batches import running_batches
from tests.support.stack import StackFactory, config_from

_call = msgspec.json.Decoder(OffloadCall)


def _deferred(provider: str, reason: str) -> float:
    labels = {"provider": provider, "reason": reason}
    return REGISTRY.get_sample_value("llm_edge_batch_offload_deferred_total", labels) or 0.0


def _body(model: str) -> bytes:
    return msgspec.json.encode(
        {"lines": rows(model), "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    )


def _merged_or_waiting(record: BatchRecord) -> bool:
    """Both sub-batches merged, or put off by the provider's ``Retry-After``."""
    done = [
        s
        for s in record.offload
        if s.state is OffloadState.MERGED or (s.state is OffloadState.PENDING and s.retry_at)
    ]
    return len(record.offload) == len(done) == 2


async def test_rate_limited_submit_waits_for_retry_after_then_runs_at_the_provider(
    make_stack: StackFactory, nats_url: str
) -> None:
    """OpenAI answers the first submit 429 with ``Retry-After: 3600``: that sub-batch stays
    pending for the hour (its lines do not run on the normal path) while the other runs;
    once its time has come it is submitted again, and every line ran at the provider once."""
    async with running_batches(polls=1) as fake:
        fake.throttle["openai"], fake.throttle_retry_after = 1, "3600"
        stack = await batch_stack(make_stack, nats_url, config_from(config(fake)), None, ENV)
        reply = await stack.nc.request("llm.batch.submit", _body("gpt"), timeout=30)
        batch_id = msgspec.json.decode(reply.data)["id"]
        record = await record_until(stack.nc, batch_id, _merged_or_waiting)
        [waiting] = [s for s in record.offload if s.state is OffloadState.PENDING]
        assert waiting.retry_at >= time.time() + 3000  # the provider's hour, not the next poll
        assert not fake.sync_calls  # nothing ran on the normal path
        assert [len(b.rows) for b in fake.created("openai")] == [SUB_LINES]

        def now_due(record: BatchRecord) -> BatchRecord:
            record.offload[waiting.index].retry_at = time.time() - 1
            return record

        await (await BatchStore.open(stack.nc)).update(batch_id, now_due)
        final = await asyncio.wait_for(wait_final(stack.nc, batch_id), 30)

        assert final["status"] == "completed"
        assert final["offload"]["completed"] == {"openai": LINES}
        assert final["offload"]["fallback"] == 0
        assert [len(b.rows) for b in fake.created("openai")] == [SUB_LINES, SUB_LINES]
        assert fake.throttled["openai"] == 1
        assert not fake.sync_calls


async def test_rate_limited_submit_without_retry_after_is_retried_at_the_next_poll(
    make_stack: StackFactory, nats_url: str
) -> None:
    """Anthropic answers the first two submits 429 without ``Retry-After``: they are
    submitted again at the next polls and every line runs at the provider."""
    async with running_batches(polls=1) as fake:
        fake.throttle["anthropic"] = 2
        stack = await batch_stack(make_stack, nats_url, config_from(config(fake)), None, ENV)
        reply = await stack.nc.request("llm.batch.submit", _body("claude"), timeout=30)
        final = await asyncio.wait_for(
            wait_final(stack.nc, msgspec.json.decode(reply.data)["id"]), 30
        )

        assert final["status"] == "completed"
        assert final["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
        assert final["offload"]["completed"] == {"anthropic": LINES}
        assert fake.throttled["anthropic"] == 2
        assert [len(b.rows) for b in fake.created("anthropic")] == [SUB_LINES, SUB_LINES]
        assert not fake.sync_calls


async def test_rate_limited_past_the_margin_runs_on_the_normal_path(
    make_stack: StackFactory, nats_url: str
) -> None:
    """A ``Retry-After`` beyond the batch's deadline less the margin: waiting would miss
    it, so that sub-batch's lines run on the normal path at once, the other's at OpenAI."""
    async with running_batches(polls=1) as fake:
        fake.throttle["openai"], fake.throttle_retry_after = 1, "172800"
        stack = await batch_stack(make_stack, nats_url, config_from(config(fake)), None, ENV)
        reply = await stack.nc.request("llm.batch.submit", _body("gpt"), timeout=30)
        final = await asyncio.wait_for(
            wait_final(stack.nc, msgspec.json.decode(reply.data)["id"]), 30
        )

        assert final["status"] == "completed"
        assert final["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
        assert final["offload"]["fallback"] == SUB_LINES
        assert fake.sync_calls["openai"] == SUB_LINES
        assert [len(b.rows) for b in fake.created("openai")] == [SUB_LINES]


async def test_a_sub_batch_whose_step_fails_holds_up_neither_the_others_nor_the_poll(
    make_stack: StackFactory, nats_url: str
) -> None:
    """Anthropic's batch worker answers a status call with bytes that do not decode: that
    sub-batch's step fails (counted, logged), the OpenAI sub-batch of the same step still
    merges, and the next step is ``offload_poll_s`` away (it used to end the step before the
    other sub-batches, and leave the next one due at once, so it ran again every tick)."""
    async with running_batches(polls=0) as fake:
        hourly = config(fake).replace("offload_poll_s = 0.02", "offload_poll_s = 3600")
        stack = await batch_stack(
            make_stack, nats_url, config_from(hourly), providers=["openai"], environ=ENV
        )
        status_calls: list[OffloadCall] = []

        async def broken_worker(msg: Msg) -> None:
            call = _call.decode(msg.data)
            if call.op is OffloadOp.SUBMIT:
                await msg.respond(msgspec.json.encode(OffloadAnswer(provider_batch="msgbatch_x")))
            else:
                status_calls.append(call)
                await msg.respond(b"\x00 not an answer")

        await stack.nc.subscribe(provider_batch_subject("anthropic"), cb=broken_worker)
        errors = _deferred("anthropic", "error")
        lines = rows("claude")[:SUB_LINES] + rows("gpt")[SUB_LINES:]
        body = {"lines": lines, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        reply = await stack.nc.request("llm.batch.submit", msgspec.json.encode(body), timeout=30)
        batch_id = msgspec.json.decode(reply.data)["id"]
        await record_until(  # both submitted, the step over; the next is an hour away
            stack.nc,
            batch_id,
            lambda r: (
                len(r.offload) == 2
                and all(s.state is OffloadState.RUNNING for s in r.offload)
                and not r.lease_owner
            ),
        )

        def now_due(record: BatchRecord) -> BatchRecord:
            record.offload_next = 0.0
            return record

        await (await BatchStore.open(stack.nc)).update(batch_id, now_due)
        record = await record_until(
            stack.nc,
            batch_id,
            lambda r: (
                any(s.provider == "openai" and s.state is OffloadState.MERGED for s in r.offload)
                and not r.lease_owner
            ),
        )

        [broken] = [s for s in record.offload if s.provider == "anthropic"]
        assert broken.state is OffloadState.RUNNING  # asked again at the next poll
        assert record.offload_next > time.time() + 3000
        assert len(status_calls) == 1
        assert _deferred("anthropic", "error") - errors == 1
        assert [len(b.rows) for b in fake.created("openai")] == [SUB_LINES]
        assert record.batch.request_counts.completed == SUB_LINES
