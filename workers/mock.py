"""The mock provider: deterministic replies derived from the prompt, with simulated latency,
and deterministic unit vectors for embeddings (:mod:`workers.mock_vectors`).

It serves whenever no provider key is configured, and in tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator

import msgspec

from schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    ResponseMessage,
    Usage,
)
from schemas.embeddings import decode_embeddings_request
from workers.base import ProviderRequest
from workers.config import DEFAULT_EMBEDDING_DIMENSIONS
from workers.mock_vectors import embedding_answer

__all__ = ["MockProvider", "mock_reply_text"]

_encoder = msgspec.json.Encoder()
_WORDS = re.compile(r"\S+\s*|\s+")


def _text_of(request: ChatRequest) -> str:
    """Concatenate the text of every message (string content and text parts)."""
    parts: list[str] = []
    for message in request.messages:
        if isinstance(message.content, str):
            parts.append(message.content)
        elif message.content:
            parts.extend(str(p.get("text", "")) for p in message.content if p.get("type") == "text")
    return "\n".join(parts)


def _count_tokens(text: str) -> int:
    """A stable, cheap token estimate (about four characters a token, as OpenAI suggests)."""
    return max(1, (len(text) + 3) // 4) if text else 0


def mock_reply_text(request: ChatRequest) -> str:
    """The mock's answer: the last user text echoed with a digest of the whole prompt."""
    last_user = next(
        (m.content for m in reversed(request.messages) if m.role == "user" and m.content), ""
    )
    shown = (
        last_user
        if isinstance(last_user, str)
        else _text_of(ChatRequest(model=request.model, messages=[request.messages[-1]]))
    )
    digest = hashlib.sha256(_text_of(request).encode()).hexdigest()[:8]
    return f"Mock reply [{digest}]: {shown[:200]}"


class MockProvider:
    """A provider that never leaves the process.

    Args:
        name: provider name.
        latency_s: simulated upstream latency per call (before the first chunk when streaming).
        chunk_delay_s: simulated delay between streamed chunks.
        embedding_dimensions: a vector's dimensions when the request names none.
    """

    def __init__(
        self,
        name: str = "mock",
        *,
        latency_s: float = 0.0,
        chunk_delay_s: float = 0.0,
        embedding_dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS,
    ) -> None:
        self.name = name
        self.latency_s = latency_s
        self.chunk_delay_s = chunk_delay_s
        self.embedding_dimensions = embedding_dimensions

    async def complete(self, request: ProviderRequest) -> bytes:
        """Answer after the simulated latency."""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        chat = request.chat
        text = mock_reply_text(chat)
        prompt_tokens = _count_tokens(_text_of(chat))
        completion_tokens = _count_tokens(text)
        n = chat.n or 1
        completion = ChatCompletion(
            id=f"chatcmpl-mock-{hashlib.sha256(text.encode()).hexdigest()[:24]}",
            created=int(time.time()),
            model=request.upstream_model,
            choices=[
                Choice(
                    index=i,
                    message=ResponseMessage(role="assistant", content=text),
                    finish_reason="stop",
                )
                for i in range(n)
            ],
            usage=Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens * n,
                total_tokens=prompt_tokens + completion_tokens * n,
            ),
        )
        return _encoder.encode(completion)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        """Stream the same answer word by word, then a usage chunk."""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        chat = request.chat
        text = mock_reply_text(chat)
        ident = f"chatcmpl-mock-{hashlib.sha256(text.encode()).hexdigest()[:24]}"
        created = int(time.time())

        def chunk(delta: Delta, finish: str | None = None) -> ChatCompletionChunk:
            choice = ChunkChoice(index=0, delta=delta, finish_reason=finish)
            return ChatCompletionChunk(ident, created, request.upstream_model, [choice])

        yield chunk(Delta(role="assistant", content=""))
        for piece in _WORDS.findall(text):
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            yield chunk(Delta(content=piece))
        yield chunk(Delta(), "stop")
        prompt_tokens = _count_tokens(_text_of(chat))
        completion_tokens = _count_tokens(text)
        usage = Usage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)
        yield ChatCompletionChunk(ident, created, request.upstream_model, [], usage=usage)

    async def embed(self, request: ProviderRequest) -> bytes:
        """One unit vector per input after the simulated latency: the same input always gets
        the same vector (see :mod:`workers.mock_vectors`).

        Raises:
            msgspec.ValidationError: the body is not a valid embeddings request.
        """
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        body, inputs, _ = decode_embeddings_request(request.body)
        return embedding_answer(
            inputs,
            request.upstream_model,
            dimensions=body.dimensions or self.embedding_dimensions,
            encoding_format=body.format,
        )

    async def aclose(self) -> None:
        """Nothing to release."""
