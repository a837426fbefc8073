"""Official SDKs against the real bridge and broker: tool calls, the Anthropic Messages API,
and an Anthropic upstream behind the OpenAI API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anthropic
import openai
import pytest

from tests.support.anthropic_shapes import TOOL_MESSAGE, stream_events
from tests.support.provider_calls import WEATHER_TOOL
from tests.support.scripted_upstream import Answer, Sent, scripted_upstream
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted, openai_completion


def anthropic_upstream(request: Sent) -> Answer:
    """Anthropic's API as documented: a tool-use message, or the same as a stream."""
    if json.loads(request.content).get("stream"):
        return Answer(200, pieces=[b"".join(stream_events(["Sunny ", "today"], tool=True))])
    return Answer(200, json=TOOL_MESSAGE)


@pytest.fixture
async def claude_url() -> AsyncIterator[str]:
    """An Anthropic upstream on loopback."""
    async with scripted_upstream(anthropic_upstream) as base:
        yield base + "/v1"


@pytest.fixture
async def stack(
    nats_url: str, fake_openai: FakeOpenAI, claude_url: str, make_stack: StackFactory
) -> Stack:
    config = config_from(f"""
        [cache]
        enabled = false

        [providers.mock]
        kind = "mock"

        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"

        [providers.claude]
        kind = "anthropic"
        base_url = "{claude_url}"
        api_key_env = "ANTHROPIC_API_KEY"

        [models.mock]
        deployments = [{{ provider = "mock" }}]

        [models.gpt]
        deployments = [{{ provider = "up", model = "gpt-4o" }}]

        [models.claude-sonnet]
        deployments = [{{ provider = "claude", model = "claude-sonnet-4-5" }}]
    """)
    return await make_stack(
        nats_url, config, bridge=True, environ={"ANTHROPIC_API_KEY": "sk-ant-x"}
    )


def tool_call_completion() -> dict[str, object]:
    body = openai_completion("gpt-4o", "")
    body["choices"][0]["message"] = {  # type: ignore[index]
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    body["choices"][0]["finish_reason"] = "tool_calls"  # type: ignore[index]
    return body


async def test_openai_sdk_tool_calls(stack: Stack, fake_openai: FakeOpenAI) -> None:
    """Tools go upstream unchanged and tool calls come back to the SDK, whole and streamed."""
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    fake_openai.script.append(Scripted(body=tool_call_completion()))
    completion = await sdk.chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
    )  # type: ignore[list-item]
    assert fake_openai.received[-1].body["tools"] == [WEATHER_TOOL]
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather",
        {"city": "Paris"},
    )

    def event(delta: dict[str, object], finish: str | None = None) -> bytes:
        chunk = {
            "id": "c2",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    fake_openai.script.append(
        Scripted(
            raw_sse=[
                event(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_x",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ],
                    }
                ),
                event({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
                event({"tool_calls": [{"index": 0, "function": {"arguments": '"Rome"}'}}]}),
                event({}, "tool_calls"),
                b"data: [DONE]\n\n",
            ]
        )
    )
    stream = await sdk.chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )  # type: ignore[list-item]
    arguments, finish = "", None
    async for chunk in stream:
        for delta_call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            arguments += delta_call.function.arguments or ""  # type: ignore[union-attr]
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert json.loads(arguments) == {"city": "Rome"}
    assert finish == "tool_calls"


async def test_anthropic_sdk_against_messages_endpoint(stack: Stack) -> None:
    """The official anthropic SDK works unchanged against /v1/messages (any provider behind)."""
    client = anthropic.AsyncAnthropic(
        base_url=stack.base_url.removesuffix("/v1"), api_key="x", max_retries=0
    )
    message = await client.messages.create(
        model="mock",
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello from anthropic"}],
    )
    assert message.role == "assistant"
    assert message.content[0].type == "text"
    assert "Hello from anthropic" in message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0

    async with client.messages.stream(
        model="mock",
        max_tokens=100,
        messages=[{"role": "user", "content": "Stream from anthropic"}],
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert "Stream from anthropic" in text
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


async def test_anthropic_sdk_errors_and_tool_use(stack: Stack, fake_openai: FakeOpenAI) -> None:
    """Unknown models are the SDK's NotFoundError; tool calls from an OpenAI upstream come back
    as tool_use blocks."""
    client = anthropic.AsyncAnthropic(
        base_url=stack.base_url.removesuffix("/v1"), api_key="x", max_retries=0
    )
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.create(
            model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(
            model="mock", max_tokens=0, messages=[{"role": "user", "content": "x"}]
        )
    fake_openai.script.append(Scripted(body=tool_call_completion()))
    message = await client.messages.create(
        model="gpt",
        max_tokens=100,
        messages=[{"role": "user", "content": "Paris weather?"}],
        tools=[
            {
                "name": "get_weather",
                "description": "Weather by city",
                "input_schema": WEATHER_TOOL["function"]["parameters"],
            }
        ],
    )  # type: ignore[index]
    sent = fake_openai.received[-1].body
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    block = message.content[0]
    assert block.type == "tool_use"
    assert block.input == {"city": "Paris"}  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"


async def test_openai_sdk_with_anthropic_upstream(stack: Stack) -> None:
    """An OpenAI client reaches an Anthropic model: translated both ways, whole and streamed."""
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    completion = await sdk.chat.completions.create(
        model="claude-sonnet",
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER_TOOL],
    )  # type: ignore[list-item]
    message = completion.choices[0].message
    assert message.content == "Let me check."
    assert message.tool_calls[0].function.name == "get_weather"  # type: ignore[index]
    assert completion.choices[0].finish_reason == "tool_calls"
    stream = await sdk.chat.completions.create(
        model="claude-sonnet",
        messages=[{"role": "user", "content": "Weather?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    assert text == "Sunny today"
    assert usage is not None
    assert usage.completion_tokens == 15


async def test_the_mock_stands_in_for_claude_whatever_the_request_carries(stack: Stack) -> None:
    """Thinking, server tools and betas meant for the real model do not make the mock fail:
    it answers from the texts, whole, streamed, and counts tokens (an estimate)."""
    client = anthropic.AsyncAnthropic(
        base_url=stack.base_url.removesuffix("/v1"), api_key="x", max_retries=0
    )
    params: dict[str, object] = {
        "model": "mock",
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": "Think about tides"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        "extra_headers": {"anthropic-beta": "interleaved-thinking-2025-05-14"},
    }
    message = await client.messages.create(**params)  # type: ignore[call-overload]
    assert "Think about tides" in message.content[0].text
    async with client.messages.stream(**params) as stream:  # type: ignore[arg-type]
        text = "".join([piece async for piece in stream.text_stream])
    assert text == message.content[0].text
    counted = await client.messages.count_tokens(
        model="mock", messages=[{"role": "user", "content": "Think about tides"}]
    )
    assert counted.input_tokens > 0
