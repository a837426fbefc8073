"""Where a request's answer goes. The pipeline speaks to a :class:`ReplySink`; the sink speaks
the caller's protocol: :class:`NatsSink` that of ``llm.chat``, :class:`AnthropicSink` that of
``llm.messages``. Answers are already in their caller's API (the worker answered in it):
sinks relay them as they are, and only the broker's own errors are written in the caller's
error shape."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
from nats.aio.client import Client

from broker.request import Piece, Reply
from edge_runtime.process import fits
from schemas import ErrorEnvelope, StreamEnd, error_body, headers
from schemas.errors import anthropic_error

__all__ = ["AnthropicSink", "NatsSink", "ReplySink"]

_encoder = msgspec.json.Encoder()
_envelope = msgspec.json.Decoder(ErrorEnvelope)
_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


class ReplySink(Protocol):
    """Receives one request's answer: a whole reply, or chunks then an end, or an error.

    ``meta`` holds headers for the caller (request id, cache status, deployment ...).
    """

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        """A complete answer (success or error) to a non-streaming request."""
        ...

    async def chunk(self, piece: Piece, meta: dict[str, str]) -> None:
        """One streamed piece (a chat chunk, or an Anthropic event)."""
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

    async def chunk(self, piece: Piece, meta: dict[str, str]) -> None:
        """``Llm-Stream: chunk``, its body as the worker sent it (``Llm-Event`` names an
        Anthropic event)."""
        hdrs = self._stream_headers("chunk", 200, meta)
        if piece.event:
            hdrs[headers.EVENT] = piece.event
        await self._publish(piece.data, hdrs)

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


def _anthropic_shaped(body: bytes) -> bool:
    """Whether an error body is already an Anthropic error (a worker answered the Messages
    API in its own shape, with the upstream's error type)."""
    try:
        return bool(_any.decode(body).get("type") == "error")
    except (msgspec.MsgspecError, AttributeError):
        return False


class AnthropicSink(NatsSink):
    """Publishes in the Anthropic Messages protocol (``llm.messages``).

    Whole answers are ``message`` objects (or token counts) as the worker gave them; streams
    are one NATS message per Anthropic event (``Llm-Event`` names it), then an empty
    ``Llm-Stream: end``; errors are Anthropic errors.
    """

    async def end(self, end: StreamEnd, meta: dict[str, str]) -> None:
        """The end marker (the stream's own last event, ``message_stop``, went before it)."""
        await self._publish(b"", self._stream_headers("end", 200, meta))

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        """The answer as it is (an error in Anthropic's shape)."""
        if reply.status != 200:
            await self.error(reply, meta, streaming=False)
            return
        await self._publish_whole(reply, meta)

    async def error(self, reply: Reply, meta: dict[str, str], *, streaming: bool) -> None:
        """An Anthropic error body (an ``error`` event when streaming)."""
        if not _anthropic_shaped(reply.body):
            body = anthropic_error(reply.status, _error_message(reply))
            reply = Reply(reply.status, body, reply.headers)
        if streaming:
            meta = {**meta, headers.EVENT: "error"}
        await super().error(reply, meta, streaming=streaming)
