"""Cache keys: SHA-256 over a canonical encoding of everything that can change the output.

Canonical means object keys sorted and numbers in one form (``1`` and ``1.0`` for a float
field decode to the same float). Fields that cannot change the output (``user``, ``metadata``,
``stream``, ``stream_options``) are left out, so a streamed and a whole answer share an entry.
The model is replaced by the configured model's canonical name, so aliases share entries.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from schemas import ChatRequest

__all__ = ["cache_key", "context_key"]

_encoder = msgspec.json.Encoder(order="sorted")


def cache_key(
    request: ChatRequest,
    extras: dict[str, Any],
    model: str,
    namespace: str,
) -> str:
    """Return ``<namespace>:<sha256 hex>`` for a request.

    Args:
        request: the decoded request.
        extras: provider passthrough fields (decoded by ``schemas.request_extras``), part
            of the key.
        model: the canonical model name the request resolved to.
        namespace: tenant and caller namespace; a namespace never reads another's entries.
    """
    keyed = msgspec.structs.replace(
        request, model=model, user=None, metadata=None, stream=None, stream_options=None
    )
    digest = hashlib.sha256(_encoder.encode(keyed))
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
