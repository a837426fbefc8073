"""Costs that know prompt caching and service tiers, through the real path (HTTP bridge,
NATS, broker, worker) to fake Anthropic and OpenAI upstreams: cache reads and writes are
priced at their own rates and the tier that served at its own, and the same figure is in
``Llm-Cost-Usd``, in ``llm_edge_cost_usd_total`` and in the tenant's spend in Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support import costs
from tests.support.anthropic_upstream import FakeAnthropic
from tests.support.browser import Page, chromium, needs_chromium
from tests.support.cli import run_cli
from tests.support.costs import (
    ADMIN_KEY,
    CACHED_USAGE,
    FLEX_COST,
    KEY,
    SONNET_COST,
    anthropic_message,
    counts,
    gained,
    openai_answer,
    spend,
    tenant_of,
)
from tests.support.scripted_upstream import Answer
from tests.support.servers import RedisServer
from tests.support.stack import Stack
from tests.support.upstream import FakeOpenAI, Scripted

#: the priced stack and its fake Anthropic upstream (fixtures shared with the other cost tests)
fake_anthropic = costs.fake_anthropic
stack = costs.stack


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
    expected = FLEX_COST
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


async def test_a_refused_call_served_by_the_content_fallback_is_charged_with_it(
    stack: Stack,
    fake_anthropic: FakeAnthropic,
    fake_openai: FakeOpenAI,
    redis_server: RedisServer,
) -> None:
    """Anthropic refuses for content (a 200 it bills, ``stop_reason: refusal``), gpt answers:
    the caller gets gpt's answer, and is charged both calls, each under its provider, in the
    header, the metrics and the spend ledger."""
    refusal_usage = {"input_tokens": 1_000, "output_tokens": 20, "service_tier": "standard"}
    refused_cost = (1_000 * 3.0 + 20 * 15.0) / 1e6  # 0.0033
    answer_cost = (500 * 2.0 + 1_500 * 0.5 + 100 * 8.0) / 1e6  # 0.00255
    refusal = anthropic_message(refusal_usage)
    refusal["content"], refusal["stop_reason"] = [], "refusal"
    fake_anthropic.script.append(Answer(json=refusal))
    fake_openai.script.append(Scripted(body=openai_answer("gpt-5", "default")))
    claude_before, up_before = counts(stack, "claude", "sonnet"), counts(stack, "up", "sonnet")
    response = await post(
        stack,
        "/chat/completions",
        {"model": "sonnet", "messages": [{"role": "user", "content": "something edgy"}]},
    )
    assert response.headers["llm-fallback"] == "content_policy"
    assert response.json()["model"] == "gpt-5"
    expected = refused_cost + answer_cost
    assert float(response.headers["llm-cost-usd"]) == pytest.approx(expected, abs=1e-6)
    assert gained(claude_before, counts(stack, "claude", "sonnet")) == {
        "cost:default": pytest.approx(refused_cost),
        "prompt": 1_000,
        "completion": 20,
    }
    assert gained(up_before, counts(stack, "up", "sonnet")) == {
        "cost:default": pytest.approx(answer_cost),
        "prompt": 500,
        "cached": 1_500,
        "completion": 100,
    }
    total, by_tier = await spend(stack, redis_server)
    assert (total, by_tier) == (pytest.approx(expected), {"default": pytest.approx(expected)})


@needs_chromium
@pytest.mark.browser
@pytest.mark.process
async def test_spend_by_tier_shows_in_llm_edge_usage_and_the_console(
    stack: Stack, fake_openai: FakeOpenAI, redis_server: RedisServer
) -> None:
    """A call OpenAI served in flex and one it served in default: ``llm-edge usage`` and the
    console's spend panel show the tenant's spend by tier, each at its tier's rates, beside
    the spend by model."""
    default_cost = (500 * 2.0 + 1_500 * 0.5 + 100 * 8.0) / 1e6  # 0.00255
    for n, tier in enumerate(("flex", "default")):
        fake_openai.script.append(Scripted(body=openai_answer("gpt-5", tier)))
        question = {"role": "user", "content": f"by tier {n}"}
        await post(stack, "/chat/completions", {"model": "gpt", "messages": [question]})
    tenant = tenant_of(stack)

    out, _ = await run_cli("usage", "--redis-url", redis_server.url, "--tenant", tenant)
    by_model, by_tier = ([line.split() for line in t.splitlines()] for t in out.split("\n\n"))
    assert by_tier[0] == ["TENANT", "PERIOD", "TIER", "USD"]
    assert [(row[0], row[2], float(row[-1])) for row in by_tier[1:]] == [
        (tenant, "default", pytest.approx(default_cost, abs=1e-6)),
        (tenant, "flex", pytest.approx(FLEX_COST, abs=1e-6)),
        (tenant, "(all", pytest.approx(default_cost + FLEX_COST, abs=1e-6)),
    ]
    assert [(row[2], float(row[3])) for row in by_model[1:] if row[2] == "gpt"] == [
        ("gpt", pytest.approx(default_cost + FLEX_COST, abs=1e-6))
    ]

    assert stack.bridge is not None
    with chromium() as driver:
        page = Page(driver, f"http://127.0.0.1:{stack.bridge.port}/console")
        await asyncio.to_thread(page.sign_in, ADMIN_KEY)
        row = f'#spend-body tr[data-tenant="{tenant}"]'
        shown = await asyncio.to_thread(
            page.texts, f"{row} td.by-tier, {row} td.by-model", lambda t: len(t) == 2
        )
    # in the order of the columns: by model, then by tier (USD to 4 places, as the page shows)
    assert shown == [
        f"gpt ${default_cost + FLEX_COST:.4f}",
        f"default ${default_cost:.4f}, flex ${FLEX_COST:.4f}",
    ]
