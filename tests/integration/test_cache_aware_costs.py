"""Costs that know prompt caching and service tiers, through the real path (HTTP bridge,
NATS, broker, worker) to fake Anthropic and OpenAI upstreams: cache reads and writes are
priced at their own rates and the tier that served at its own, and the same figure is in
``Llm-Cost-Usd``, in ``llm_edge_cost_usd_total`` and in the tenant's spend in Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from broker.tenancy.budget import BY_TIER_PREFIX, SPEND_PREFIX, period_key
from broker.tenancy.tenants import hash_key
from tests.support.anthropic_upstream import FakeAnthropic, running_fake_anthropic
from tests.support.scripted_upstream import Answer
from tests.support.servers import RedisServer
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted, openai_completion

KEY = f"sk-le-test-costs-{uuid.uuid4().hex}"
#: Anthropic usage with cache reads and writes of both lifetimes.
CACHED_USAGE: dict[str, Any] = {
    "input_tokens": 50,
    "cache_read_input_tokens": 10_000,
    "cache_creation_input_tokens": 2_000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1_500, "ephemeral_1h_input_tokens": 500},
    "output_tokens": 120,
    "service_tier": "standard",
}
#: What it costs at the sonnet deployment's table below (USD per 1M tokens: input 3, output
#: 15, cache read 0.30, 5-minute write 3.75, 1-hour write 6): 0.01335 (at the input price
#: for every input token it would be 0.03795).
SONNET_COST = (50 * 3.0 + 10_000 * 0.3 + 1_500 * 3.75 + 500 * 6.0 + 120 * 15.0) / 1e6


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with running_fake_anthropic() as fake:
        yield fake


@pytest.fixture
async def stack(
    nats_url: str,
    redis_server: RedisServer,
    fake_anthropic: FakeAnthropic,
    fake_openai: FakeOpenAI,
    make_stack: StackFactory,
) -> Stack:
    tenant = f"payer{uuid.uuid4().hex[:8]}"  # fresh spend in the shared Redis
    config = config_from(f"""
        [cache]
        l2 = "off"
        [batch]
        enabled = false
        [broker]
        tenant_metrics = true
        [resilience]
        max_attempts = 1
        [tenants.{tenant}]
        keys = ["{hash_key(KEY)}"]
        budget_usd = 1000  # budgeted: its spend is recorded before the reply goes out
        [providers.claude]
        kind = "anthropic"
        base_url = "{fake_anthropic.base_url}"
        api_key_env = "ANTHROPIC_API_KEY"
        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"

        [[models.sonnet.deployments]]
        provider = "claude"
        model = "claude-sonnet-4-5"
        input_price = 3.0
        output_price = 15.0
        cached_input_price = 0.3
        cache_write_price = 3.75
        cache_write_1h_price = 6.0

        [[models.gpt.deployments]]
        provider = "up"
        model = "gpt-5"
        input_price = 2.0
        output_price = 8.0
        cached_input_price = 0.5
        [models.gpt.deployments.tiers.flex]
        input_price = 1.0
        output_price = 4.0
        cached_input_price = 0.25
    """)
    return await make_stack(
        nats_url,
        config,
        bridge=True,
        redis_url=redis_server.url,
        environ={"ANTHROPIC_API_KEY": "sk-ant-test"},
    )


def tenant_of(stack: Stack) -> str:
    return next(name for name in stack.brokers[0].config.tenants if name.startswith("payer"))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counts(stack: Stack, provider: str, model: str) -> dict[str, float]:
    """The cost by tier and the tokens by type counted so far for the stack's tenant."""
    tenant = tenant_of(stack)
    out = {
        f"cost:{tier}": metric(
            "llm_edge_cost_usd_total", provider=provider, model=model, tier=tier, tenant=tenant
        )
        for tier in ("default", "flex")
    }
    for kind in ("prompt", "cached", "cache_write", "completion"):
        out[kind] = metric(
            "llm_edge_tokens_total", provider=provider, model=model, type=kind, tenant=tenant
        )
    return out


def gained(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 9) for k in after if after[k] != before[k]}


async def spend(stack: Stack, redis_server: RedisServer) -> tuple[float, dict[str, float]]:
    """The tenant's spend this month in Redis: the total and the by-tier sums."""
    label, _ = period_key("month", time.time())
    suffix = f"{tenant_of(stack)}:{label}"
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        total = await client.get(SPEND_PREFIX + suffix)
        by_tier = await client.hgetall(BY_TIER_PREFIX + suffix)
    finally:
        await client.aclose()
    return float(total or 0.0), {k.decode(): float(v) for k, v in by_tier.items()}


def anthropic_message(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg_cached",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "From the cache, mostly."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


async def post(stack: Stack, path: str, body: dict[str, Any]) -> httpx.Response:
    assert stack.http is not None
    response = await stack.http.post(
        path,
        json=body,
        headers={"Authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 200, response.text
    return response


async def test_a_cached_anthropic_answer_to_a_chat_caller_is_priced_at_the_cache_rates(
    stack: Stack, fake_anthropic: FakeAnthropic, redis_server: RedisServer
) -> None:
    """A chat caller served by Anthropic gets OpenAI's usage (prompt_tokens the whole input,
    the cache's share in prompt_tokens_details); the header, the cost metric, the tokens by
    type and the spend ledger all show the cache-aware cost, not the input price for all."""
    before = counts(stack, "claude", "sonnet")
    fake_anthropic.script.append(Answer(json=anthropic_message(CACHED_USAGE)))
    response = await post(
        stack,
        "/chat/completions",
        {"model": "sonnet", "messages": [{"role": "user", "content": "the long document"}]},
    )
    assert response.json()["usage"] == {
        "prompt_tokens": 12_050,
        "completion_tokens": 120,
        "total_tokens": 12_170,
        "prompt_tokens_details": {
            "cached_tokens": 10_000,
            "cache_write_tokens": 2_000,
            "cache_write_1h_tokens": 500,
        },
    }
    assert response.json()["service_tier"] == "default"
    assert float(response.headers["llm-cost-usd"]) == pytest.approx(SONNET_COST, abs=1e-6)
    assert response.headers["llm-service-tier"] == "default"
    assert gained(before, counts(stack, "claude", "sonnet")) == {
        "cost:default": pytest.approx(SONNET_COST),
        "prompt": 50,
        "cached": 10_000,
        "cache_write": 2_000,
        "completion": 120,
    }
    total, by_tier = await spend(stack, redis_server)
    assert total == pytest.approx(SONNET_COST)
    assert by_tier == {"default": pytest.approx(SONNET_COST)}


async def test_a_messages_caller_keeps_anthropic_usage_and_is_priced_alike(
    stack: Stack, fake_anthropic: FakeAnthropic, redis_server: RedisServer
) -> None:
    """Through /v1/messages the answer's usage comes back as Anthropic gave it, untouched;
    the meter reads that shape into the same cache-aware cost."""
    before = counts(stack, "claude", "sonnet")
    fake_anthropic.script.append(Answer(json=anthropic_message(CACHED_USAGE)))
    response = await post(
        stack,
        "/messages",
        {
            "model": "sonnet",
            "max_tokens": 256,
            "messages": [{"role": "user", "content": "the long document, again"}],
        },
    )
    assert response.json()["usage"] == CACHED_USAGE
    assert float(response.headers["llm-cost-usd"]) == pytest.approx(SONNET_COST, abs=1e-6)
    assert response.headers["llm-service-tier"] == "default"
    assert gained(before, counts(stack, "claude", "sonnet"))["cost:default"] == pytest.approx(
        SONNET_COST
    )
    total, _ = await spend(stack, redis_server)
    assert total == pytest.approx(SONNET_COST)


def openai_answer(model: str, tier: str) -> dict[str, Any]:
    """OpenAI's answer with 1,500 of its 2,000 prompt tokens read from the cache."""
    body = openai_completion(model, "cached, mostly")
    body["usage"] = {
        "prompt_tokens": 2_000,
        "completion_tokens": 100,
        "total_tokens": 2_100,
        "prompt_tokens_details": {"cached_tokens": 1_500, "audio_tokens": 0},
    }
    body["service_tier"] = tier
    return body


async def test_openai_cached_tokens_are_priced_at_the_cached_input_price(
    stack: Stack, fake_openai: FakeOpenAI, redis_server: RedisServer
) -> None:
    """OpenAI's prompt_tokens_details.cached_tokens cost the cached input price; the answer
    reaches the caller as OpenAI gave it."""
    expected = (500 * 2.0 + 1_500 * 0.5 + 100 * 8.0) / 1e6  # 0.00255 (0.0048 uncached)
    before = counts(stack, "up", "gpt")
    answer = openai_answer("gpt-5", "default")
    fake_openai.script.append(Scripted(body=answer))
    response = await post(
        stack, "/chat/completions", {"model": "gpt", "messages": [{"role": "user", "content": "q"}]}
    )
    assert response.json()["usage"] == answer["usage"]
    assert float(response.headers["llm-cost-usd"]) == pytest.approx(expected, abs=1e-6)
    assert response.headers["llm-service-tier"] == "default"
    assert gained(before, counts(stack, "up", "gpt")) == {
        "cost:default": pytest.approx(expected),
        "prompt": 500,
        "cached": 1_500,
        "completion": 100,
    }
    total, by_tier = await spend(stack, redis_server)
    assert (total, by_tier) == (pytest.approx(expected), {"default": pytest.approx(expected)})


async def test_a_flex_call_reaches_openai_as_flex_and_is_priced_at_the_flex_rates(
    stack: Stack, fake_openai: FakeOpenAI, redis_server: RedisServer
) -> None:
    """``service_tier: "flex"`` reaches the upstream; the answer it served in flex is priced
    at the deployment's flex table, and the tier is named in the header, the cost metric's
    label and the ledger's by-tier sum."""
    expected = (500 * 1.0 + 1_500 * 0.25 + 100 * 4.0) / 1e6  # 0.001275
    before = counts(stack, "up", "gpt")
    fake_openai.script.append(Scripted(body=openai_answer("gpt-5", "flex")))
    response = await post(
        stack,
        "/chat/completions",
        {"model": "gpt", "service_tier": "flex", "messages": [{"role": "user", "content": "q2"}]},
    )
    assert fake_openai.received[-1].body["service_tier"] == "flex"
    assert response.headers["llm-service-tier"] == "flex"
    assert float(response.headers["llm-cost-usd"]) == pytest.approx(expected, abs=1e-6)
    assert gained(before, counts(stack, "up", "gpt"))["cost:flex"] == pytest.approx(expected)
    assert "cost:default" not in gained(before, counts(stack, "up", "gpt"))
    total, by_tier = await spend(stack, redis_server)
    assert (total, by_tier) == (pytest.approx(expected), {"flex": pytest.approx(expected)})
