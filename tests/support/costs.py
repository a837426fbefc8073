"""A priced stack for cost tests: fake Anthropic and OpenAI upstreams behind deployments with
cache and tier prices, a budgeted tenant of a fresh name (its spend starts at nothing in the
shared Redis), an admin key for the console; and readers of what the tenant was charged (the
cost metric, the tokens by type, the spend ledger in Redis)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from broker.tenancy.budget import BY_TIER_PREFIX, SPEND_PREFIX, period_key
from broker.tenancy.tenants import hash_key
from tests.support.anthropic_upstream import FakeAnthropic, running_fake_anthropic
from tests.support.servers import RedisServer
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, openai_completion

__all__ = [
    "ADMIN_KEY",
    "CACHED_USAGE",
    "FLEX_COST",
    "KEY",
    "SONNET_COST",
    "anthropic_message",
    "counts",
    "fake_anthropic",
    "gained",
    "openai_answer",
    "priced_stack",
    "spend",
    "stack",
    "tenant_of",
]

KEY = f"sk-le-test-costs-{uuid.uuid4().hex}"
ADMIN_KEY = f"sk-le-test-costs-admin-{uuid.uuid4().hex}"
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
#: :func:`openai_answer`'s usage at the gpt deployment's flex table: 0.001275.
FLEX_COST = (500 * 1.0 + 1_500 * 0.25 + 100 * 4.0) / 1e6


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    """A fake Anthropic upstream for :func:`stack`."""
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
    """The :func:`priced_stack` fixture (a test module binds it, and ``fake_anthropic``, as
    module attributes)."""
    return await priced_stack(make_stack, nats_url, redis_server, fake_anthropic, fake_openai)


async def priced_stack(
    make_stack: StackFactory,
    nats_url: str,
    redis_server: RedisServer,
    fake_anthropic: FakeAnthropic,
    fake_openai: FakeOpenAI,
) -> Stack:
    """Models ``sonnet`` (Anthropic, cache prices; what it refuses for content goes to
    ``gpt``) and ``gpt`` (OpenAI-compatible, cache prices and a ``flex`` tier), the bridge,
    one attempt per call."""
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
        [tenants.ops{tenant}]
        keys = ["{hash_key(ADMIN_KEY)}"]
        admin = true
        [providers.claude]
        kind = "anthropic"
        base_url = "{fake_anthropic.base_url}"
        api_key_env = "ANTHROPIC_API_KEY"
        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"

        [models.sonnet]
        content_policy_fallback = "gpt"
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
    """The stack's paying tenant."""
    return next(name for name in stack.brokers[0].config.tenants if name.startswith("payer"))


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counts(stack: Stack, provider: str, model: str) -> dict[str, float]:
    """The cost by tier and the tokens by type counted so far for the stack's tenant."""
    tenant = tenant_of(stack)
    out = {
        f"cost:{tier}": _metric(
            "llm_edge_cost_usd_total", provider=provider, model=model, tier=tier, tenant=tenant
        )
        for tier in ("default", "flex")
    }
    for kind in ("prompt", "cached", "cache_write", "completion"):
        out[kind] = _metric(
            "llm_edge_tokens_total", provider=provider, model=model, type=kind, tenant=tenant
        )
    return out


def gained(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What changed between two :func:`counts`."""
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
    """A whole Anthropic message with ``usage``."""
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
