"""Streams and whole completions, each made from the other.

:class:`StreamAssembler` turns ``chat.completion.chunk``s into the ``chat.completion`` they add
up to (what the cache stores); :func:`replay_chunks` turns a stored completion back into chunks,
so a streaming request can be served from any cache entry.
"""

from __future__ import annotations

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

__all__ = ["StreamAssembler", "replay_chunks"]


@dataclass(slots=True)
class _ChoiceState:
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tools: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None


@dataclass(slots=True)
class StreamAssembler:
    """Accumulates chunks; :meth:`completion` gives the whole answer."""

    id: str = ""
    model: str = ""
    created: int = 0
    usage: Usage | None = None
    system_fingerprint: str | None = None
    _choices: dict[int, _ChoiceState] = field(default_factory=dict)

    def feed(self, chunk: ChatCompletionChunk) -> None:
        """Add one chunk."""
        self.id = self.id or chunk.id
        self.model = self.model or chunk.model
        self.created = self.created or chunk.created
        self.system_fingerprint = self.system_fingerprint or chunk.system_fingerprint
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            state = self._choices.setdefault(choice.index, _ChoiceState())
            delta = choice.delta
            if delta.content:
                state.content.append(delta.content)
            if delta.refusal:
                state.refusal.append(delta.refusal)
            for call in delta.tool_calls or ():
                _merge_tool_delta(state.tools, call)
            if choice.finish_reason:
                state.finish_reason = choice.finish_reason

    def completion(self) -> ChatCompletion:
        """The ``chat.completion`` the chunks add up to."""
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            tool_calls = [
                ToolCall(
                    id=t.get("id", ""),
                    type=t.get("type", "function"),
                    function=FunctionCall(name=t.get("name", ""), arguments=t.get("arguments", "")),
                )
                for _, t in sorted(state.tools.items())
            ]
            message = ResponseMessage(
                role="assistant",
                content="".join(state.content) if state.content or not tool_calls else None,
                tool_calls=tool_calls or None,
                refusal="".join(state.refusal) or None,
            )
            choices.append(Choice(index=index, message=message, finish_reason=state.finish_reason))
        return ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=self.usage,
            system_fingerprint=self.system_fingerprint,
        )


def _merge_tool_delta(tools: dict[int, dict[str, Any]], call: dict[str, Any]) -> None:
    slot = tools.setdefault(int(call.get("index", len(tools))), {})
    for key in ("id", "type"):
        if call.get(key):
            slot[key] = call[key]
    function = call.get("function") or {}
    if function.get("name"):
        slot["name"] = slot.get("name", "") + function["name"]
    if function.get("arguments"):
        slot["arguments"] = slot.get("arguments", "") + function["arguments"]


def replay_chunks(completion: ChatCompletion, *, include_usage: bool) -> list[ChatCompletionChunk]:
    """The chunks a stream of ``completion`` would have had: content, then finish, then usage."""

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=completion.id,
            created=completion.created,
            model=completion.model,
            choices=choices,
            usage=usage,
            system_fingerprint=completion.system_fingerprint,
        )

    out = []
    for choice in completion.choices:
        message = choice.message
        tool_calls = None
        if message.tool_calls:
            tool_calls = [
                {
                    "index": i,
                    "id": t.id,
                    "type": t.type,
                    "function": {"name": t.function.name, "arguments": t.function.arguments},
                }
                for i, t in enumerate(message.tool_calls)
            ]
        delta = Delta(
            role="assistant",
            content=message.content,
            tool_calls=tool_calls,
            refusal=message.refusal,
        )
        out.append(chunk([ChunkChoice(index=choice.index, delta=delta)]))
        out.append(
            chunk(
                [ChunkChoice(index=choice.index, delta=Delta(), finish_reason=choice.finish_reason)]
            )
        )
    if include_usage and completion.usage is not None:
        out.append(chunk([], completion.usage))
    return out
