"""Where a request's answer goes. The pipeline speaks to a :class:`ReplySink`; the sink speaks
the caller's protocol: :class:`NatsSink` the OpenAI shapes of ``llm.chat``, other sinks
(the Anthropic Messages API) translate."""

from __future__ import annotations

from typing import Protocol

import msgspec
from nats.aio.client import Client

from broker.anthropic import EventWriter, message_from_completion
from broker.request import Reply
from edge_runtime.process import fits
from schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ErrorEnvelope,
    StreamEnd,
    error_body,
    headers,
)
from schemas.errors import anthropic_error

__all__ = ["AnthropicSink", "NatsSink", "ReplySink"]

_encoder = msgspec.json.Encoder()
_completion = msgspec.json.Decoder(ChatCompletion)
_envelope = msgspec.json.Decoder(ErrorEnvelope)


class ReplySink(Protocol):
    """Receives one request's answer: a whole reply, or chunks then an end, or an error.

    ``meta`` holds headers for the caller (request id, cache status, deployment ...).
    """

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        """A complete answer (success or error) to a non-streaming request."""
        ...

    async def chunk(self, chunk: ChatCompletionChunk, meta: dict[str, str]) -> None:
        """One streamed chunk."""
        ...

    async def end(self, end: StreamEnd, meta: dict[str, str]) -> None:
        """The stream finished normally."""
        ...

    async def error(self, reply: Reply, meta: dict[str, str], *, streaming: bool) -> None:
        """The request failed (for a stream: before or after some chunks)."""
        ...


class NatsSink:
    """Publishes to a NATS reply subject in the ``llm.chat`` protocol (see docs/nats-api.md)."""

    def __init__(self, nc: Client, reply_to: str) -> None:
        self._nc = nc
        self._reply_to = reply_to
        self._seq = 0

    async def _publish(self, body: bytes, hdrs: dict[str, str]) -> None:
        if not fits(self._nc, body, hdrs):
            # published as is, the server would close this broker's connection
            body, hdrs = _too_large(len(body), hdrs)
        await self._nc.publish(self._reply_to, body, headers=hdrs)

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        """The body as is, with ``Llm-Status``."""
        await self._publish_whole(reply, meta)

    async def _publish_whole(self, reply: Reply, meta: dict[str, str]) -> None:
        await self._publish(
            reply.body, {headers.STATUS: str(reply.status), **meta, **reply.headers}
        )

    def _stream_headers(self, kind: str, status: int, meta: dict[str, str]) -> dict[str, str]:
        hdrs = {
            headers.STATUS: str(status),
            **meta,
            headers.STREAM: kind,
            headers.SEQ: str(self._seq),
        }
        self._seq += 1
        return hdrs

    async def chunk(self, chunk: ChatCompletionChunk, meta: dict[str, str]) -> None:
        """``Llm-Stream: chunk``."""
        await self._publish(_encoder.encode(chunk), self._stream_headers("chunk", 200, meta))

    async def end(self, end: StreamEnd, meta: dict[str, str]) -> None:
        """``Llm-Stream: end`` with usage."""
        await self._publish(_encoder.encode(end), self._stream_headers("end", 200, meta))

    async def error(self, reply: Reply, meta: dict[str, str], *, streaming: bool) -> None:
        """The envelope; marked ``Llm-Stream: error`` when the caller asked for a stream."""
        if not streaming:
            await self._publish_whole(reply, meta)
            return
        hdrs = self._stream_headers("error", reply.status, meta)
        hdrs.update(reply.headers)
        await self._publish(reply.body, hdrs)


def _too_large(size: int, hdrs: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """A 502 envelope in place of a reply over the server's ``max_payload``."""
    message = f"the answer ({size} bytes) is over the NATS max_payload and cannot be delivered"
    kept = {k: hdrs[k] for k in (headers.REQUEST_ID, headers.STREAM, headers.SEQ) if k in hdrs}
    if headers.STREAM in kept:
        kept[headers.STREAM] = "error"
    return error_body(502, "reply_too_large", message), {**kept, headers.STATUS: "502"}


def _error_message(reply: Reply) -> str:
    """The envelope's message, led by the field at fault as Anthropic writes it
    (``tool_choice: ...``): Anthropic errors have no ``param``."""
    try:
        error = _envelope.decode(reply.body).error
    except msgspec.MsgspecError:
        return reply.body[:300].decode(errors="replace")
    return f"{error.param}: {error.message}" if error.param else error.message


class AnthropicSink(NatsSink):
    """Publishes in the Anthropic Messages protocol (``llm.messages``).

    Whole answers are ``message`` objects; streams are one NATS message per Anthropic event
    (``Llm-Event`` names it), then an empty ``Llm-Stream: end``; errors are Anthropic errors.
    """

    def __init__(self, nc: Client, reply_to: str, model: str) -> None:
        super().__init__(nc, reply_to)
        self._model = model
        self._events = EventWriter(model)

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        """A ``message`` (or an Anthropic error)."""
        if reply.status != 200:
            await self.error(reply, meta, streaming=False)
            return
        message = message_from_completion(_completion.decode(reply.body), self._model)
        await self._publish_whole(Reply(200, _encoder.encode(message), reply.headers), meta)

    async def _events_out(
        self, events: list[tuple[str, dict[str, object]]], meta: dict[str, str]
    ) -> None:
        for name, data in events:
            hdrs = self._stream_headers("chunk", 200, meta)
            hdrs[headers.EVENT] = name
            await self._publish(_encoder.encode(data), hdrs)

    async def chunk(self, chunk: ChatCompletionChunk, meta: dict[str, str]) -> None:
        """The Anthropic events this chunk makes."""
        await self._events_out(self._events.chunk(chunk), meta)

    async def end(self, end: StreamEnd, meta: dict[str, str]) -> None:
        """``message_delta``, ``message_stop``, then the end marker."""
        await self._events_out(self._events.finish(), meta)
        await self._publish(b"", self._stream_headers("end", 200, meta))

    async def error(self, reply: Reply, meta: dict[str, str], *, streaming: bool) -> None:
        """An Anthropic error body (an ``error`` event when streaming)."""
        translated = Reply(
            reply.status, anthropic_error(reply.status, _error_message(reply)), reply.headers
        )
        if streaming:
            meta = {**meta, headers.EVENT: "error"}
        await super().error(translated, meta, streaming=streaming)
