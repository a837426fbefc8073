"""Bare-ASGI helpers shared by the bridge's routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from schemas import headers

__all__ = ["Receive", "nats_headers", "read_body"]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

#: Request headers forwarded to NATS (lower-case HTTP name -> NATS name).
_FORWARD = {
    name.lower(): name
    for name in (
        *headers.UPSTREAM_HEADERS,
        headers.AUTHORIZATION,
        headers.CACHE_CONTROL,
        headers.CACHE_NAMESPACE,
        headers.IDEMPOTENT,
        headers.PRIORITY,
        headers.REQUEST_ID,
        headers.TIMEOUT_MS,
        headers.TRACEPARENT,
    )
}


def nats_headers(scope: MutableMapping[str, Any]) -> dict[str, str]:
    """The HTTP request's headers that travel on to NATS (Anthropic's ``x-api-key`` becomes
    ``Authorization``)."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        lowered = raw_name.decode("latin-1").lower()
        name = _FORWARD.get(lowered)
        if name is not None:
            out[name] = raw_value.decode("latin-1")
        elif lowered == "x-api-key":
            out.setdefault(headers.AUTHORIZATION, "Bearer " + raw_value.decode("latin-1"))
    return out


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or ``None`` as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
