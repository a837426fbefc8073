"""OpenAI chat-completions <-> Anthropic Messages, the provider direction.

Requests go out as Anthropic Messages; answers and stream events come back as OpenAI
``chat.completion`` / ``chat.completion.chunk``. Pure functions: no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    Message,
    ResponseMessage,
    ToolCall,
    Usage,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "STOP_REASONS",
    "StreamTranslator",
    "completion_from_anthropic",
    "to_anthropic_request",
]

#: Anthropic requires ``max_tokens``; used when the caller sets neither max_tokens nor
#: max_completion_tokens.
DEFAULT_MAX_TOKENS = 4096

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


def _image_block(part: JSON) -> JSON:
    url = str((part.get("image_url") or {}).get("url", ""))
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: str | list[JSON] | None) -> list[JSON]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            blocks.append(_image_block(part))
    return blocks


def _text(content: str | list[JSON] | None) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(str(p.get("text", "")) for p in content or () if p.get("type") == "text")


def _message_blocks(message: Message) -> tuple[str, list[JSON]]:
    """The Anthropic role and content blocks of one OpenAI message."""
    if message.role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": message.tool_call_id or "",
            "content": _text(message.content),
        }
        return "user", [result]
    if message.role == "assistant":
        blocks = _blocks(message.content)
        for call in message.tool_calls or ():
            try:
                arguments = json.loads(call.function.arguments or "{}")
            except json.JSONDecodeError:
                arguments = {"_raw": call.function.arguments}
            blocks.append(
                {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}
            )
        return "assistant", blocks
    return "user", _blocks(message.content)


def _tool_choice(choice: str | JSON | None, parallel: bool | None) -> JSON | None:
    if choice is None:
        result: JSON | None = None if parallel is not False else {"type": "auto"}
    elif isinstance(choice, str):
        result = {"type": {"required": "any"}.get(choice, choice)}
    else:
        result = {"type": "tool", "name": str((choice.get("function") or {}).get("name", ""))}
    if result is not None and parallel is False and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result


def to_anthropic_request(request: ChatRequest, model: str, *, stream: bool) -> JSON:
    """The Messages API body for an OpenAI-shaped request.

    System and developer messages become ``system``; consecutive same-role messages merge
    (tool results join the user turn that follows the assistant's tool calls).
    """
    system: list[str] = []
    messages: list[JSON] = []
    for message in request.messages:
        if message.role in {"system", "developer"}:
            system.append(_text(message.content))
            continue
        role, blocks = _message_blocks(message)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    body: JSON = {
        "model": model,
        "messages": messages,
        "max_tokens": request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_TOKENS,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0..1
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if request.tools:
        body["tools"] = [
            {
                "name": t.function.name,
                "description": t.function.description or "",
                "input_schema": t.function.parameters or {"type": "object", "properties": {}},
            }
            for t in request.tools
        ]
    tool_choice = _tool_choice(request.tool_choice, request.parallel_tool_calls)
    if tool_choice is not None and request.tools:
        body["tool_choice"] = tool_choice
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    return body


def _usage(raw: JSON | None, prompt_tokens: int = 0) -> Usage:
    raw = raw or {}
    prompt = prompt_tokens or (
        int(raw.get("input_tokens") or 0)
        + int(raw.get("cache_read_input_tokens") or 0)
        + int(raw.get("cache_creation_input_tokens") or 0)
    )
    completion = int(raw.get("output_tokens") or 0)
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def completion_from_anthropic(body: JSON, created: int) -> ChatCompletion:
    """An OpenAI ``chat.completion`` from a Messages API response."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in body.get("content") or ():
        if block.get("type") == "text":
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
    )
    finish = STOP_REASONS.get(str(body.get("stop_reason")), "stop")
    return ChatCompletion(
        id=str(body.get("id", "")),
        created=created,
        model=str(body.get("model", "")),
        choices=[Choice(index=0, message=message, finish_reason=finish)],
        usage=_usage(body.get("usage")),
    )


@dataclass(slots=True)
class StreamTranslator:
    """Anthropic stream events in, OpenAI chunks out (``feed`` returns 0..n chunks)."""

    created: int
    id: str = ""
    model: str = ""
    prompt_tokens: int = 0
    _tool_index: dict[int, int] = field(default_factory=dict)

    def _chunk(
        self, delta: Delta | None, finish: str | None = None, usage: Usage | None = None
    ) -> ChatCompletionChunk:
        choices = [] if delta is None else [ChunkChoice(0, delta, finish)]
        return ChatCompletionChunk(self.id, self.created, self.model, choices, usage=usage)

    def feed(self, event: JSON) -> list[ChatCompletionChunk]:
        """Translate one event; ``error`` events are the caller's to raise."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = str(message.get("id", ""))
            self.model = str(message.get("model", ""))
            self.prompt_tokens = _usage(message.get("usage")).prompt_tokens
            return [self._chunk(Delta(role="assistant", content=""))]
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "message_delta":
            delta = event.get("delta") or {}
            finish = STOP_REASONS.get(str(delta.get("stop_reason")), "stop")
            usage = _usage(event.get("usage"), self.prompt_tokens)
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
        return []  # thinking and signature deltas have no OpenAI counterpart
