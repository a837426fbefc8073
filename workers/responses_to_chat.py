"""A Responses request as a chat-completions request, for upstreams that speak only chat.

What is carried: ``instructions`` (a system message), input items (messages with text and
image parts, function calls and their outputs), the earlier turns a stored conversation adds
(:data:`~schemas.responses.HISTORY_FIELD`), function tools and ``tool_choice``, ``text``
(its format as ``response_format``, its verbosity), ``max_output_tokens``, sampling,
``reasoning.effort`` and the fields chat has too. What chat has no counterpart for (built-in
tools such as ``web_search`` or ``file_search``, reasoning items and their encrypted content,
file inputs, ``include``, prompt templates, ``truncation: auto`` ...) raises
:class:`~workers.errors.CannotCarry` naming it: never dropped in silence.
"""

from __future__ import annotations

from typing import Any

import msgspec

from schemas.responses import HISTORY_FIELD, History
from workers.errors import CannotCarry

__all__ = ["to_chat_request"]

JSON = dict[str, Any]

#: Fields read elsewhere (the broker, the store) or carried below; none is refused.
_HANDLED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "stream",
        "background",
        "store",
        "previous_response_id",
        "metadata",
        "temperature",
        "top_p",
        "max_output_tokens",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "user",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
        "top_logprobs",
        "truncation",
        "include",
        HISTORY_FIELD,
    }
)
#: Fields passed on to chat under the same name.
_SAME = (
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
)
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def to_chat_request(body: JSON, *, stream: bool) -> JSON:
    """The chat-completions body for a Responses body (its top-level fields, decoded).

    Raises:
        CannotCarry: a field chat completions has no counterpart for.
    """
    for name in body:
        if name not in _HANDLED:
            raise CannotCarry(name, "the field has no chat-completions counterpart")
    chat: JSON = {"model": body["model"], "messages": _messages(body)}
    for name in _SAME:
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    if body.get("top_logprobs"):
        chat.update(logprobs=True, top_logprobs=body["top_logprobs"])
    if body.get("tools"):
        chat["tools"] = [_tool(tool, i) for i, tool in enumerate(body["tools"])]
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    _text(body.get("text"), chat)
    _reasoning(body, chat)
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _reasoning(body: JSON, chat: JSON) -> None:
    if body.get("include"):
        raise CannotCarry("include", f"{body['include']!r} cannot be returned by chat completions")
    if body.get("truncation") not in (None, "disabled"):
        raise CannotCarry("truncation", "only `disabled` can be carried")
    reasoning = body.get("reasoning")
    if not reasoning:
        return
    for name, value in reasoning.items():
        if name == "effort":
            if value is not None:
                chat["reasoning_effort"] = value
        elif value is not None:
            raise CannotCarry(f"reasoning.{name}", "chat completions has no counterpart")


def _text(text: JSON | None, chat: JSON) -> None:
    if not text:
        return
    fmt = text.get("format") or {"type": "text"}
    kind = fmt.get("type")
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif kind != "text":
        raise CannotCarry("text.format.type", f"`{kind}` cannot be carried")
    if text.get("verbosity") is not None:
        chat["verbosity"] = text["verbosity"]


def _tool(tool: JSON, i: int) -> JSON:
    kind = tool.get("type")
    if kind != "function":
        why = f"the built-in tool `{kind}` runs only on OpenAI's Responses API"
        raise CannotCarry(f"tools[{i}].type", why)
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def _tool_choice(choice: str | JSON) -> str | JSON:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise CannotCarry("tool_choice.type", f"`{choice.get('type')}` cannot be carried")


def _messages(body: JSON) -> list[JSON]:
    messages: list[JSON] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    history = body.get(HISTORY_FIELD)
    earlier = msgspec.convert(history, History).items if history else []
    given = body.get("input")
    items = [{"role": "user", "content": given}] if isinstance(given, str) else given or []
    for where, group in (("history", earlier), ("input", items)):
        for i, item in enumerate(group):
            _item(item, f"{where}[{i}]", messages)
    if not messages:
        raise CannotCarry("input", "a request needs some input")
    return messages


def _item(item: JSON, where: str, messages: list[JSON]) -> None:
    """Add one input item to ``messages``."""
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = _ROLES.get(str(item.get("role")))
        if role is None:
            raise CannotCarry(f"{where}.role", f"`{item.get('role')}` cannot be carried")
        messages.append({"role": role, "content": _content(item.get("content"), where, role)})
    elif kind == "function_call":
        call = {
            "id": item.get("call_id"),
            "type": "function",
            "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        content = output if isinstance(output, str) else _content(output, where, "tool")
        messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": content})
    else:
        raise CannotCarry(f"{where}.type", f"the `{kind}` item cannot be carried")


def _content(content: Any, where: str, role: str) -> str | list[JSON]:
    if isinstance(content, str):
        return content
    parts: list[JSON] = []
    for j, part in enumerate(content or ()):
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal", "")})
        elif kind == "input_image" and part.get("image_url") and role == "user":
            image = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise CannotCarry(f"{where}.content[{j}].type", f"`{kind}` cannot be carried")
    if role != "user":  # chat takes only texts in other roles' parts: one string is safest
        return "".join(str(p["text"]) for p in parts)
    return parts
