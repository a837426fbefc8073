"""Decoding of request bodies, done once at the edge of each service.

Raises msgspec's ``DecodeError`` / ``ValidationError``; callers map them to error envelopes.
JSON nested too deeply for msgspec's recursion guard is a ``DecodeError`` too (msgspec itself
raises ``RecursionError``, which no caller expects from a decode): :func:`decode_json` is the
one place that maps it, and every decode of untrusted bytes goes through it.
"""

from __future__ import annotations

import enum
from collections.abc import Set
from typing import Annotated, Any, TypeVar

import msgspec

from schemas.chat import (
    ChatCompletionChunk,
    ChatRequest,
    ChunkChoice,
    Delta,
    FunctionCall,
    Message,
    StreamOptions,
    Tool,
    ToolCall,
    ToolFunction,
)

__all__ = [
    "KNOWN_REQUEST_FIELDS",
    "TOO_DEEP",
    "Closure",
    "decode_chat_request",
    "decode_chunk",
    "decode_closed_chat_request",
    "decode_json",
    "request_extras",
    "unknown_nested_field",
]

T = TypeVar("T")

KNOWN_REQUEST_FIELDS = frozenset(ChatRequest.__struct_fields__)
#: The message of a body nested deeper than the decoder's recursion guard allows.
TOO_DEEP = "JSON is nested too deeply"

_request_decoder = msgspec.json.Decoder(ChatRequest)
_raw_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_any_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


def decode_json(decoder: msgspec.json.Decoder[T], body: bytes | str) -> T:
    """``decoder.decode(body)``, with excessive nesting reported as a ``DecodeError``.

    Raises:
        msgspec.DecodeError: not JSON, or nested too deeply.
        msgspec.ValidationError: the JSON does not match the decoder's type.
    """
    try:
        return decoder.decode(body)
    except RecursionError:
        raise msgspec.DecodeError(TOO_DEEP) from None


def decode_chat_request(body: bytes) -> ChatRequest:
    """Decode and validate a chat-completions body.

    Raises:
        msgspec.DecodeError: the body is not JSON (or is nested too deeply).
        msgspec.ValidationError: the JSON does not match the contract (the message names the path).
    """
    return decode_json(_request_decoder, body)


class Closure(enum.Enum):
    """How much of a request body its decoded struct holds."""

    #: Everything: no field, at any depth, that the contract does not name.
    CLOSED = "closed"
    #: Everything below the top level; top-level fields it does not name are the extras
    #: (:func:`request_extras`).
    TOP_OPEN = "top_open"
    #: Some nested object (a message, a tool, a tool call) has a field the contract does not
    #: name: only the body itself holds the whole request.
    OPEN = "open"


# The same structs with no field they do not name, at every depth.
class _ClosedFunctionCall(FunctionCall, forbid_unknown_fields=True):
    pass


# The closed structs narrow their fields' types to the closed ones: they are only decoded
# into and read as their bases, never assigned to.
class _ClosedToolCall(ToolCall, forbid_unknown_fields=True):
    function: _ClosedFunctionCall


class _ClosedMessage(Message, forbid_unknown_fields=True):
    tool_calls: list[_ClosedToolCall] | None = None  # type: ignore[assignment]


class _ClosedToolFunction(ToolFunction, forbid_unknown_fields=True):
    pass


class _ClosedTool(Tool, forbid_unknown_fields=True):
    function: _ClosedToolFunction | None = None


class _ClosedStreamOptions(StreamOptions, forbid_unknown_fields=True):
    pass


class _NestedClosed(ChatRequest):
    """A request whose nested objects hold no field the contract does not name."""

    messages: Annotated[list[_ClosedMessage], msgspec.Meta(min_length=1)]  # type: ignore[assignment]
    tools: list[_ClosedTool] | None = None  # type: ignore[assignment]
    stream_options: _ClosedStreamOptions | None = None


class _Closed(_NestedClosed, forbid_unknown_fields=True):
    """A request with no field the contract does not name (the common case)."""


_closed_decoder = msgspec.json.Decoder(_Closed)
_nested_closed_decoder = msgspec.json.Decoder(_NestedClosed)


def decode_closed_chat_request(body: bytes) -> tuple[ChatRequest, Closure]:
    """Decode and validate a chat-completions body, and tell how much of it the struct holds
    (:class:`Closure`). The common request is read once: for a :attr:`Closure.CLOSED` one,
    :func:`request_extras` is ``{}`` without another pass over the body (a 4 MiB prompt
    parsed twice cost 1.7 ms of the miss path); one with unknown top-level fields costs a
    second pass, and one with unknown nested fields a third.

    Raises:
        msgspec.DecodeError, msgspec.ValidationError: as :func:`decode_chat_request`.
    """
    try:
        return decode_json(_closed_decoder, body), Closure.CLOSED
    except msgspec.ValidationError:  # an unknown field, or invalid: the open decoders say
        pass
    try:
        return decode_json(_nested_closed_decoder, body), Closure.TOP_OPEN
    except msgspec.ValidationError:
        return decode_chat_request(body), Closure.OPEN


def unknown_nested_field(body: bytes) -> str | None:
    """The first nested field of a chat body the contract does not name, as msgspec
    describes it (``Object contains unknown field `x` - at `$.messages[0]```), or ``None``.

    Raises:
        msgspec.DecodeError: the body is not JSON.
    """
    try:
        decode_json(_nested_closed_decoder, body)
    except msgspec.ValidationError as exc:
        return str(exc) if "unknown field" in str(exc) else None
    return None


def request_extras(body: bytes, known: Set[str] = KNOWN_REQUEST_FIELDS) -> dict[str, Any]:
    """Return the top-level fields the contract does not name (provider passthrough fields),
    decoded, for the cache key.

    Args:
        body: the request.
        known: the fields its contract names (chat completions' by default).

    Raises:
        msgspec.ValidationError: a value JSON allows but Python cannot hold (``1e400``, an
            integer of thousands of digits); the message names the field.
    """
    fields = decode_json(_raw_fields_decoder, body)
    if len(fields) <= 2:  # model and messages only: nothing extra (the common case)
        return {}
    extras: dict[str, Any] = {}
    for name, raw in fields.items():
        if name in known:
            continue
        try:
            extras[name] = decode_json(_any_decoder, raw)
        except msgspec.ValidationError as exc:
            raise msgspec.ValidationError(f"{exc} - at `$.{name}`") from None
    return extras


class _ClosedDelta(Delta, forbid_unknown_fields=True):
    pass


class _DeltaClosedChoice(ChunkChoice):
    delta: _ClosedDelta


class _DeltaClosedChunk(ChatCompletionChunk):
    """Read only (never encoded): a chunk whose deltas hold no field the contract does not
    name (the chunk and its choices may hold any: ``obfuscation``, ``x_groq``, vLLM's
    ``stop_reason`` are not part of the answer)."""

    choices: list[_DeltaClosedChoice]  # type: ignore[assignment]


_chunk_decoder = msgspec.json.Decoder(ChatCompletionChunk)
_closed_chunk_decoder = msgspec.json.Decoder(_DeltaClosedChunk)


def decode_chunk(data: bytes | str) -> tuple[ChatCompletionChunk, bool]:
    """Decode a ``chat.completion.chunk``, and tell whether its deltas hold only what the
    contract names (else the answer the chunks add up to would miss something: a stream with
    such a chunk is relayed whole but cannot be rebuilt from its parts).

    Raises:
        msgspec.DecodeError, msgspec.ValidationError: not a chunk.
    """
    try:
        return decode_json(_closed_chunk_decoder, data), True
    except msgspec.ValidationError:
        return decode_json(_chunk_decoder, data), False
