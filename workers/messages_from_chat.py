"""A chat-completions answer as an Anthropic Messages answer: the way out when a Messages
caller's model is served by an OpenAI-shaped provider. Pure: no I/O.

A whole ``chat.completion`` becomes a ``message``; streamed chunks become Anthropic events
(:class:`EventWriter`), the ones the ``anthropic`` SDK reads. The answer's text, tool calls
and their arguments, a refusal, the thinking some compatible servers return beside the answer
(``reasoning_content``: a ``thinking`` block without a signature), the stop reason and the
usage (its cache reads and writes as Anthropic counts them) and the service tier are carried.
"""

from __future__ import annotations

import json
from typing import Any

from schemas import ChatCompletion, ChatCompletionChunk, Delta, ResponseMessage
from schemas.usage import anthropic_usage

__all__ = ["STOP_REASONS", "EventWriter", "message_from_completion"]

JSON = dict[str, Any]
#: (event name, event data)
Out = tuple[str, JSON]

#: OpenAI ``finish_reason`` -> Anthropic ``stop_reason``.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _message_id(completion_id: str) -> str:
    return completion_id if completion_id.startswith("msg_") else f"msg_{completion_id}"


def _thinking(message: ResponseMessage | Delta) -> str | None:
    return message.reasoning_content or message.reasoning


def message_from_completion(completion: ChatCompletion, model: str) -> JSON:
    """The Anthropic ``message`` for a chat completion (its first choice); ``model`` names
    the model when the completion does not."""
    choice = completion.choices[0] if completion.choices else None
    content: list[JSON] = []
    message = choice.message if choice else None
    if message is not None and _thinking(message):
        content.append({"type": "thinking", "thinking": _thinking(message), "signature": ""})
    text = (message.content or message.refusal) if message else None
    if text:
        content.append({"type": "text", "text": text})
    for call in (message.tool_calls or []) if message else []:
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError:
            arguments = {"_raw": call.function.arguments}  # kept, never lost
        content.append(
            {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}
        )
    usage = completion.usage
    stop = STOP_REASONS.get(choice.finish_reason or "stop", "end_turn") if choice else None
    return {
        "id": _message_id(completion.id),
        "type": "message",
        "role": "assistant",
        "model": completion.model or model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": anthropic_usage(usage, completion.service_tier),
    }


class EventWriter:
    """OpenAI chunks in, Anthropic stream events out."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._block: int = -1
        self._block_kind = ""
        self._tools: dict[int, int] = {}
        self._stop = "end_turn"
        self._usage: JSON = {"input_tokens": 0, "output_tokens": 0}
        self._tier: str | None = None

    def _start(self, chunk: ChatCompletionChunk) -> list[Out]:
        self._started = True
        message: JSON = {
            "id": _message_id(chunk.id),
            "type": "message",
            "role": "assistant",
            "model": chunk.model or self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _open(self, kind: str, block: JSON) -> list[Out]:
        events = self._close()
        self._block += 1
        self._block_kind = kind
        start = {"type": "content_block_start", "index": self._block, "content_block": block}
        return [*events, ("content_block_start", start)]

    def _close(self) -> list[Out]:
        if not self._block_kind:
            return []
        self._block_kind = ""
        return [("content_block_stop", {"type": "content_block_stop", "index": self._block})]

    def _delta(self, delta: JSON) -> Out:
        return (
            "content_block_delta",
            {"type": "content_block_delta", "index": self._block, "delta": delta},
        )

    def chunk(self, chunk: ChatCompletionChunk) -> list[Out]:
        """Events for one chunk."""
        events = [] if self._started else self._start(chunk)
        self._tier = chunk.service_tier or self._tier
        if chunk.usage is not None:
            self._usage = anthropic_usage(chunk.usage, self._tier)
        for choice in chunk.choices[:1]:
            delta = choice.delta
            thinking = _thinking(delta)
            if thinking:
                if self._block_kind != "thinking":
                    events += self._open("thinking", {"type": "thinking", "thinking": ""})
                events.append(self._delta({"type": "thinking_delta", "thinking": thinking}))
            text = delta.content or delta.refusal
            if text:
                if self._block_kind != "text":
                    events += self._open("text", {"type": "text", "text": ""})
                events.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.tool_calls or ():
                events += self._tool_delta(call)
            if choice.finish_reason:
                self._stop = STOP_REASONS.get(choice.finish_reason, "end_turn")
        return events

    def _tool_delta(self, call: JSON) -> list[Out]:
        events: list[Out] = []
        index = int(call.get("index", 0))
        function = call.get("function") or {}
        if index not in self._tools:
            block = {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": function.get("name", ""),
                "input": {},
            }
            events += self._open("tool_use", block)
            self._tools[index] = self._block
        if function.get("arguments"):
            delta = {"type": "input_json_delta", "partial_json": function["arguments"]}
            block_delta = {
                "type": "content_block_delta",
                "index": self._tools[index],
                "delta": delta,
            }
            events.append(("content_block_delta", block_delta))
        return events

    def finish(self, model_id: str = "") -> list[Out]:
        """Closing events: ``message_delta`` with stop reason and usage, ``message_stop``."""
        events: list[Out] = []
        if not self._started:
            events += self._start(ChatCompletionChunk(model_id, 0, self._model, []))
        events += self._close()
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop, "stop_sequence": None},
            "usage": self._usage,
        }
        events.append(("message_delta", message_delta))
        events.append(("message_stop", {"type": "message_stop"}))
        return events
