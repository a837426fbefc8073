"""Streams and whole completions, each made from the other.

:class:`StreamAssembler` turns ``chat.completion.chunk``s into the ``chat.completion`` they add
up to (what the cache stores) and records where the stream split its content;
:func:`replay_chunks` turns a stored completion back into chunks, at the recorded boundaries
when there are some (a replay looks like the original stream), else as one content chunk, so a
streaming request can be served from any cache entry.
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

__all__ = ["StreamAssembler", "cut", "replay_chunks"]


@dataclass(slots=True)
class _ChoiceState:
    content: list[str] = field(default_factory=list)
    splits: list[int] = field(default_factory=list)  # each content piece's length, "" included
    refusal: list[str] = field(default_factory=list)
    reasoning_content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tools: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: dict[str, list[Any]] | None = None
    finish_reason: str | None = None

    def add_logprobs(self, logprobs: dict[str, Any]) -> None:
        """OpenAI's streamed ``logprobs`` (``content`` and ``refusal`` token lists) add up."""
        kept = self.logprobs if self.logprobs is not None else {}
        for name, tokens in logprobs.items():
            if isinstance(tokens, list):
                kept.setdefault(name, []).extend(tokens)
        self.logprobs = kept


@dataclass(slots=True)
class StreamAssembler:
    """Accumulates chunks; :meth:`completion` gives the whole answer."""

    id: str = ""
    model: str = ""
    created: int = 0
    usage: Usage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None
    _choices: dict[int, _ChoiceState] = field(default_factory=dict)

    def feed(self, chunk: ChatCompletionChunk) -> None:
        """Add one chunk."""
        self.id = self.id or chunk.id
        self.model = self.model or chunk.model
        self.created = self.created or chunk.created
        self.system_fingerprint = self.system_fingerprint or chunk.system_fingerprint
        self.service_tier = chunk.service_tier or self.service_tier
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            state = self._choices.setdefault(choice.index, _ChoiceState())
            delta = choice.delta
            if delta.content is not None:
                state.content.append(delta.content)
                state.splits.append(len(delta.content))
            if delta.refusal:
                state.refusal.append(delta.refusal)
            if delta.reasoning_content:
                state.reasoning_content.append(delta.reasoning_content)
            if delta.reasoning:
                state.reasoning.append(delta.reasoning)
            if choice.logprobs:
                state.add_logprobs(choice.logprobs)
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
            text = "".join(state.content)
            message = ResponseMessage(
                role="assistant",
                content=text if text or not tool_calls else None,
                tool_calls=tool_calls or None,
                refusal="".join(state.refusal) or None,
                reasoning_content="".join(state.reasoning_content) or None,
                reasoning="".join(state.reasoning) or None,
            )
            choices.append(
                Choice(
                    index=index,
                    message=message,
                    finish_reason=state.finish_reason,
                    logprobs=state.logprobs,
                )
            )
        return ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=self.usage,
            system_fingerprint=self.system_fingerprint,
            service_tier=self.service_tier,
        )

    def splits(self) -> list[list[int]]:
        """Per choice (in index order), the length of each streamed content piece."""
        return [self._choices[index].splits for index in sorted(self._choices)]


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


def replay_chunks(
    completion: ChatCompletion,
    *,
    include_usage: bool,
    splits: list[list[int]] | None = None,
) -> list[ChatCompletionChunk]:
    """The chunks a stream of ``completion`` would have had: content (cut at ``splits``, the
    original stream's boundaries, when they fit; else in one piece), then finish, then usage."""

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=completion.id,
            created=completion.created,
            model=completion.model,
            choices=choices,
            usage=usage,
            system_fingerprint=completion.system_fingerprint,
            service_tier=completion.service_tier,
        )

    out = []
    for position, choice in enumerate(completion.choices):
        message = choice.message
        tool_calls = _tool_call_deltas(message.tool_calls)
        lengths = splits[position] if splits is not None and position < len(splits) else None
        pieces = cut(message.content, lengths)
        if message.reasoning_content or message.reasoning:  # thinking comes before the answer
            delta = Delta(
                role="assistant",
                reasoning_content=message.reasoning_content,
                reasoning=message.reasoning,
            )
            out.append(chunk([ChunkChoice(index=choice.index, delta=delta)]))
        if pieces is None:  # no boundaries (an entry stored whole, or before they were kept)
            delta = Delta(
                role="assistant",
                content=message.content,
                tool_calls=tool_calls,
                refusal=message.refusal,
            )
            out.append(chunk([ChunkChoice(index=choice.index, delta=delta)]))
        else:
            for n, piece in enumerate(pieces):
                delta = Delta(role="assistant" if n == 0 else None, content=piece)
                out.append(chunk([ChunkChoice(index=choice.index, delta=delta)]))
            if tool_calls or message.refusal:
                delta = Delta(tool_calls=tool_calls, refusal=message.refusal)
                out.append(chunk([ChunkChoice(index=choice.index, delta=delta)]))
        finish = ChunkChoice(
            index=choice.index,
            delta=Delta(),
            finish_reason=choice.finish_reason,
            logprobs=choice.logprobs,
        )
        out.append(chunk([finish]))
    if include_usage and completion.usage is not None:
        out.append(chunk([], completion.usage))
    return out


def _tool_call_deltas(calls: list[ToolCall] | None) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    return [
        {
            "index": i,
            "id": t.id,
            "type": t.type,
            "function": {"name": t.function.name, "arguments": t.function.arguments},
        }
        for i, t in enumerate(calls)
    ]


def cut(content: str | None, lengths: list[int] | None) -> list[str] | None:
    """``content`` cut into pieces of ``lengths``, or ``None`` when they do not add up to it."""
    if content is None or not lengths or sum(lengths) != len(content) or min(lengths) < 0:
        return None
    pieces, start = [], 0
    for length in lengths:
        pieces.append(content[start : start + length])
        start += length
    return pieces
