"""Where a request's answer goes. The pipeline speaks to a :class:`ReplySink`; the sink speaks
the caller's protocol: :class:`NatsSink` the OpenAI shapes of ``llm.chat``, other sinks
(the Anthropic Messages API) translate."""

from __future__ import annotations

from typing import Protocol

import msgspec
from nats.aio.client import Client

from broker.request import Reply
from schemas import ChatCompletionChunk, StreamEnd, headers

__all__ = ["NatsSink", "ReplySink"]

_encoder = msgspec.json.Encoder()


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
    """Publishes to a NATS reply subject in the ``llm.chat`` protocol (see the README)."""

    def __init__(self, nc: Client, reply_to: str) -> None:
        self._nc = nc
        self._reply_to = reply_to
        self._seq = 0

    async def _publish(self, body: bytes, hdrs: dict[str, str]) -> None:
        await self._nc.publish(self._reply_to, body, headers=hdrs)

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        """The body as is, with ``Llm-Status``."""
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
            await self.whole(reply, meta)
            return
        hdrs = self._stream_headers("error", reply.status, meta)
        hdrs.update(reply.headers)
        await self._publish(reply.body, hdrs)
