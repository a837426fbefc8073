"""Decoding of request bodies, done once at the edge of each service.

Raises msgspec's ``DecodeError`` / ``ValidationError``; callers map them to error envelopes.
"""

from __future__ import annotations

import msgspec

from schemas.chat import ChatRequest

__all__ = ["KNOWN_REQUEST_FIELDS", "decode_chat_request", "request_extras"]

KNOWN_REQUEST_FIELDS = frozenset(ChatRequest.__struct_fields__)

_request_decoder = msgspec.json.Decoder(ChatRequest)
_raw_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])


def decode_chat_request(body: bytes) -> ChatRequest:
    """Decode and validate a chat-completions body.

    Raises:
        msgspec.DecodeError: the body is not JSON.
        msgspec.ValidationError: the JSON does not match the contract (the message names the path).
    """
    return _request_decoder.decode(body)


def request_extras(body: bytes) -> dict[str, msgspec.Raw]:
    """Return the top-level fields the contract does not name (provider passthrough fields).

    The values stay raw JSON: they are forwarded untouched and only parsed to build cache keys.
    """
    fields = _raw_fields_decoder.decode(body)
    if len(fields) <= 2:  # model and messages only: nothing extra (the common case)
        return {}
    return {k: v for k, v in fields.items() if k not in KNOWN_REQUEST_FIELDS}
