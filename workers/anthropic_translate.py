"""Anthropic Messages answers as chat-completions answers: the way out when a chat caller's
model is served by Anthropic (the way in is :mod:`workers.chat_to_messages`).

Answers and stream events come back as OpenAI ``chat.completion`` /
``chat.completion.chunk``: text, tool calls, the stop reason, the usage, and the model's
thinking as ``reasoning_content`` (what OpenAI-compatible servers call it). Pure: no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    ResponseMessage,
    ToolCall,
    Usage,
)
from schemas.usage import openai_tier, usage_from_anthropic

__all__ = ["STOP_REASONS", "StreamTranslator", "completion_from_anthropic"]

#: Anthropic ``stop_reason`` -> OpenAI ``finish_reason``.
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

JSON = dict[str, Any]


def _usage(raw: JSON | None) -> Usage:
    return usage_from_anthropic(raw if isinstance(raw, dict) else None)


def completion_from_anthropic(body: JSON, created: int) -> ChatCompletion:
    """An OpenAI ``chat.completion`` from a Messages API response."""
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    for block in body.get("content") or ():
        if block.get("type") == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            arguments = json.dumps(block.get("input") or {}, separators=(",", ":"))
            calls.append(
                ToolCall(
                    id=str(block.get("id", "")),
                    function=FunctionCall(name=str(block.get("name", "")), arguments=arguments),
                )
            )
    message = ResponseMessage(
        role="assistant",
        content="".join(texts) if texts or not calls else None,
        tool_calls=calls or None,
        reasoning_content="".join(thinking) or None,
    )
    finish = STOP_REASONS.get(str(body.get("stop_reason")), "stop")
    return ChatCompletion(
        id=str(body.get("id", "")),
        created=created,
        model=str(body.get("model", "")),
        choices=[Choice(index=0, message=message, finish_reason=finish)],
        usage=_usage(body.get("usage")),
        service_tier=openai_tier((body.get("usage") or {}).get("service_tier")),
    )


@dataclass(slots=True)
class StreamTranslator:
    """Anthropic stream events in, OpenAI chunks out (``feed`` returns 0..n chunks)."""

    created: int
    id: str = ""
    model: str = ""
    service_tier: str | None = None
    _usage: JSON = field(default_factory=dict)
    _tool_index: dict[int, int] = field(default_factory=dict)

    def _chunk(
        self, delta: Delta | None, finish: str | None = None, usage: Usage | None = None
    ) -> ChatCompletionChunk:
        choices = [] if delta is None else [ChunkChoice(0, delta, finish)]
        return ChatCompletionChunk(
            self.id, self.created, self.model, choices, usage=usage, service_tier=self.service_tier
        )

    def _add_usage(self, raw: object) -> None:
        """``message_start`` holds the input counts, ``message_delta`` the output (and, of
        late, the input again): the counts reported last stand."""
        if isinstance(raw, dict):
            self._usage.update({k: v for k, v in raw.items() if v is not None})

    def feed(self, event: JSON) -> list[ChatCompletionChunk]:
        """Translate one event; ``error`` events are the caller's to raise."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = str(message.get("id", ""))
            self.model = str(message.get("model", ""))
            self._add_usage(message.get("usage"))
            self.service_tier = openai_tier(self._usage.get("service_tier"))
            return [self._chunk(Delta(role="assistant", content=""))]
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "message_delta":
            delta = event.get("delta") or {}
            finish = STOP_REASONS.get(str(delta.get("stop_reason")), "stop")
            self._add_usage(event.get("usage"))
            usage = _usage(self._usage)
            return [self._chunk(Delta(), finish), self._chunk(None, usage=usage)]
        return []  # ping, content_block_stop, message_stop

    def _block_start(self, event: JSON) -> list[ChatCompletionChunk]:
        block = event.get("content_block") or {}
        if block.get("type") != "tool_use":
            text = str(block.get("text") or "")
            return [self._chunk(Delta(content=text))] if text else []
        index = len(self._tool_index)
        self._tool_index[int(event.get("index", 0))] = index
        call = {
            "index": index,
            "id": block.get("id", ""),
            "type": "function",
            "function": {"name": block.get("name", ""), "arguments": ""},
        }
        return [self._chunk(Delta(tool_calls=[call]))]

    def _block_delta(self, event: JSON) -> list[ChatCompletionChunk]:
        delta = event.get("delta") or {}
        if delta.get("type") == "text_delta":
            return [self._chunk(Delta(content=str(delta.get("text", ""))))]
        if delta.get("type") == "input_json_delta":
            index = self._tool_index.get(int(event.get("index", 0)), 0)
            call = {"index": index, "function": {"arguments": str(delta.get("partial_json", ""))}}
            return [self._chunk(Delta(tool_calls=[call]))]
        if delta.get("type") == "thinking_delta":
            return [self._chunk(Delta(reasoning_content=str(delta.get("thinking", ""))))]
        return []  # a signature has no OpenAI counterpart
