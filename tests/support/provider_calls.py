"""What the provider end-to-end tests (Gemini, Vertex AI, Bedrock ...) ask through a
stack and read back: the official SDKs pointed at its bridge, a chat request over NATS, and
the text, tool calls and finish of a stream."""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from typing import Any

import anthropic
import msgspec
import openai
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageToolCall,
)

from schemas import ChatCompletionChunk as WireChunk
from schemas import headers
from tests.support.stack import Stack, chat

__all__ = [
    "WEATHER_QUESTION",
    "WEATHER_RESULT",
    "WEATHER_TOOL",
    "answer_the_call",
    "anthropic_sdk",
    "call_for_the_tool",
    "chat_over_nats",
    "error_of",
    "finish_reasons",
    "openai_sdk",
    "streamed_text",
    "text_until_error",
    "tool_call_deltas",
]

#: A function tool in OpenAI's shape.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather by city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def openai_sdk(stack: Stack) -> openai.AsyncOpenAI:
    """The OpenAI SDK on the stack's bridge, without retries of its own."""
    return openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)


def anthropic_sdk(stack: Stack) -> anthropic.AsyncAnthropic:
    """The Anthropic SDK on the stack's bridge, without retries of its own."""
    base_url = stack.base_url.removesuffix("/v1")
    return anthropic.AsyncAnthropic(base_url=base_url, api_key="x", max_retries=0)


async def chat_over_nats(stack: Stack, model: str) -> tuple[int, dict[str, str], bytes]:
    """One ``llm.chat`` request over NATS (one user message, ``x``): the status its reply
    names, the reply's headers and its body."""
    msg = await stack.nc.request("llm.chat", chat("x", model), timeout=10)
    assert msg.headers is not None
    return int(msg.headers[headers.STATUS]), msg.headers, msg.data


def error_of(body: bytes) -> dict[str, Any]:
    """The ``error`` of an error envelope."""
    error: dict[str, Any] = msgspec.json.decode(body)["error"]
    return error


def streamed_text(chunks: Sequence[ChatCompletionChunk | WireChunk]) -> str:
    """The text a stream's chunks carry, joined."""
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finish_reasons(chunks: Sequence[ChatCompletionChunk | WireChunk]) -> list[str | None]:
    """Each chunk's finish reason (chunks without a choice left out)."""
    return [c.choices[0].finish_reason for c in chunks if c.choices]


def tool_call_deltas(chunks: Sequence[WireChunk]) -> list[dict[str, Any]]:
    """The tool-call deltas of a stream's chunks, in order."""
    return [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]


#: The question :func:`call_for_the_tool` asks, and the result :func:`answer_the_call` gives.
WEATHER_QUESTION = {"role": "user", "content": "Weather in Oslo?"}
WEATHER_RESULT = '{"temp_c": 12}'


async def call_for_the_tool(
    client: openai.AsyncOpenAI, model: str, tool_choice: Any
) -> tuple[ChatCompletionMessage, ChatCompletionMessageToolCall]:
    """Ask ``model`` the weather with :data:`WEATHER_TOOL` offered: its answer must be a tool
    call (finishing with ``tool_calls``); the answer's message and its first call."""
    first = await client.chat.completions.create(
        model=model,
        messages=[WEATHER_QUESTION],  # type: ignore[list-item]
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice=tool_choice,
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageToolCall)
    return choice.message, call


async def answer_the_call(
    client: openai.AsyncOpenAI, model: str, message: ChatCompletionMessage
) -> ChatCompletion:
    """Send the conversation on: the question, the assistant's ``message`` (a tool call) as
    it came, and the call's result."""
    assert message.tool_calls is not None
    result = {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": WEATHER_RESULT}
    return await client.chat.completions.create(
        model=model,
        messages=[WEATHER_QUESTION, message.model_dump(exclude_none=True), result],  # type: ignore[list-item]
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )


async def text_until_error(stream: AsyncIterable[ChatCompletionChunk]) -> str:
    """The text a stream carried before it ended in an error (it must)."""
    received: list[str] = []
    try:
        async for chunk in stream:
            received.extend(c.delta.content or "" for c in chunk.choices)
    except openai.APIError:
        return "".join(received)
    raise AssertionError(f"the stream ended without an error after {''.join(received)!r}")
