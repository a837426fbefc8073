"""Anthropic Messages API request contract (``POST /v1/messages``, ``llm.messages``, and
``POST /v1/messages/count_tokens``, ``llm.messages.count_tokens``).

The request travels to the upstream as its caller wrote it, so this contract checks what the
broker reads (model, token cap, turns, tools, tool choice) with Anthropic's own limits and
keeps everything else whole: content blocks, system blocks and tools are JSON objects of any
type (text, image, document, tool_use, tool_result, thinking with its signature, server
tools, ``cache_control`` on any of them), and every top-level field, named here or not, is
kept by the body that is forwarded. A malformed request is refused with the path of the field
at fault (``tool_choice``, ``messages[0].content[1]`` ...).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from schemas.chat import MAX_OUTPUT_TOKENS
from schemas.codec import decode_json

__all__ = [
    "KNOWN_MESSAGES_FIELDS",
    "MAX_STOP_SEQUENCES",
    "MessageParam",
    "MessagesRequest",
    "ToolChoice",
    "decode_messages_request",
]

JSONObject = dict[str, Any]
#: Stop sequences a request may carry (Anthropic documents no bound; this one only refuses
#: the absurd, a caller's mistake or a probe).
MAX_STOP_SEQUENCES = 256


class MessageParam(msgspec.Struct, omit_defaults=True):
    """One turn: ``user`` or ``assistant``, a string or a list of content blocks (each a JSON
    object with a ``type``, kept whole)."""

    role: Literal["user", "assistant"]
    content: str | list[JSONObject]


class ToolChoice(msgspec.Struct, omit_defaults=True):
    """``{"type": "auto" | "any" | "none"}`` or ``{"type": "tool", "name": ...}``."""

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class MessagesRequest(msgspec.Struct, omit_defaults=True):
    """``POST /v1/messages`` body, the payload of ``llm.messages`` (and, without
    ``max_tokens``, of ``llm.messages.count_tokens``).

    The fields Anthropic documents are named so that a request made of them alone is read in
    one pass; the open-ended ones stay plain JSON. Fields it does not name are kept too (the
    forwarded body is the caller's; the cache key reads them separately).
    """

    model: Annotated[str, msgspec.Meta(min_length=1)]
    messages: Annotated[list[MessageParam], msgspec.Meta(min_length=1)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_OUTPUT_TOKENS)] | None = None
    system: str | list[JSONObject] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, msgspec.Meta(ge=0)] | None = None
    stop_sequences: Annotated[list[str], msgspec.Meta(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: bool | None = None
    tools: list[JSONObject] | None = None
    tool_choice: ToolChoice | None = None
    metadata: JSONObject | None = None
    thinking: JSONObject | None = None
    service_tier: str | None = None
    cache_control: JSONObject | None = None
    container: Any = None
    context_management: JSONObject | None = None
    mcp_servers: list[JSONObject] | None = None
    output_config: JSONObject | None = None
    output_format: JSONObject | None = None
    inference_geo: str | None = None
    speed: str | None = None


KNOWN_MESSAGES_FIELDS = frozenset(MessagesRequest.__struct_fields__)


class _Closed(MessagesRequest, forbid_unknown_fields=True):
    """A request with no top-level field the contract does not name (the common case)."""


_decoder = msgspec.json.Decoder(MessagesRequest)
_closed_decoder = msgspec.json.Decoder(_Closed)


def _at(path: str, problem: str) -> msgspec.ValidationError:
    return msgspec.ValidationError(f"{problem} - at `$.{path}`")


def _check_blocks(blocks: list[JSONObject], path: str) -> None:
    for j, block in enumerate(blocks):
        if not isinstance(block.get("type"), str):
            raise _at(f"{path}[{j}]", "Object missing required field `type`")


def _check(request: MessagesRequest, *, count: bool) -> None:
    """What the typed decode cannot say: a block's ``type``, a tool's ``name``, the name of a
    ``tool`` choice, and ``max_tokens`` (required, except to count tokens)."""
    if request.max_tokens is None and not count:
        raise _at("", "Object missing required field `max_tokens`")
    for i, turn in enumerate(request.messages):
        if not isinstance(turn.content, str):
            _check_blocks(turn.content, f"messages[{i}].content")
    if isinstance(request.system, list):
        _check_blocks(request.system, "system")
    for i, tool in enumerate(request.tools or ()):
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _at(f"tools[{i}]", "Object missing required field `name`")
    choice = request.tool_choice
    if choice is not None and choice.type == "tool" and not choice.name:
        raise _at("tool_choice.name", 'tool_choice of type "tool" needs a `name`')


def decode_messages_request(body: bytes, *, count: bool = False) -> tuple[MessagesRequest, bool]:
    """Decode and validate a Messages API body, and tell whether it has no top-level field
    the contract does not name (then it has no extras to key: see
    :func:`schemas.codec.request_extras`).

    Args:
        body: the request as its caller sent it.
        count: a token-counting request (``max_tokens`` is not required).

    Raises:
        msgspec.DecodeError: not JSON (or nested too deeply).
        msgspec.ValidationError: breaks the contract; the message names the path.
    """
    try:
        request: MessagesRequest = decode_json(_closed_decoder, body)
        closed = True
    except msgspec.ValidationError:  # an unknown field, or invalid: the open decoder says
        request, closed = decode_json(_decoder, body), False
    _check(request, count=count)
    return request, closed
