"""The Anthropic adapter: request translation, responses, streams and errors (scripted upstream)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator

import msgspec
import pytest

from schemas import ChatCompletion, decode_chat_request
from tests.support.anthropic_shapes import MESSAGE, TOOL_MESSAGE, sse, stream_events
from tests.support.scripted_upstream import Answer, Handler, Sent, scripted_upstream
from workers import (
    AnthropicProvider,
    ErrorKind,
    ProviderConfig,
    ProviderError,
    ProviderKind,
    http_client,
)
from workers.base import ProviderRequest
from workers.chat_to_messages import DEFAULT_MAX_TOKENS, to_anthropic_request

KEY = "sk-ant-test-SECRET"
CONFIG = ProviderConfig(
    name="anthropic",
    kind=ProviderKind.ANTHROPIC,
    base_url="https://anthropic.test/v1",
    api_key_env="ANTHROPIC_API_KEY",
)

CONVERSATION = {
    "model": "claude",
    "messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "developer", "content": "Use metric units."},
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "12 C, rain"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ],
    "tool_choice": "required",
    "stop": "END",
    "temperature": 0.7,
    "top_p": 0.9,
    "user": "user-42",
}


def request(body: dict[str, object]) -> ProviderRequest:
    raw = msgspec.json.encode(body)
    return ProviderRequest(
        body=raw,
        chat=decode_chat_request(raw),
        upstream_model="claude-sonnet-4-5",
        timeout_s=5,
        request_id="req-7",
    )


@contextlib.asynccontextmanager
async def provider(handler: Handler) -> AsyncIterator[AnthropicProvider]:
    """The adapter, its base URL pointed at a scripted upstream."""
    async with scripted_upstream(handler) as base, http_client() as client:
        yield AnthropicProvider(dataclasses.replace(CONFIG, base_url=base + "/v1"), client, KEY)


def test_request_translation() -> None:
    """System to top level, same-role merge, tools, tool results, images, stop, limits."""
    body = to_anthropic_request(request(CONVERSATION).chat, "claude-sonnet-4-5", stream=False)
    assert body["system"] == "Be terse.\n\nUse metric units."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    first_user = body["messages"][0]["content"]
    assert first_user[0] == {"type": "text", "text": "Weather in Oslo?"}
    assert first_user[2]["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": "iVBORw0KGgo=",
    }
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}}
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "12 C, rain"}
    ]
    assert body["tools"][0]["input_schema"]["properties"]["city"] == {"type": "string"}
    assert body["tool_choice"] == {"type": "any"}
    assert body["stop_sequences"] == ["END"]
    assert body["temperature"] == 0.7
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert body["metadata"] == {"user_id": "user-42"}


async def test_complete_translates_response_and_sends_headers() -> None:
    """A Messages response becomes a chat.completion; key, version and correlation id are sent."""
    seen: list[Sent] = []

    def handler(req: Sent) -> Answer:
        seen.append(req)
        return Answer(200, json=TOOL_MESSAGE)

    async with provider(handler) as anthropic:
        body = await anthropic.complete(request(CONVERSATION))
    completion = msgspec.json.decode(body, type=ChatCompletion)
    assert seen[0].path_qs == "/v1/messages"
    assert seen[0].headers["x-api-key"] == KEY
    assert seen[0].headers["anthropic-version"] == "2023-06-01"
    assert seen[0].headers["x-request-id"] == "req-7"
    assert seen[0].json()["model"] == "claude-sonnet-4-5"
    message = completion.choices[0].message
    assert message.content == "Let me check."
    assert message.tool_calls is not None
    assert json.loads(message.tool_calls[0].function.arguments) == {"location": "San Francisco, CA"}
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 12


def split_stream(pieces: list[bytes], size: int) -> list[bytes]:
    data = b"".join(pieces)
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 7, 4096])
async def test_stream_events_become_chunks(size: int) -> None:
    """Text and tool deltas, stop reason and usage come through, whatever the read size."""

    sent: list[Sent] = []

    def handler(req: Sent) -> Answer:
        sent.append(req)
        return Answer(200, pieces=split_stream(stream_events(["Hé", "llo 😀"], tool=True), size))

    async with provider(handler) as anthropic:
        chunks = [c async for c in anthropic.stream(request(CONVERSATION))]
    assert sent[0].json()["stream"] is True
    assert sent[0].headers["x-request-id"] == "req-7"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Héllo 😀"
    args = "".join(
        call["function"].get("arguments", "")
        for c in chunks
        if c.choices
        for call in c.choices[0].delta.tool_calls or ()
    )
    assert json.loads(args) == {"location": "San Francisco"}
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["tool_calls"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (25, 15)


@pytest.mark.parametrize(
    ("status", "error_type", "kind", "retryable"),
    [
        (400, "invalid_request_error", ErrorKind.BAD_REQUEST, False),
        (401, "authentication_error", ErrorKind.AUTHENTICATION, False),
        (429, "rate_limit_error", ErrorKind.RATE_LIMITED, True),
        (500, "api_error", ErrorKind.UNAVAILABLE, True),
        (529, "overloaded_error", ErrorKind.UNAVAILABLE, True),
    ],
)
async def test_error_kinds(status: int, error_type: str, kind: ErrorKind, retryable: bool) -> None:
    """Each documented error type maps to its kind; Retry-After is kept; the key is scrubbed."""

    def handler(req: Sent) -> Answer:
        return Answer(
            status,
            headers={"retry-after": "2"},
            json={"type": "error", "error": {"type": error_type, "message": f"nope {KEY}"}},
        )

    async with provider(handler) as anthropic:
        with pytest.raises(ProviderError) as caught:
            await anthropic.complete(request(CONVERSATION))
    assert caught.value.kind is kind
    assert caught.value.retryable is retryable
    assert caught.value.retry_after == 2.0
    assert KEY not in str(caught.value)


async def test_error_event_mid_stream() -> None:
    """An ``error`` event inside the stream raises with its type (overloaded: retryable)."""
    pieces = [
        *stream_events(["partial"])[:3],
        sse(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ),
    ]

    def handler(req: Sent) -> Answer:
        return Answer(200, pieces=split_stream(pieces, 50))

    got = []
    async with provider(handler) as anthropic:
        with pytest.raises(ProviderError) as caught:  # noqa: PT012  (collect chunks first)
            async for chunk in anthropic.stream(request(CONVERSATION)):
                got.append(chunk)
    assert got
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    assert MESSAGE["id"] == got[0].id
