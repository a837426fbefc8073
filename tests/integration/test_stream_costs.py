"""A stream's cost, through the real path to fake Anthropic and OpenAI upstreams: priced from
the usage the upstream reported at its end (cache reads and writes, the tier that served), the
same figure in the tenant's spend ledger, and, over NATS, on the message that ends the stream
(``Llm-Cost-Usd``, ``Llm-Service-Tier``) and on the Python client's stream once it ended."""

from __future__ import annotations

import json
from typing import Any

import httpx
import msgspec
import pytest

from edge_client import EdgeClient, stream_messages
from schemas import headers, subjects
from tests.support import costs
from tests.support.anthropic_shapes import sse
from tests.support.anthropic_upstream import FakeAnthropic
from tests.support.costs import (
    CACHED_USAGE,
    FLEX_COST,
    KEY,
    SONNET_COST,
    counts,
    gained,
    spend,
)
from tests.support.scripted_upstream import Answer
from tests.support.servers import RedisServer
from tests.support.stack import Stack
from tests.support.upstream import FakeOpenAI, Scripted

#: the priced stack and its fake Anthropic upstream (fixtures shared with the other cost tests)
fake_anthropic = costs.fake_anthropic
stack = costs.stack


def cached_anthropic_stream() -> list[bytes]:
    """Anthropic's stream of an answer read mostly from the prompt cache: the input and cache
    counts (and the tier) in ``message_start``, the output count in ``message_delta``."""
    start_usage = {**CACHED_USAGE, "output_tokens": 1}
    message = {
        "id": "msg_streamed_cached",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    text = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    return [
        sse("message_start", {"type": "message_start", "message": message}),
        sse("content_block_start", text),
        sse("ping", {"type": "ping"}),
        *(
            sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": t},
                },
            )
            for t in ("From the cache, ", "mostly.")
        ),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": CACHED_USAGE["output_tokens"]},
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]


def flex_openai_stream() -> list[bytes]:
    """OpenAI's stream of an answer served in flex, 1,500 of its 2,000 prompt tokens read from
    the cache: ``service_tier`` on every chunk, usage on the last (``include_usage``)."""

    def event(choices: list[dict[str, Any]], **more: Any) -> bytes:
        chunk = {
            "id": "chatcmpl-flex",
            "object": "chat.completion.chunk",
            "created": 1741569952,
            "model": "gpt-5",
            "service_tier": "flex",
            "system_fingerprint": None,
            "choices": choices,
            **more,
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def delta(content: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}]

    usage = {
        "prompt_tokens": 2_000,
        "completion_tokens": 100,
        "total_tokens": 2_100,
        "prompt_tokens_details": {"cached_tokens": 1_500, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    return [
        event(delta({"role": "assistant", "content": ""}), usage=None),
        event(delta({"content": "flexibly "}), usage=None),
        event(delta({"content": "served"}), usage=None),
        event(delta({}, "stop"), usage=None),
        event([], usage=usage),
        b"data: [DONE]\n\n",
    ]


async def stream_over_http(stack: Stack, content: str) -> httpx.Response:
    """A Messages stream to the ``sonnet`` model over HTTP, whole."""
    assert stack.http is not None
    body = {
        "model": "sonnet",
        "max_tokens": 256,
        "stream": True,
        "messages": [{"role": "user", "content": content}],
    }
    auth = {"Authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}
    return await stack.http.post("/messages", json=body, headers=auth)


def sse_data(text: str) -> list[dict[str, Any]]:
    """The JSON of each ``data:`` line of an SSE body (``[DONE]`` left out)."""
    return [
        json.loads(line.removeprefix("data: "))
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


async def test_a_streamed_cached_anthropic_answer_is_priced_at_the_cache_rates(
    stack: Stack, fake_anthropic: FakeAnthropic, redis_server: RedisServer
) -> None:
    """A Messages stream over HTTP whose usage reads mostly from the prompt cache: the caller
    gets Anthropic's events as sent (the usage in message_start and message_delta), and the
    cost metric, the tokens by type and the ledger count the cache-aware cost, at the tier
    message_start named."""
    before = counts(stack, "claude", "sonnet")
    fake_anthropic.script.append(Answer(pieces=cached_anthropic_stream()))
    response = await stream_over_http(stack, "the long document, streamed")
    assert response.status_code == 200, response.text
    events = sse_data(response.text)
    assert events[0]["message"]["usage"] == {**CACHED_USAGE, "output_tokens": 1}
    assert [e["usage"] for e in events if e["type"] == "message_delta"] == [{"output_tokens": 120}]
    assert "llm-cost-usd" not in response.headers  # its headers left before the usage came
    assert gained(before, counts(stack, "claude", "sonnet")) == {
        "cost:default": pytest.approx(SONNET_COST),
        "prompt": 50,
        "cached": 10_000,
        "cache_write": 2_000,
        "completion": 120,
    }
    total, by_tier = await spend(stack, redis_server)
    assert (total, by_tier) == (pytest.approx(SONNET_COST), {"default": pytest.approx(SONNET_COST)})


async def test_a_stream_that_fails_midway_charges_the_usage_reported_before_it_failed(
    stack: Stack, fake_anthropic: FakeAnthropic, redis_server: RedisServer
) -> None:
    """Anthropic reports the input in message_start and bills it whatever happens after: a
    stream that ends in an error event after its first text charges the tenant what
    message_start reported (the caller gets the error event; the ledger and the cost metric
    hold that charge)."""
    before = counts(stack, "claude", "sonnet")
    started = cached_anthropic_stream()[:4]  # message_start, the block, a ping, one delta
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    fake_anthropic.script.append(Answer(pieces=[*started, sse("error", overloaded)]))
    response = await stream_over_http(stack, "the long document, cut off")
    events = sse_data(response.text)
    assert events[0]["type"] == "message_start"
    assert events[-1]["type"] == "error"
    total, by_tier = await spend(stack, redis_server)
    assert total > 0
    assert by_tier == {"default": pytest.approx(total)}
    gain = gained(before, counts(stack, "claude", "sonnet"))
    assert (gain["prompt"], gain["cached"], gain["cache_write"]) == (50, 10_000, 2_000)
    assert gain["cost:default"] == pytest.approx(total)


async def test_the_message_ending_a_nats_stream_names_the_cost_the_ledger_recorded(
    stack: Stack, fake_anthropic: FakeAnthropic, redis_server: RedisServer
) -> None:
    """Over NATS (llm.messages) the stream's last message, ``Llm-Stream: end``, carries
    ``Llm-Cost-Usd`` and ``Llm-Service-Tier``: the cache-aware cost the tenant's spend
    recorded; the messages before it name no cost."""
    fake_anthropic.script.append(Answer(pieces=cached_anthropic_stream()))
    body = msgspec.json.encode(
        {
            "model": "sonnet",
            "max_tokens": 256,
            "stream": True,
            "messages": [{"role": "user", "content": "the long document, over NATS"}],
        }
    )
    replies = stream_messages(
        stack.nc,
        body,
        subject=subjects.MESSAGES,
        request_headers={headers.AUTHORIZATION: f"Bearer {KEY}"},
        deadline_s=30,
    )
    received = [msg.headers or {} async for msg in replies]
    last = received[-1]
    assert last[headers.STREAM] == "end"
    assert float(last[headers.COST]) == pytest.approx(SONNET_COST, abs=1e-6)
    assert last[headers.SERVICE_TIER] == "default"
    assert not [h for h in received[:-1] if headers.COST in h or headers.SERVICE_TIER in h]
    total, by_tier = await spend(stack, redis_server)  # budgeted: charged before the end
    assert total == pytest.approx(float(last[headers.COST]), abs=1e-6)
    assert by_tier == {"default": pytest.approx(SONNET_COST)}


async def test_a_flex_stream_tells_the_client_its_tier_and_cost_when_it_ends(
    stack: Stack, fake_openai: FakeOpenAI, redis_server: RedisServer
) -> None:
    """A chat stream OpenAI served in flex: the Python client's stream names no cost while it
    runs and, once ended, the flex tier and the flex-rate cost, the figure the ledger's
    by-tier sum and the cost metric's flex label recorded."""
    before = counts(stack, "up", "gpt")
    fake_openai.script.append(Scripted(raw_sse=flex_openai_stream()))
    client = EdgeClient(stack.nc, api_key=KEY, deadline_s=30)
    request = {
        "model": "gpt",
        "service_tier": "flex",
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "no hurry"}],
    }
    text, tiers = [], set()
    async with client.stream(request) as chunks:
        async for chunk in chunks:
            assert (chunks.cost_usd, chunks.service_tier) == (None, None)
            tiers.add(chunk.service_tier)
            text += [c.delta.content or "" for c in chunk.choices]
    assert "".join(text) == "flexibly served"
    assert tiers == {"flex"}
    assert fake_openai.received[-1].body["service_tier"] == "flex"
    assert chunks.service_tier == "flex"
    assert chunks.cost_usd == pytest.approx(FLEX_COST, abs=1e-6)
    total, by_tier = await spend(stack, redis_server)
    assert total == pytest.approx(chunks.cost_usd, abs=1e-6)
    assert by_tier == {"flex": pytest.approx(FLEX_COST)}
    assert gained(before, counts(stack, "up", "gpt")) == {
        "cost:flex": pytest.approx(FLEX_COST),
        "prompt": 500,
        "cached": 1_500,
        "completion": 100,
    }


async def test_a_stream_without_usage_names_its_tier_and_no_cost(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """An upstream that ends a flex stream without its usage chunk: the end names the tier
    it served in but no cost (nothing was reported to price)."""
    without_usage = [piece for piece in flex_openai_stream() if b'"usage": {' not in piece]
    fake_openai.script.append(Scripted(raw_sse=without_usage))
    client = EdgeClient(stack.nc, api_key=KEY, deadline_s=30)
    request = {"model": "gpt", "messages": [{"role": "user", "content": "no usage"}]}
    async with client.stream(request) as chunks:
        text = [c.delta.content or "" async for chunk in chunks for c in chunk.choices]
    assert "".join(text) == "flexibly served"
    assert (chunks.service_tier, chunks.cost_usd) == ("flex", None)
