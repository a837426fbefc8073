"""Cache keys: BLAKE3 over a canonical encoding of everything that can change the output.

Canonical means object keys sorted and numbers in one form (``1`` and ``1.0`` for a float
field decode to the same float). Fields that cannot change the output (``user``, ``metadata``,
``stream``, ``stream_options``, ``store`` ...: :data:`schemas.chat.UNKEYED_REQUEST_FIELDS`;
an Anthropic request's ``metadata`` and ``stream``) are left out, so a streamed and a whole
answer share an entry. The model is replaced by the configured model's canonical name, so
aliases share entries.

What the key covers: the decoded request, its top-level fields the contract does not name
(``extras``), and a ``salt`` saying which API the request speaks and the caller's headers
that reach the upstream (an ``anthropic-beta`` can change the answer). An Anthropic request
keeps its content blocks whole (``cache_control`` and thinking signatures included), so they
are keyed as sent. A chat request with a nested field the contract does not name (a message
or tool field a compatible server understands) is keyed over its whole body instead
(:func:`body_key`), so no field is left out of the key.

A message text (or content part string) of :data:`LONG_TEXT` characters or more is keyed by
its own BLAKE3 digest instead of its encoding: hashing a 4 MiB prompt's UTF-8 directly spares
re-encoding it as JSON (1.5 ms of the 2.4 the key took). Where that happened is part of the
key too, so a literal marker text in another request never keys the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from blake3 import blake3

from schemas import ChatRequest
from schemas.anthropic import MessagesRequest
from schemas.chat import UNKEYED_REQUEST_FIELDS
from schemas.codec import decode_json

__all__ = ["KeyBasis", "Keyed", "body_key", "cache_key", "context_key"]

#: A request the cache can key: chat completions or Anthropic Messages.
Keyed = ChatRequest | MessagesRequest


@dataclass(frozen=True, slots=True)
class KeyBasis:
    """What a request's key is made of besides the decoded request (kept with the request, so
    the semantic tier keys its context the same way).

    Attributes:
        extras: top-level fields the contract does not name, decoded.
        salt: the API and the caller's upstream headers, as bytes (empty for plain chat).
        whole_body: the request is keyed over its body (:func:`body_key`).
    """

    extras: dict[str, Any] = field(default_factory=dict)
    salt: bytes = b""
    whole_body: bool = False


_encoder = msgspec.json.Encoder(order="sorted")
#: Texts this long (characters) are keyed by their digest.
LONG_TEXT = 4096


def _text_digest(text: str) -> str:
    return blake3(text.encode("utf-8", "surrogatepass")).hexdigest()


def _digest_long(value: Any, path: list[object], where: list[list[object]]) -> Any:
    """``value`` with every string of LONG_TEXT characters or more replaced by its digest
    (recording its path in ``where``); ``value`` itself when none was."""
    if isinstance(value, str):
        if len(value) < LONG_TEXT:
            return value
        where.append(list(path))
        return _text_digest(value)
    if isinstance(value, list):
        items = [_digest_long(v, [*path, i], where) for i, v in enumerate(value)]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, dict):
        fields = {k: _digest_long(v, [*path, k], where) for k, v in value.items()}
        return value if all(fields[k] is v for k, v in value.items()) else fields
    return value


def _short_texts(request: Keyed) -> tuple[Keyed, list[list[object]]]:
    """The request with its long message texts replaced by digests, and where they were."""
    where: list[list[object]] = []
    if isinstance(request, MessagesRequest) and request.system is not None:
        system = _digest_long(request.system, ["system"], where)
        if system is not request.system:
            request = msgspec.structs.replace(request, system=system)
    messages: list[Any] = request.messages
    for i, message in enumerate(messages):
        content = message.content
        if content is None or (isinstance(content, str) and len(content) < LONG_TEXT):
            continue
        digested = _digest_long(content, [i], where)
        if digested is not content:
            if messages is request.messages:
                messages = list(messages)
            messages[i] = msgspec.structs.replace(message, content=digested)
    if messages is request.messages:
        return request, where
    return msgspec.structs.replace(request, messages=messages), where


_UNKEYED_CHAT = dict.fromkeys(UNKEYED_REQUEST_FIELDS)
_UNKEYED_MESSAGES = {"stream": None, "metadata": None}


def cache_key(
    request: Keyed,
    extras: dict[str, Any],
    model: str,
    namespace: str,
    *,
    salt: bytes = b"",
) -> str:
    """Return ``<namespace>:<hex digest>`` (BLAKE3, 32 bytes) for a request.

    Args:
        request: the decoded request.
        extras: provider passthrough fields (decoded by ``schemas.request_extras``), part
            of the key.
        model: the canonical model name the request resolved to.
        namespace: tenant and caller namespace; a namespace never reads another's entries.
        salt: the API and upstream headers (:class:`KeyBasis`), part of the key.
    """
    keyed, where = _short_texts(request)
    unkeyed = _UNKEYED_MESSAGES if isinstance(keyed, MessagesRequest) else _UNKEYED_CHAT
    keyed = msgspec.structs.replace(keyed, model=model, **unkeyed)
    digest = blake3(_encoder.encode(keyed))
    if where:
        digest.update(b"\x00long\x00")
        digest.update(_encoder.encode(where))
    if extras:
        digest.update(b"\x00")
        digest.update(_encoder.encode(extras))
    if salt:
        digest.update(b"\x00salt\x00")
        digest.update(salt)
    return f"{namespace}:{digest.hexdigest()}"


_any_decoder: msgspec.json.Decoder[dict[str, Any]] = msgspec.json.Decoder(dict[str, Any])


def body_key(
    body: bytes,
    model: str,
    namespace: str,
    *,
    salt: bytes = b"",
    unkeyed: tuple[str, ...] = (),
) -> str:
    """The key of a chat request over its whole body (every field at every depth, with the
    same fields left out, with ``unkeyed`` too, and the same long-text digests as
    :func:`cache_key`); for the rare chat request with a nested field the contract does not
    name, and for every Responses request.

    Raises:
        msgspec.ValidationError: a value JSON allows but Python cannot hold (``1e400``).
    """
    fields = decode_json(_any_decoder, body)
    for name in (*UNKEYED_REQUEST_FIELDS, *unkeyed):
        fields.pop(name, None)
    fields["model"] = model
    where: list[list[object]] = []
    fields = _digest_long(fields, [], where)
    digest = blake3(b"\x00body\x00")
    digest.update(_encoder.encode(fields))
    if where:
        digest.update(b"\x00long\x00")
        digest.update(_encoder.encode(where))
    if salt:
        digest.update(b"\x00salt\x00")
        digest.update(salt)
    return f"{namespace}:{digest.hexdigest()}"


def context_key(
    request: Keyed,
    extras: dict[str, Any],
    model: str,
    namespace: str,
    *,
    salt: bytes = b"",
) -> tuple[str, str] | None:
    """The semantic tier's context: the cache key with the last user turn's text removed,
    and that text; ``None`` when the last message is not a user's plain text.

    Two requests with the same context differ only in the wording of the last user turn
    (same namespace, model, system prompt, earlier turns, tools and parameters).
    """
    last = request.messages[-1]
    if last.role != "user" or not isinstance(last.content, str) or not last.content.strip():
        return None
    blank = msgspec.structs.replace(last, content="")
    without = msgspec.structs.replace(request, messages=[*request.messages[:-1], blank])
    return cache_key(without, extras, model, namespace, salt=salt), last.content
