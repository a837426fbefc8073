"""The Anthropic Messages API through the real path (bridge, NATS, broker, worker) to a fake
Anthropic that records what it received: requests arrive as sent (model mapped), with the
caller's version and betas; answers come back as given, whole and event by event; the cache
keys every block; token counts pass through."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import msgspec
import pytest

from schemas import headers
from tests.support.anthropic_shapes import RICH_MESSAGE, SIGNATURE, rich_stream, sse, sse_pieces
from tests.support.anthropic_upstream import FakeAnthropic, anthropic_error, running_fake_anthropic
from tests.support.scripted_upstream import Answer
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI

UPSTREAM_MODEL = "claude-sonnet-4-5-20250929"
BETAS = "context-management-2025-06-27,interleaved-thinking-2025-05-14"
HEADERS = {"anthropic-version": "2023-06-01", "anthropic-beta": BETAS}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5Erk"
PDF = "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZURlY29kZT4+"

#: Every kind of block and option a Messages request carries, and a field nobody knows yet.
RICH_REQUEST: dict[str, Any] = {
    "model": "claude-sonnet",
    "max_tokens": 2048,
    "system": [
        {"type": "text", "text": "You are a weather bot.", "cache_control": {"type": "ephemeral"}}
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What do this picture and this forecast say?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                    "title": "Forecast",
                    "citations": {"enabled": True},
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "They want the weather.", "signature": SIGNATURE},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                {
                    "type": "server_tool_use",
                    "id": "srvtoolu_1",
                    "name": "web_search",
                    "input": {"query": "Paris"},
                },
                {
                    "type": "web_search_tool_result",
                    "tool_use_id": "srvtoolu_1",
                    "content": [
                        {
                            "type": "web_search_result",
                            "title": "Paris",
                            "url": "https://weather.example/paris",
                            "encrypted_content": "EqgfCioIARgB",
                            "page_age": None,
                        }
                    ],
                },
                {"type": "text", "text": "Let me check.", "citations": None},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"location": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "24 C"}],
                    "is_error": False,
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ],
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather by city",
            "input_schema": {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            },
            "cache_control": {"type": "ephemeral"},
        },
        {
            "type": "web_search_20250305",
            "name": "web_search",
            "max_uses": 3,
            "allowed_domains": ["weather.example"],
        },
    ],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "metadata": {"user_id": "user-7"},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "stop_sequences": ["\n\nHuman:", "END", "STOP", "HALT", "FIN"],
    "service_tier": "standard_only",
    "top_k": 40,
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
    "a_field_from_next_year": {"anything": [1, 2.5, None]},
}


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with running_fake_anthropic() as fake:
        yield fake


@pytest.fixture
async def stack(
    nats_url: str, fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI, make_stack: StackFactory
) -> Stack:
    config = config_from(f"""
        [cache]
        l2 = "off"
        [batch]
        enabled = false
        [resilience]
        max_attempts = 1
        [providers.claude]
        kind = "anthropic"
        base_url = "{fake_anthropic.base_url}"
        api_key_env = "ANTHROPIC_API_KEY"
        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"
        [models.claude-sonnet]
        deployments = [{{ provider = "claude", model = "{UPSTREAM_MODEL}" }}]
        [models."claude-opus-4-1"]
        deployments = [{{ provider = "claude" }}]
        [models.gpt]
        deployments = [{{ provider = "up", model = "gpt-4o" }}]
    """)
    return await make_stack(
        nats_url, config, bridge=True, environ={"ANTHROPIC_API_KEY": "sk-ant-test"}
    )


def rich(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(RICH_REQUEST)
    body.update(changes)
    return body


def events_of(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a server-sent event stream."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def sdk(stack: Stack) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=stack.base_url.removesuffix("/v1"), api_key="x", max_retries=0
    )


async def test_a_rich_request_reaches_anthropic_as_sent_and_its_answer_comes_back_whole(
    stack: Stack, fake_anthropic: FakeAnthropic
) -> None:
    """Every block type, cache_control, tools, thinking, metadata, stop sequences, service
    tier, an unknown field: the upstream receives the request as sent (model mapped) with the
    caller's anthropic-version and anthropic-beta, and the caller gets the message as given."""
    assert stack.http is not None
    response = await stack.http.post("/messages", json=RICH_REQUEST, headers=HEADERS)
    assert response.status_code == 200, response.text
    received = fake_anthropic.messages_received()[-1]
    assert received.json() == {**RICH_REQUEST, "model": UPSTREAM_MODEL}
    assert received.headers["anthropic-beta"] == BETAS
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.headers["x-api-key"] == "sk-ant-test"
    assert response.json() == {**RICH_MESSAGE, "model": UPSTREAM_MODEL}
    assert response.headers["llm-provider"] == "claude"


async def test_a_request_whose_model_needs_no_mapping_is_forwarded_byte_for_byte(
    stack: Stack, fake_anthropic: FakeAnthropic
) -> None:
    """Over NATS (llm.messages), a body whose model is the upstream's own reaches the upstream
    byte for byte: its whitespace and key order included."""
    body = json.dumps(rich(model="claude-opus-4-1"), indent=3, ensure_ascii=False).encode()
    reply = await stack.nc.request("llm.messages", body, timeout=10, headers=HEADERS)
    assert (reply.headers or {})[headers.STATUS] == "200"
    assert fake_anthropic.messages_received()[-1].content == body
    assert json.loads(reply.data) == {**RICH_MESSAGE, "model": "claude-opus-4-1"}


async def test_stream_events_reach_the_caller_in_order_and_complete(
    stack: Stack, fake_anthropic: FakeAnthropic
) -> None:
    """Every event of the upstream's stream reaches the HTTP caller as sent, in order: ping,
    thinking and signature deltas, input JSON deltas, message_delta with its usage."""
    assert stack.http is not None
    body = rich(stream=True)
    response = await stack.http.post("/messages", json=body, headers=HEADERS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert events_of(response.text) == rich_stream(UPSTREAM_MODEL)
    assert fake_anthropic.messages_received()[-1].json() == {**body, "model": UPSTREAM_MODEL}


async def test_a_stored_stream_is_replayed_to_the_sdk_as_the_same_message(
    stack: Stack, fake_anthropic: FakeAnthropic
) -> None:
    """The anthropic SDK streams a tool-and-thinking answer (a miss), then the same request
    again: served from the cache without an upstream call, it adds up to the same message."""
    client = sdk(stack)
    params: dict[str, Any] = {
        "model": "claude-sonnet",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "extra_headers": {"anthropic-beta": BETAS},
    }
    finals = []
    caches = []
    for _ in range(2):
        async with client.messages.stream(**params) as stream:
            finals.append(await stream.get_final_message())
            caches.append(stream.response.headers["x-cache"])
    assert caches == ["MISS", "HIT-L1"]
    assert len(fake_anthropic.messages_received()) == 1
    first, second = (m.model_dump() for m in finals)
    assert first == second
    thinking, redacted, text, tool = finals[0].content
    assert (thinking.type, thinking.thinking, thinking.signature) == (  # type: ignore[union-attr]
        "thinking",
        "Let me think about Paris.",
        SIGNATURE,
    )
    assert redacted.type == "redacted_thinking"
    assert text.text == "Checking the weather 🌤."  # type: ignore[union-attr]
    assert tool.input == {"location": "Paris", "unit": "celsius"}  # type: ignore[union-attr]
    assert finals[0].stop_reason == "tool_use"
    assert (finals[0].usage.input_tokens, finals[0].usage.output_tokens) == (472, 89)


async def test_the_cache_key_covers_blocks_and_betas_but_not_the_user(
    stack: Stack, fake_anthropic: FakeAnthropic
) -> None:
    """A repeat is a hit; a changed cache_control or anthropic-beta is another request (a
    miss); a changed metadata.user_id cannot change the answer (a hit)."""
    assert stack.http is not None

    async def ask(body: dict[str, Any], betas: str = BETAS) -> str:
        response = await stack.http.post(  # type: ignore[union-attr]
            "/messages", json=body, headers={**HEADERS, "anthropic-beta": betas}
        )
        assert response.status_code == 200
        return str(response.headers["x-cache"])

    ttl = rich()
    ttl["system"][0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    assert await ask(rich()) == "MISS"
    assert await ask(rich()) == "HIT-L1"
    assert await ask(ttl) == "MISS"
    assert await ask(rich(), betas="interleaved-thinking-2025-05-14") == "MISS"
    assert await ask(rich(metadata={"user_id": "someone-else"})) == "HIT-L1"
    assert len(fake_anthropic.messages_received()) == 3


async def test_upstream_errors_keep_their_anthropic_type(
    stack: Stack, fake_anthropic: FakeAnthropic
) -> None:
    """A whole call's overloaded_error and a stream's error event reach the caller as
    Anthropic errors of the same type; the events before the error arrive as sent."""
    assert stack.http is not None
    fake_anthropic.script.append(anthropic_error(529, "overloaded_error", "Overloaded"))
    response = await stack.http.post("/messages", json=rich(), headers=HEADERS)
    assert response.status_code >= 500
    assert response.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    before = rich_stream(UPSTREAM_MODEL)[:5]
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    fake_anthropic.script.append(Answer(pieces=[*sse_pieces(before), sse("error", error)]))
    response = await stack.http.post("/messages", json=rich(stream=True), headers=HEADERS)
    assert response.status_code == 200
    assert events_of(response.text) == [*before, ("error", error)]


async def test_token_counts_pass_through_to_anthropic_and_are_estimated_elsewhere(
    stack: Stack, fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI
) -> None:
    """count_tokens goes to an Anthropic deployment as sent (model mapped, betas kept) and
    its count comes back (Llm-Token-Count: upstream); for an OpenAI-shaped deployment it is
    estimated without an upstream call (Llm-Token-Count: estimate), over HTTP, NATS and SDK."""
    assert stack.http is not None
    body = {k: v for k, v in RICH_REQUEST.items() if k not in {"max_tokens", "metadata"}}
    response = await stack.http.post("/messages/count_tokens", json=body, headers=HEADERS)
    assert response.status_code == 200, response.text
    sent = fake_anthropic.received[-1]
    assert sent.path_qs == "/v1/messages/count_tokens"
    assert sent.json() == {**body, "model": UPSTREAM_MODEL}
    assert sent.headers["anthropic-beta"] == BETAS
    assert response.json() == {"input_tokens": 1234 + len(sent.content) % 7}
    assert response.headers["llm-token-count"] == "upstream"

    openai_calls = len(fake_openai.received)
    small = {"model": "gpt", "messages": [{"role": "user", "content": "word " * 400}]}
    reply = await stack.nc.request("llm.messages.count_tokens", msgspec.json.encode(small))
    assert (reply.headers or {})[headers.TOKEN_COUNT] == "estimate"
    assert 400 <= json.loads(reply.data)["input_tokens"] <= 700
    counted = await sdk(stack).messages.count_tokens(
        model="gpt", messages=[{"role": "user", "content": "word " * 400}]
    )
    assert counted.input_tokens == json.loads(reply.data)["input_tokens"]
    assert len(fake_openai.received) == openai_calls


async def test_a_bad_request_is_an_anthropic_400_and_reaches_no_upstream(
    stack: Stack, fake_anthropic: FakeAnthropic
) -> None:
    """A block without a type, or a tool without a name, is refused by the broker naming the
    field; nothing is forwarded."""
    assert stack.http is not None
    for body, field in (
        (rich(messages=[{"role": "user", "content": [{"text": "no type"}]}]), "messages[0]"),
        (rich(tools=[{"description": "nameless"}]), "tools[0].name"),
        (rich(max_tokens=None), "max_tokens"),
    ):
        response = await stack.http.post("/messages", json=body, headers=HEADERS)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["message"].startswith(field)
    assert fake_anthropic.received == []
