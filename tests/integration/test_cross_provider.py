"""Translation across providers, through the real path: a Messages request served by an
OpenAI-shaped model and a chat request served by Anthropic are carried both ways, and what
the other API cannot carry is a 400 naming the field, with no upstream call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from tests.support.anthropic_shapes import RICH_MESSAGE
from tests.support.anthropic_upstream import FakeAnthropic, running_fake_anthropic
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI

PDF = "JVBERi0xLjQKJcOkw7zDtsOf"
WEATHER = {
    "name": "get_weather",
    "description": "Weather by city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
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
        enabled = false
        [batch]
        enabled = false
        [providers.claude]
        kind = "anthropic"
        base_url = "{fake_anthropic.base_url}"
        api_key_env = "ANTHROPIC_API_KEY"
        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"
        [models.claude]
        deployments = [{{ provider = "claude", model = "claude-sonnet-4-5" }}]
        [models.gpt]
        deployments = [{{ provider = "up", model = "gpt-4o" }}]
    """)
    return await make_stack(nats_url, config, bridge=True, environ={"ANTHROPIC_API_KEY": "k"})


def claude_sdk(stack: Stack) -> anthropic.AsyncAnthropic:
    base = stack.base_url.removesuffix("/v1")
    return anthropic.AsyncAnthropic(base_url=base, api_key="x", max_retries=0)


async def test_a_messages_request_is_translated_for_an_openai_model_and_back(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """System, a PDF, a tool call and its result, tools and tool choice reach the chat
    upstream in its own terms; its answer comes back as a message, whole and streamed."""
    client = claude_sdk(stack)
    message = await client.messages.create(
        model="gpt",
        max_tokens=300,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Read this."},
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "t1",
                        "name": "get_weather",
                        "input": {"city": "Oslo"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "9 C"}],
            },
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        stop_sequences=["END"],
        metadata={"user_id": "u-1"},
    )
    sent = fake_openai.received[-1].body
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Read this."},
                {
                    "type": "file",
                    "file": {
                        "filename": "document.pdf",
                        "file_data": f"data:application/pdf;base64,{PDF}",
                    },
                },
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "9 C"},
    ]
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("required", False)
    assert (sent["stop"], sent["user"], sent["model"]) == (["END"], "u-1", "gpt-4o")
    assert message.content[0].text == "upstream says hi to gpt-4o"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    async with client.messages.stream(
        model="gpt", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
    assert text == "upstream streams to gpt-4o"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"tools": [WEATHER, {"type": "web_search_20250305", "name": "web"}]}, "tools[1].type"),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
        ({"container": "container_1"}, "container"),
        ({"a_field_from_next_year": 1}, "a_field_from_next_year"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": True}],
                    }
                ]
            },
            "messages[0].content[0].is_error",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "search_result", "x": 1}]}]},
            "messages[0].content[0].type",
        ),
    ],
)
async def test_what_chat_completions_cannot_carry_is_a_400_naming_it(
    stack: Stack, fake_openai: FakeOpenAI, change: dict[str, Any], field: str
) -> None:
    """A Messages request for an OpenAI-shaped model with a field chat completions has no
    counterpart for is an Anthropic 400 naming it; nothing reaches the upstream."""
    assert stack.http is not None
    body = {"model": "gpt", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}
    response = await stack.http.post("/messages", json={**body, **change})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{field}: ")
    assert "chat-completions API" in error["message"]
    assert fake_openai.received == []


async def test_a_chat_request_is_translated_for_anthropic_and_back(
    stack: Stack, fake_anthropic: FakeAnthropic
) -> None:
    """A JSON-schema response format and a reasoning effort reach Anthropic as its
    output_config, top_k as Anthropic's own; the answer's thinking comes back as
    reasoning_content."""
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    completion = await sdk.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "Weather?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": schema}},
        reasoning_effort="low",
        extra_body={"top_k": 5},
    )
    sent = fake_anthropic.messages_received()[-1].json()
    assert sent["top_k"] == 5
    assert sent["output_config"] == {
        "effort": "low",
        "format": {"type": "json_schema", "schema": schema},
    }
    message = completion.choices[0].message
    assert message.content == "It is sunny in Paris."
    assert message.model_extra == {"reasoning_content": RICH_MESSAGE["content"][0]["thinking"]}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"n": 2}, "n"),
        ({"seed": 7}, "seed"),
        ({"temperature": 1.5}, "temperature"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"vendor_knob": 1}, "vendor_knob"),
        (
            {"messages": [{"role": "user", "content": "Hi", "name": "ada"}]},
            "messages[0].name",
        ),
        (
            {"messages": [{"role": "user", "content": "Hi", "vendor_hint": 1}]},
            "messages[0]",
        ),
    ],
)
async def test_what_anthropic_cannot_carry_is_a_400_naming_it(
    stack: Stack, fake_anthropic: FakeAnthropic, change: dict[str, Any], field: str
) -> None:
    """A chat request for an Anthropic model with a field the Messages API has no
    counterpart for is an OpenAI 400 naming it; nothing reaches the upstream."""
    assert stack.http is not None
    body = {"model": "claude", "messages": [{"role": "user", "content": "Hi"}], **change}
    response = await stack.http.post("/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith(f"{field}")
    assert "Anthropic Messages API" in error["message"]
    assert fake_anthropic.received == []
