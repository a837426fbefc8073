"""An Anthropic Messages request as a chat-completions request: the way in when a Messages
caller's model is served by an OpenAI-shaped provider. Pure functions: no I/O.

Everything with a chat-completions counterpart is carried (texts, images, PDFs, tool use and
results, tools and tool choice, stop sequences, structured output, the user id). What has none
is refused with :class:`CannotCarry` naming the field, never dropped in silence, with three
exceptions that cannot change the answer: ``cache_control`` (an upstream that caches prompts
does so by itself), an earlier turn's ``thinking``/``redacted_thinking`` blocks (signed for
Claude, meaningless elsewhere; Anthropic itself leaves earlier turns' thinking out of the
context), and ``thinking: {"type": "disabled"}``.
"""

from __future__ import annotations

import json
from typing import Any

from schemas.anthropic import KNOWN_MESSAGES_FIELDS, MessagesRequest, ToolChoice
from schemas.chat import MAX_STOP_SEQUENCES
from workers.errors import CannotCarry

__all__ = ["estimate_tokens", "to_chat_request"]

JSON = dict[str, Any]

#: Blocks an assistant turn may hold that mean nothing to another model (see the docstring).
_UNSIGNED_ELSEWHERE = frozenset({"thinking", "redacted_thinking"})
#: Anthropic ``service_tier`` -> OpenAI's.
_SERVICE_TIERS = {"auto": "auto", "standard_only": "default"}
#: Anthropic ``output_config.effort`` -> OpenAI ``reasoning_effort``.
_EFFORTS = {"low": "low", "medium": "medium", "high": "high"}
#: Top-level fields carried below, and those that change nothing upstream.
_HANDLED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "service_tier",
        "cache_control",
        "output_config",
    }
)
#: Tokens an image is counted as by :func:`estimate_tokens` (Anthropic's largest image
#: without resizing is about this many).
IMAGE_TOKENS = 1600


def _known_keys(block: JSON, path: str, allowed: set[str]) -> None:
    for key, value in block.items():
        if key not in allowed and key != "cache_control" and value is not None:
            raise CannotCarry(f"{path}.{key}", "has no chat-completions counterpart")


def _text(block: JSON, path: str) -> str:
    _known_keys(block, path, {"type", "text"})
    text = block.get("text")
    if not isinstance(text, str):
        raise CannotCarry(f"{path}.text", "a text block needs its text")
    return text


def _image(block: JSON, path: str) -> JSON:
    _known_keys(block, path, {"type", "source"})
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = str(source.get("url"))
    else:
        raise CannotCarry(f"{path}.source.type", f"an image source of type {source.get('type')!r}")
    return {"type": "image_url", "image_url": {"url": url}}


def _document(block: JSON, path: str) -> JSON:
    _known_keys(block, path, {"type", "source", "title"})
    source = block.get("source") or {}
    if source.get("type") == "text":
        title = block.get("title")
        text = str(source.get("data", ""))
        return {"type": "text", "text": f"{title}\n\n{text}" if title else text}
    if source.get("type") == "base64" and source.get("media_type") == "application/pdf":
        data = f"data:application/pdf;base64,{source.get('data')}"
        name = str(block.get("title") or "document.pdf")
        return {"type": "file", "file": {"filename": name, "file_data": data}}
    raise CannotCarry(f"{path}.source", "only PDF (base64) and text documents can be carried")


def _tool_result(block: JSON, path: str) -> JSON:
    _known_keys(block, path, {"type", "tool_use_id", "content", "is_error"})
    if block.get("is_error"):
        raise CannotCarry(f"{path}.is_error", "a tool message cannot be marked as an error")
    content = block.get("content")
    if isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            if part.get("type") != "text":
                raise CannotCarry(f"{path}.content[{k}].type", "a tool message holds text only")
            texts.append(_text(part, f"{path}.content[{k}]"))
        content = "\n".join(texts)
    call = str(block.get("tool_use_id", ""))
    return {"role": "tool", "tool_call_id": call, "content": content or ""}


def _user(blocks: list[JSON], path: str) -> list[JSON]:
    """The chat messages of a user turn: its tool results (each a tool message, first, as
    they answer the assistant's calls), then one user message of its other parts."""
    parts: list[JSON] = []
    tools: list[JSON] = []
    for j, block in enumerate(blocks):
        where = f"{path}[{j}]"
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, where)})
        elif kind == "image":
            parts.append(_image(block, where))
        elif kind == "document":
            parts.append(_document(block, where))
        elif kind == "tool_result":
            tools.append(_tool_result(block, where))
        else:
            raise CannotCarry(f"{where}.type", f"a {kind!r} block has no chat counterpart")
    return [*tools, {"role": "user", "content": parts}] if parts else tools


def _assistant(blocks: list[JSON], path: str) -> JSON:
    texts: list[str] = []
    calls: list[JSON] = []
    for j, block in enumerate(blocks):
        where = f"{path}[{j}]"
        kind = block.get("type")
        if kind == "text":
            texts.append(_text(block, where))
        elif kind == "tool_use":
            _known_keys(block, where, {"type", "id", "name", "input"})
            arguments = json.dumps(block.get("input") or {}, separators=(",", ":"))
            function = {"name": str(block.get("name", "")), "arguments": arguments}
            calls.append({"id": str(block.get("id", "")), "type": "function", "function": function})
        elif kind not in _UNSIGNED_ELSEWHERE:
            raise CannotCarry(f"{where}.type", f"a {kind!r} block has no chat counterpart")
    message: JSON = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _messages(request: MessagesRequest) -> list[JSON]:
    out: list[JSON] = []
    if isinstance(request.system, str):
        out.append({"role": "system", "content": request.system})
    elif request.system:
        texts = [_text(b, f"system[{i}]") for i, b in enumerate(request.system)]
        out.append({"role": "system", "content": "\n\n".join(texts)})
    for i, turn in enumerate(request.messages):
        if isinstance(turn.content, str):
            out.append({"role": turn.role, "content": turn.content})
        elif turn.role == "assistant":
            out.append(_assistant(turn.content, f"messages[{i}].content"))
        else:
            out.extend(_user(turn.content, f"messages[{i}].content"))
    return out


def _tools(tools: list[JSON]) -> list[JSON]:
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") not in {None, "custom"}:
            raise CannotCarry(f"tools[{i}].type", f"a {tool.get('type')!r} tool runs at Anthropic")
        _known_keys(tool, f"tools[{i}]", {"type", "name", "description", "input_schema", "strict"})
        function: JSON = {
            "name": tool["name"],
            "description": str(tool.get("description") or ""),
            "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
        }
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: ToolChoice, out: JSON) -> None:
    if choice.type == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.name or ""}}
    else:
        out["tool_choice"] = "required" if choice.type == "any" else choice.type
    if choice.disable_parallel_tool_use:
        out["parallel_tool_calls"] = False


def _output_config(config: JSON, out: JSON) -> None:
    _known_keys(config, "output_config", {"effort", "format"})
    effort = config.get("effort")
    if effort is not None:
        if effort not in _EFFORTS:
            raise CannotCarry("output_config.effort", f"{effort!r} has no reasoning_effort")
        out["reasoning_effort"] = _EFFORTS[effort]
    form = config.get("format")
    if form is not None:
        if form.get("type") != "json_schema":
            raise CannotCarry("output_config.format.type", f"{form.get('type')!r}")
        schema = {"name": "output", "schema": form.get("schema") or {}, "strict": True}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}


def _options(request: MessagesRequest, out: JSON) -> None:
    """Sampling, stops, tools, the user and the rest, in chat-completions terms."""
    for ours, value in (
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("top_k", request.top_k),  # not OpenAI's, but vLLM's and others': the upstream decides
    ):
        if value is not None:
            out[ours] = value
    stops = request.stop_sequences
    if stops:
        if len(stops) > MAX_STOP_SEQUENCES:
            raise CannotCarry("stop_sequences", f"at most {MAX_STOP_SEQUENCES} can be carried")
        out["stop"] = stops
    if request.tools:
        out["tools"] = _tools(request.tools)
    if request.tool_choice is not None:
        _tool_choice(request.tool_choice, out)
    metadata = request.metadata or {}
    _known_keys(metadata, "metadata", {"user_id"})
    if metadata.get("user_id"):
        out["user"] = str(metadata["user_id"])
    if request.thinking is not None and request.thinking.get("type") != "disabled":
        raise CannotCarry("thinking", "extended thinking has no chat-completions counterpart")
    if request.service_tier is not None:
        if request.service_tier not in _SERVICE_TIERS:
            raise CannotCarry("service_tier", f"{request.service_tier!r}")
        out["service_tier"] = _SERVICE_TIERS[request.service_tier]
    if request.output_config is not None:
        _output_config(request.output_config, out)


def to_chat_request(request: MessagesRequest, fields: set[str], *, stream: bool) -> JSON:
    """The chat-completions body for a Messages request.

    Args:
        request: the decoded request.
        fields: the names of the body's top-level fields (those the contract does not name
            are refused too).
        stream: the caller asked for a stream.

    Raises:
        CannotCarry: naming the first field with no chat-completions counterpart.
    """
    for name in sorted(fields):
        if name not in _HANDLED:
            where = "has no chat-completions counterpart"
            raise CannotCarry(name, where if name in KNOWN_MESSAGES_FIELDS else "unknown field")
    out: JSON = {"model": request.model, "messages": _messages(request)}
    if request.max_tokens is not None:
        out["max_tokens"] = request.max_tokens
    _options(request, out)
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _size(value: Any) -> tuple[int, int]:
    """(characters of text, images) in a JSON value."""
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, list):
        sizes = [_size(v) for v in value]
        return sum(s for s, _ in sizes), sum(i for _, i in sizes)
    if isinstance(value, dict):
        if value.get("type") == "image":
            return 0, 1
        sizes = [_size(v) for v in value.values()]
        return sum(s for s, _ in sizes) + 4 * len(value), sum(i for _, i in sizes)
    return 1, 0


def estimate_tokens(request: MessagesRequest) -> int:
    """The prompt's tokens, estimated: four characters of its texts, tool inputs and
    schemas to a token, and :data:`IMAGE_TOKENS` an image."""
    chars, images = _size([request.system, [t.content for t in request.messages], request.tools])
    return max(1, (chars + 3) // 4 + images * IMAGE_TOKENS)
