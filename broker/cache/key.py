"""Cache keys: BLAKE3 over a canonical encoding of everything that can change the output.

Canonical means object keys sorted and numbers in one form (``1`` and ``1.0`` for a float
field decode to the same float). Fields that cannot change the output (``user``, ``metadata``,
``stream``, ``stream_options``) are left out, so a streamed and a whole answer share an entry.
The model is replaced by the configured model's canonical name, so aliases share entries.

A message text (or content part string) of :data:`LONG_TEXT` characters or more is keyed by
its own BLAKE3 digest instead of its encoding: hashing a 4 MiB prompt's UTF-8 directly spares
re-encoding it as JSON (1.5 ms of the 2.4 the key took). Where that happened is part of the
key too, so a literal marker text in another request never keys the same.
"""

from __future__ import annotations

from typing import Any

import msgspec
from blake3 import blake3

from schemas import ChatRequest

__all__ = ["cache_key", "context_key"]

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


def _short_texts(request: ChatRequest) -> tuple[ChatRequest, list[list[object]]]:
    """The request with its long message texts replaced by digests, and where they were."""
    where: list[list[object]] = []
    messages = request.messages
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


def cache_key(
    request: ChatRequest,
    extras: dict[str, Any],
    model: str,
    namespace: str,
) -> str:
    """Return ``<namespace>:<hex digest>`` (BLAKE3, 32 bytes) for a request.

    Args:
        request: the decoded request.
        extras: provider passthrough fields (decoded by ``schemas.request_extras``), part
            of the key.
        model: the canonical model name the request resolved to.
        namespace: tenant and caller namespace; a namespace never reads another's entries.
    """
    keyed, where = _short_texts(request)
    keyed = msgspec.structs.replace(
        keyed, model=model, user=None, metadata=None, stream=None, stream_options=None
    )
    digest = blake3(_encoder.encode(keyed))
    if where:
        digest.update(b"\x00long\x00")
        digest.update(_encoder.encode(where))
    if extras:
        digest.update(b"\x00")
        digest.update(_encoder.encode(extras))
    return f"{namespace}:{digest.hexdigest()}"


def context_key(
    request: ChatRequest,
    extras: dict[str, Any],
    model: str,
    namespace: str,
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
    return cache_key(without, extras, model, namespace), last.content
