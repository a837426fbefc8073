"""Decoding of request bodies, done once at the edge of each service.

Raises msgspec's ``DecodeError`` / ``ValidationError``; callers map them to error envelopes.
JSON nested too deeply for msgspec's recursion guard is a ``DecodeError`` too (msgspec itself
raises ``RecursionError``, which no caller expects from a decode): :func:`decode_json` is the
one place that maps it, and every decode of untrusted bytes goes through it.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from schemas.chat import ChatRequest

__all__ = [
    "KNOWN_REQUEST_FIELDS",
    "TOO_DEEP",
    "decode_chat_request",
    "decode_closed_chat_request",
    "decode_json",
    "request_extras",
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


class _Closed(ChatRequest, forbid_unknown_fields=True):
    """A request with no top-level field the contract does not name (the common case)."""


_closed_decoder = msgspec.json.Decoder(_Closed)


def decode_closed_chat_request(body: bytes) -> tuple[ChatRequest, bool]:
    """Decode and validate a chat-completions body, and tell whether it has no top-level
    field the contract does not name (then :func:`request_extras` is ``{}`` without a second
    pass over the body: a 4 MiB prompt parsed twice cost 1.7 ms of the miss path).

    Raises:
        msgspec.DecodeError, msgspec.ValidationError: as :func:`decode_chat_request`.
    """
    try:
        return decode_json(_closed_decoder, body), True
    except msgspec.ValidationError:  # an unknown field, or invalid: the open decoder says
        return decode_chat_request(body), False


def request_extras(body: bytes) -> dict[str, Any]:
    """Return the top-level fields the contract does not name (provider passthrough fields),
    decoded, for the cache key.

    Raises:
        msgspec.ValidationError: a value JSON allows but Python cannot hold (``1e400``, an
            integer of thousands of digits); the message names the field.
    """
    fields = decode_json(_raw_fields_decoder, body)
    if len(fields) <= 2:  # model and messages only: nothing extra (the common case)
        return {}
    extras: dict[str, Any] = {}
    for name, raw in fields.items():
        if name in KNOWN_REQUEST_FIELDS:
            continue
        try:
            extras[name] = decode_json(_any_decoder, raw)
        except msgspec.ValidationError as exc:
            raise msgspec.ValidationError(f"{exc} - at `$.{name}`") from None
    return extras
