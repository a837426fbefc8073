"""The mock provider: deterministic replies derived from the prompt, with simulated latency,
and deterministic unit vectors for embeddings (:mod:`workers.mock_vectors`).

It serves whenever no provider key is configured, and in tests and benchmarks. It speaks the
Messages API too, reading only the texts of a request (as it does of a chat request): a fake
has nothing to refuse, so thinking, server tools and betas meant for the real model it
stands in for do not make it fail.
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
    Message,
    ResponseMessage,
    Usage,
)
from schemas.anthropic import MessagesRequest
from schemas.embeddings import decode_embeddings_request
from workers.base import Event, ProviderRequest
from workers.config import DEFAULT_EMBEDDING_DIMENSIONS
from workers.messages_from_chat import EventWriter, message_from_completion
from workers.messages_to_chat import estimate_tokens
from workers.mock_vectors import embedding_answer

__all__ = ["MockProvider", "mock_reply_text"]

_encoder = msgspec.json.Encoder()
_completion = msgspec.json.Decoder(ChatCompletion)
_WORDS = re.compile(r"\S+\s*|\s+")


def _texts_only(request: MessagesRequest) -> ChatRequest:
    """The texts of a Messages request as a chat request: all the mock reads of it."""

    def texts(content: str | list[dict[str, object]] | None) -> str:
        if isinstance(content, str):
            return content
        return "\n".join(str(b.get("text", "")) for b in content or () if b.get("type") == "text")

    messages = [Message(role="system", content=texts(request.system))] if request.system else []
    messages += [Message(role=t.role, content=texts(t.content)) for t in request.messages]
    return ChatRequest(model=request.model, messages=messages)


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

    def _chat(self, request: ProviderRequest, *, stream: bool) -> ProviderRequest:
        chat = _texts_only(request.messages)
        chat.stream = stream
        return ProviderRequest(
            b"", chat, request.upstream_model, request.timeout_s, request.request_id
        )

    async def complete_messages(self, request: ProviderRequest) -> bytes:
        """The same answer as a ``message``."""
        completion = _completion.decode(await self.complete(self._chat(request, stream=False)))
        return _encoder.encode(message_from_completion(completion, request.upstream_model))

    async def stream_messages(self, request: ProviderRequest) -> AsyncIterator[Event]:
        """The same stream as Anthropic events."""
        writer = EventWriter(request.upstream_model)
        async for chunk in self.stream(self._chat(request, stream=True)):
            for name, data in writer.chunk(chunk):
                yield Event(name, _encoder.encode(data))
        for name, data in writer.finish():
            yield Event(name, _encoder.encode(data))

    async def count_tokens(self, request: ProviderRequest) -> tuple[bytes, bool]:
        """An estimate, as for any provider without a counting endpoint."""
        return _encoder.encode({"input_tokens": estimate_tokens(request.messages)}), False

    async def aclose(self) -> None:
        """Nothing to release."""
