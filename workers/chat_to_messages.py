"""A chat-completions request as an Anthropic Messages request: the way in when a chat
caller's model is served by Anthropic. Pure functions: no I/O.

Everything with a Messages counterpart is carried: system and developer messages (as
``system``), texts, images, PDFs, tool calls and results, tools (``strict`` too) and tool
choice, stops, ``response_format`` with a JSON schema (``output_config.format``),
``reasoning_effort`` (``output_config.effort``), the user (``metadata.user_id``). What has
none (``n`` above 1, ``logprobs``, ``seed``, penalties, audio, predictions, a message's
``name``, a field the contract does not name ...) is refused with :class:`CannotCarry`
naming the field, never dropped in silence (``top_k``, unknown to chat completions but
Anthropic's own, is carried). Fields that change nothing in the answer
(``metadata``, ``store``, ``prompt_cache_key``, an image's ``detail``, an assistant message's
``annotations``) are left behind.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgspec

from schemas import ChatRequest, Message
from workers.chat_parts import data_url, image_url
from workers.errors import CannotCarry

__all__ = ["DEFAULT_MAX_TOKENS", "to_anthropic_request"]

JSON = dict[str, Any]

#: Anthropic requires ``max_tokens``; used when the caller sets neither max_tokens nor
#: max_completion_tokens.
DEFAULT_MAX_TOKENS = 4096
#: OpenAI ``service_tier`` -> Anthropic's.
_SERVICE_TIERS = {"auto": "auto", "default": "standard_only"}
#: OpenAI ``reasoning_effort`` -> Anthropic ``output_config.effort``.
_EFFORTS = {"low": "low", "medium": "medium", "high": "high"}
#: Request fields no Messages request can carry, when set.
_NOT_CARRIED = ("audio", "prediction", "web_search_options", "verbosity", "logit_bias")
_top_k = msgspec.json.Decoder(int)


def _image(part: JSON, path: str) -> JSON:
    url = image_url(part)
    inline = data_url(url)
    if inline is not None:
        media_type, data = inline
        source = {"type": "base64", "media_type": media_type, "data": data}
        return {"type": "image", "source": source}
    if not url:
        raise CannotCarry(f"{path}.image_url.url", "an image needs its URL")
    return {"type": "image", "source": {"type": "url", "url": url}}


def _file(part: JSON, path: str) -> JSON:
    data = str((part.get("file") or {}).get("file_data") or "")
    prefix = "data:application/pdf;base64,"
    if not data.startswith(prefix):
        raise CannotCarry(f"{path}.file", "only a PDF given as file_data can be carried")
    source = {"type": "base64", "media_type": "application/pdf", "data": data[len(prefix) :]}
    return {"type": "document", "source": source}


def _blocks(content: str | list[JSON] | None, path: str) -> list[JSON]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for k, part in enumerate(content):
        where = f"{path}[{k}]"
        kind = part.get("type")
        if kind in {"text", "refusal"}:  # a refusal sent back is what the model said
            blocks.append({"type": "text", "text": str(part.get(kind, ""))})
        elif kind == "image_url":
            blocks.append(_image(part, where))
        elif kind == "file":
            blocks.append(_file(part, where))
        else:
            raise CannotCarry(f"{where}.type", f"a {kind!r} part has no Messages counterpart")
    return blocks


def _text(content: str | list[JSON] | None, path: str) -> str:
    return "\n".join(b["text"] for b in _blocks(content, path) if b["type"] == "text")


def _tool_calls(message: Message, path: str) -> list[JSON]:
    blocks = []
    for k, call in enumerate(message.tool_calls or ()):
        if call.type != "function":
            raise CannotCarry(f"{path}.tool_calls[{k}].type", f"{call.type!r}")
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError:
            raise CannotCarry(
                f"{path}.tool_calls[{k}].function.arguments", "not JSON: Anthropic takes an object"
            ) from None
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}
        )
    return blocks


def _message_blocks(message: Message, path: str) -> tuple[str, list[JSON]]:
    """The Anthropic role and content blocks of one OpenAI message."""
    for name in ("name", "audio", "function_call"):
        if getattr(message, name) is not None:
            raise CannotCarry(f"{path}.{name}", "has no Messages counterpart")
    if message.role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": message.tool_call_id or "",
            "content": _text(message.content, f"{path}.content"),
        }
        return "user", [result]
    if message.role == "assistant":
        blocks = _blocks(message.content, f"{path}.content")
        if message.refusal:
            blocks.append({"type": "text", "text": message.refusal})
        return "assistant", blocks + _tool_calls(message, path)
    if message.role == "function":
        raise CannotCarry(f"{path}.role", "function messages have no Messages counterpart")
    return "user", _blocks(message.content, f"{path}.content")


def _tool_choice(choice: str | JSON | None, parallel: bool | None) -> JSON | None:
    if choice is None:
        result: JSON | None = None if parallel is not False else {"type": "auto"}
    elif isinstance(choice, str):
        result = {"type": {"required": "any"}.get(choice, choice)}
    elif choice.get("type") == "function":
        result = {"type": "tool", "name": str((choice.get("function") or {}).get("name", ""))}
    else:
        raise CannotCarry("tool_choice.type", f"{choice.get('type')!r}")
    if result is not None and parallel is False and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result


def _tools(request: ChatRequest) -> list[JSON]:
    tools = []
    for i, tool in enumerate(request.tools or ()):
        function = tool.function
        if tool.type != "function" or function is None:
            raise CannotCarry(f"tools[{i}].type", f"a {tool.type!r} tool")
        entry: JSON = {
            "name": function.name,
            "description": function.description or "",
            "input_schema": function.parameters or {"type": "object", "properties": {}},
        }
        if function.strict is not None:
            entry["strict"] = function.strict
        tools.append(entry)
    return tools


def _extras(extras: Mapping[str, msgspec.Raw], body: JSON) -> None:
    """The fields the chat contract does not name: ``top_k`` (vLLM's and others', and
    Anthropic's own) is carried; any other is refused."""
    for name in sorted(extras):
        if name != "top_k":
            raise CannotCarry(name, "unknown field")
        try:
            body["top_k"] = _top_k.decode(extras[name])
        except msgspec.MsgspecError:
            raise CannotCarry("top_k", "must be an integer") from None


def _refuse_uncarried(request: ChatRequest) -> None:
    """Refuse the first field set that a Messages request cannot carry."""
    if request.n is not None and request.n > 1:
        raise CannotCarry("n", "Anthropic answers with one choice")
    if request.temperature is not None and request.temperature > 1:
        raise CannotCarry("temperature", "Anthropic's range is 0 to 1")
    if request.logprobs or request.top_logprobs is not None:
        raise CannotCarry("logprobs" if request.logprobs else "top_logprobs", "not returned")
    if request.seed is not None:
        raise CannotCarry("seed", "Anthropic has no seed")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(request, name):
            raise CannotCarry(name, "Anthropic has no penalties")
    for name in _NOT_CARRIED:
        if getattr(request, name):
            raise CannotCarry(name, "has no Messages counterpart")
    if request.modalities and request.modalities != ["text"]:
        raise CannotCarry("modalities", "Anthropic answers in text")


def _output_config(request: ChatRequest, body: JSON) -> None:
    config: JSON = {}
    effort = request.reasoning_effort
    if effort is not None:
        if effort not in _EFFORTS:
            raise CannotCarry("reasoning_effort", f"{effort!r} has no Anthropic effort")
        config["effort"] = _EFFORTS[effort]
    form = request.response_format
    if form is not None and form.get("type") != "text":
        if form.get("type") != "json_schema":
            raise CannotCarry("response_format.type", f"{form.get('type')!r}: give a schema")
        schema = (form.get("json_schema") or {}).get("schema") or {}
        config["format"] = {"type": "json_schema", "schema": schema}
    if config:
        body["output_config"] = config


def _options(request: ChatRequest, body: JSON) -> None:
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if request.tools:
        body["tools"] = _tools(request)
    tool_choice = _tool_choice(request.tool_choice, request.parallel_tool_calls)
    if tool_choice is not None and request.tools:
        body["tool_choice"] = tool_choice
    user = request.user or request.safety_identifier
    if user:
        body["metadata"] = {"user_id": user}
    if request.service_tier is not None:
        if request.service_tier not in _SERVICE_TIERS:
            raise CannotCarry("service_tier", f"{request.service_tier!r}")
        body["service_tier"] = _SERVICE_TIERS[request.service_tier]
    _output_config(request, body)


def to_anthropic_request(
    request: ChatRequest,
    model: str,
    *,
    stream: bool,
    extras: Mapping[str, msgspec.Raw] | None = None,
) -> JSON:
    """The Messages API body for an OpenAI-shaped request.

    System and developer messages become ``system``; consecutive same-role messages merge
    (tool results join the user turn that follows the assistant's tool calls).

    Args:
        request: the decoded request.
        model: the upstream model.
        stream: ask for a stream.
        extras: the body's top-level fields the contract does not name, raw.

    Raises:
        CannotCarry: naming the first field with no Messages counterpart.
    """
    _refuse_uncarried(request)
    system: list[str] = []
    messages: list[JSON] = []
    for i, message in enumerate(request.messages):
        if message.role in {"system", "developer"}:
            system.append(_text(message.content, f"messages[{i}].content"))
            continue
        role, blocks = _message_blocks(message, f"messages[{i}]")
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
    _options(request, body)
    _extras(extras or {}, body)
    if stream:
        body["stream"] = True
    return body
