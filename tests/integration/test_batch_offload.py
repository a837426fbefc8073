"""Native batch offload: lines of a 24h batch run on the providers' own Batch APIs (fake
OpenAI, Anthropic and Gemini upstreams speaking their documented wire formats) and merge
back."""

from __future__ import annotations

import io
import json
from collections import Counter
from typing import Any

import msgspec
import pytest
from prometheus_client import REGISTRY

from edge_runtime.batch_store import BatchStore
from tests.support.batch import (
    OFFLOAD_ENV,
    batch_stack,
    offload_config,
    offload_objects,
    wait_status,
)
from tests.support.fake_provider_batches import FakeBatches, running_batches
from tests.support.stack import StackFactory, config_from

LINES = 1200
#: (provider, model) by line number modulo 3
MODELS = (("openai", "gpt"), ("anthropic", "claude"), ("gemini", "gem"))
#: (10 prompt * 2 USD + 5 completion * 8 USD) per 1M tokens, at half price
BATCH_COST = (10 * 2.0 + 5 * 8.0) / 1e6 * 0.5


def config(fake: FakeBatches, *, offload: str = "auto") -> str:
    return offload_config(
        fake.base_url,
        poll_s=0.05,
        offload=offload,
        limits=(300, 300, 150),
        gemini_inline_bytes=18000,
        prices=True,
    )


ENV = OFFLOAD_ENV


def rows(count: int) -> list[dict[str, Any]]:
    """Line ``i`` asks ``MODELS[i % 3]``; every 25th line fails inside a provider batch."""
    return [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODELS[i % 3][1],
                "messages": [
                    {"role": "user", "content": f"line {i}" + (" FAIL" if i % 25 == 0 else "")}
                ],
                "max_tokens": 16,
            },
        }
        for i in range(count)
    ]


def batch_spend(provider: str, model: str) -> float:
    """``llm_edge_cost_usd_total`` of a model's lines run on a provider's Batch API."""
    labels = {"provider": provider, "model": model, "tier": "batch", "tenant": ""}
    return REGISTRY.get_sample_value("llm_edge_cost_usd_total", labels) or 0.0


async def output_lines(nc: Any, file_id: str) -> list[dict[str, Any]]:
    store = await BatchStore.open(nc)
    buffer = io.BytesIO()
    await store.read_file(file_id, buffer)
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


async def test_offloaded_batch_merges_every_line_once_and_reruns_failures(
    make_stack: StackFactory, nats_url: str
) -> None:
    """1,200 lines, a third each for OpenAI, Anthropic and Gemini, split by the limits (300
    lines; Gemini 150, the larger ones uploaded as files, the smallest inline); each provider
    batch polls pending/in progress for a while, some lines fail, one OpenAI batch and one
    Gemini batch expire: every custom_id is in the output once, only the failed and expired
    lines ran on the normal path, the offloaded lines cost the batch rate, and the
    sub-batches' objects are gone from the bucket."""
    expire = frozenset({"batch_openai2", "batches/gemini2"})
    async with running_batches(polls=3, expire=expire) as fake:
        stack = await batch_stack(make_stack, nats_url, config_from(config(fake)), None, ENV)
        spent = {p: batch_spend(p, m) for p, m in MODELS}
        reply = await stack.nc.request(
            "llm.batch.submit",
            msgspec.json.encode(
                {
                    "lines": rows(LINES),
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                }
            ),
            timeout=30,
        )
        batch_id = msgspec.json.decode(reply.data)["id"]
        final = await wait_status(
            stack.nc, batch_id, {"completed", "failed", "expired", "cancelled"}
        )
        assert final["status"] == "completed"
        assert final["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
        out = await output_lines(stack.nc, final["output_file_id"])
        ids = Counter(line["custom_id"] for line in out)
        assert set(ids) == {f"req-{i}" for i in range(LINES)}
        assert set(ids.values()) == {1}
        by_provider = {
            p: [i for i in range(LINES) if i % 3 == n] for n, (p, _) in enumerate(MODELS)
        }
        # gpt lines 300..399 form the second OpenAI batch; its second half expired
        expired = set(by_provider["openai"][350:400])
        expired |= set(by_provider["gemini"][150:300])  # the second Gemini batch, whole
        failed = set(range(0, LINES, 25))
        rerun = {f"req-{i}" for i in expired | failed}
        normal = {line["custom_id"] for line in out if "offload" not in line}
        assert normal == rerun
        assert sum(fake.sync_calls.values()) == len(rerun)  # each re-run line ran once
        offloaded = [line for line in out if "offload" in line]
        assert {line["offload"]["cost_usd"] for line in offloaded} == {round(BATCH_COST, 8)}
        assert Counter(line["offload"]["provider"] for line in offloaded) == {
            p: 400 - len(set(lines) & (expired | failed)) for p, lines in by_provider.items()
        }
        for provider, model in MODELS:
            lines = sum(1 for line in offloaded if line["offload"]["provider"] == provider)
            assert batch_spend(provider, model) - spent[provider] == pytest.approx(
                lines * BATCH_COST
            )
        assert final["offload"]["providers"] == {"openai": 400, "anthropic": 400, "gemini": 400}
        assert final["offload"]["fallback"] == len(rerun)
        assert [len(b.rows) for b in fake.created("openai")] == [300, 100]
        assert [len(b.rows) for b in fake.created("anthropic")] == [300, 100]
        gemini = fake.created("gemini")
        assert [len(b.rows) for b in gemini] == [150, 150, 100]
        assert [fake.gemini.inline[b.id] for b in gemini] == [False, False, True]
        assert not fake.gemini.refused  # every call carried the key
        assert all(b.polls > fake.polls for b in fake.batches.values())  # polled till ended
        assert await offload_objects(stack.nc, batch_id) == []  # inputs, results, receipts


async def test_offload_never_runs_every_line_on_the_normal_path(
    make_stack: StackFactory, nats_url: str
) -> None:
    """With ``offload = "never"`` no provider batch is created."""
    async with running_batches() as fake:
        stack = await batch_stack(
            make_stack, nats_url, config_from(config(fake, offload="never")), None, ENV
        )
        reply = await stack.nc.request(
            "llm.batch.submit",
            msgspec.json.encode(
                {"lines": rows(20), "endpoint": "/v1/chat/completions", "completion_window": "24h"}
            ),
            timeout=30,
        )
        batch_id = msgspec.json.decode(reply.data)["id"]
        final = await wait_status(stack.nc, batch_id, {"completed", "failed"})
        assert final["status"] == "completed"
        assert final.get("offload") is None
        assert not fake.batches
        assert sum(fake.sync_calls.values()) == 20
