"""The ``Provider`` protocol every adapter implements, and the call it receives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from schemas import ChatCompletionChunk, ChatRequest

__all__ = ["Provider", "ProviderRequest"]


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """One upstream call.

    Attributes:
        body: the request exactly as the caller sent it (unknown fields included).
        chat: the same request, decoded and validated.
        upstream_model: the model name to send upstream.
        timeout_s: time left before the caller's deadline.
        request_id: correlation id, forwarded upstream where the provider accepts one.
    """

    body: bytes
    chat: ChatRequest
    upstream_model: str
    timeout_s: float
    request_id: str = ""


class Provider(Protocol):
    """An upstream LLM API.

    Implementations raise :class:`workers.errors.ProviderError` for every failure, mapped in
    one place per adapter.
    """

    name: str

    async def complete(self, request: ProviderRequest) -> bytes:
        """Run a whole (non-streamed) completion; return ``chat.completion`` JSON bytes."""
        ...

    def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        """Stream a completion as OpenAI-shaped chunks, ending with a usage-only chunk
        (``choices == []``) when the upstream reports usage."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections."""
        ...
