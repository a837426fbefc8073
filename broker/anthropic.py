"""The Anthropic Messages API as an entry point (``llm.messages``, ``POST /v1/messages``).

Requests are translated to chat-completions and run through the same pipeline (cache,
routing, any provider); answers are translated back, whole or as Anthropic stream events.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from schemas import ChatCompletion, ChatCompletionChunk
from schemas.anthropic import (
    AnthropicRequest,
    ContentBlock,
    MessageParam,
    Source,
    ToolChoice,
    decode_messages_request,
)

__all__ = [
    "EventWriter",
    "message_from_completion",
    "to_openai_request",
]

JSON = dict[str, Any]
_encoder = msgspec.json.Encoder()

#: OpenAI ``finish_reason`` -> Anthropic ``stop_reason``.
_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def _text_of(content: str | list[ContentBlock] | None) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.text or "" for b in content or () if b.type == "text")


def _image_url(source: Source | None) -> str:
    if source is None:
        return ""
    if source.type == "base64":
        return f"data:{source.media_type};base64,{source.data}"
    return source.url or ""


def _user_parts(blocks: list[ContentBlock]) -> tuple[list[JSON], list[JSON]]:
    """OpenAI content parts and tool messages from an Anthropic user turn."""
    parts: list[JSON] = []
    tools: list[JSON] = []
    for block in blocks:
        if block.type == "text":
            parts.append({"type": "text", "text": block.text or ""})
        elif block.type == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block.source)}})
        elif block.type == "tool_result":
            tools.append(
                {
                    "role": "tool",
                    "tool_call_id": block.tool_use_id or "",
                    "content": _text_of(block.content),
                }
            )
    return parts, tools


def _assistant(blocks: list[ContentBlock]) -> JSON:
    calls = [
        {
            "id": b.id or "",
            "type": "function",
            "function": {"name": b.name or "", "arguments": json.dumps(b.input or {})},
        }
        for b in blocks
        if b.type == "tool_use"
    ]
    entry: JSON = {"role": "assistant", "content": _text_of(blocks) or None}
    if calls:
        entry["tool_calls"] = calls
    return entry


def _messages(turns: list[MessageParam]) -> list[JSON]:
    out: list[JSON] = []
    for turn in turns:
        if isinstance(turn.content, str):
            out.append({"role": turn.role, "content": turn.content})
        elif turn.role == "assistant":
            out.append(_assistant(turn.content))
        else:
            parts, tools = _user_parts(turn.content)
            out.extend(tools)
            if parts:
                out.append({"role": "user", "content": parts})
    return out


def _tool_choice(choice: ToolChoice) -> str | JSON:
    if choice.type == "tool":
        return {"type": "function", "function": {"name": choice.name or ""}}
    return "required" if choice.type == "any" else choice.type


def _tools(request: AnthropicRequest, out: JSON) -> None:
    """Tools and tool choice, in chat-completions terms."""
    if request.tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description or "",
                    "parameters": t.input_schema or {"type": "object"},
                },
            }
            for t in request.tools
        ]
    choice = request.tool_choice
    if choice is not None:
        out["tool_choice"] = _tool_choice(choice)
        if choice.disable_parallel_tool_use:
            out["parallel_tool_calls"] = False


def to_openai_request(body: bytes) -> tuple[bytes, str]:
    """A chat-completions body for a Messages API body, and the model the caller named.

    Raises:
        msgspec.MsgspecError: not JSON, or breaks the Messages contract (the message names
            the field; see :mod:`schemas.anthropic`).
    """
    request = decode_messages_request(body)
    messages = _messages(request.messages)
    if request.system:
        messages.insert(0, {"role": "system", "content": _text_of(request.system)})
    out: JSON = {"model": request.model, "messages": messages, "max_tokens": request.max_tokens}
    for ours, value in (
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("stop", request.stop_sequences),
        ("stream", request.stream),
        ("top_k", request.top_k),
    ):
        if value is not None:
            out[ours] = value
    _tools(request, out)
    user = request.metadata.user_id if request.metadata else None
    if user:
        out["user"] = user
    if request.stream:
        out["stream_options"] = {"include_usage": True}
    return _encoder.encode(out), request.model


def message_from_completion(completion: ChatCompletion, model: str) -> JSON:
    """The Anthropic ``message`` for a chat completion."""
    choice = completion.choices[0] if completion.choices else None
    content: list[JSON] = []
    if choice and choice.message.content:
        content.append({"type": "text", "text": choice.message.content})
    for call in (choice.message.tool_calls or []) if choice else []:
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError:
            arguments = {}
        content.append(
            {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}
        )
    usage = completion.usage
    return {
        "id": _message_id(completion.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP.get(choice.finish_reason or "stop", "end_turn") if choice else None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.prompt_tokens if usage else 0,
            "output_tokens": usage.completion_tokens if usage else 0,
        },
    }


def _message_id(completion_id: str) -> str:
    return completion_id if completion_id.startswith("msg_") else f"msg_{completion_id}"


class EventWriter:
    """OpenAI chunks in, Anthropic stream events ``(name, data)`` out."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._block: int = -1
        self._block_kind = ""
        self._tools: dict[int, int] = {}
        self._stop = "end_turn"
        self._usage: JSON = {"input_tokens": 0, "output_tokens": 0}

    def _start(self, chunk: ChatCompletionChunk) -> list[tuple[str, JSON]]:
        self._started = True
        message: JSON = {
            "id": _message_id(chunk.id),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _open(self, kind: str, block: JSON) -> list[tuple[str, JSON]]:
        events = self._close()
        self._block += 1
        self._block_kind = kind
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self._block, "content_block": block},
            )
        )
        return events

    def _close(self) -> list[tuple[str, JSON]]:
        if not self._block_kind:
            return []
        self._block_kind = ""
        return [("content_block_stop", {"type": "content_block_stop", "index": self._block})]

    def chunk(self, chunk: ChatCompletionChunk) -> list[tuple[str, JSON]]:
        """Events for one chunk."""
        events = [] if self._started else self._start(chunk)
        if chunk.usage is not None:
            self._usage = {
                "input_tokens": chunk.usage.prompt_tokens,
                "output_tokens": chunk.usage.completion_tokens,
            }
        for choice in chunk.choices[:1]:
            delta = choice.delta
            if delta.content:
                if self._block_kind != "text":
                    events += self._open("text", {"type": "text", "text": ""})
                events.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": self._block,
                            "delta": {"type": "text_delta", "text": delta.content},
                        },
                    )
                )
            for call in delta.tool_calls or ():
                events += self._tool_delta(call)
            if choice.finish_reason:
                self._stop = _STOP.get(choice.finish_reason, "end_turn")
        return events

    def _tool_delta(self, call: JSON) -> list[tuple[str, JSON]]:
        events: list[tuple[str, JSON]] = []
        index = int(call.get("index", 0))
        function = call.get("function") or {}
        if index not in self._tools:
            events += self._open(
                "tool_use",
                {
                    "type": "tool_use",
                    "id": call.get("id", ""),
                    "name": function.get("name", ""),
                    "input": {},
                },
            )
            self._tools[index] = self._block
        if function.get("arguments"):
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self._tools[index],
                        "delta": {
                            "type": "input_json_delta",
                            "partial_json": function["arguments"],
                        },
                    },
                )
            )
        return events

    def finish(self, model_id: str = "") -> list[tuple[str, JSON]]:
        """Closing events: ``message_delta`` with stop reason and usage, ``message_stop``."""
        events: list[tuple[str, JSON]] = []
        if not self._started:
            events += self._start(ChatCompletionChunk(model_id, 0, self._model, []))
        events += self._close()
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self._stop, "stop_sequence": None},
                    "usage": self._usage,
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events
