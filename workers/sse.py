"""Incremental Server-Sent Events parsing (the WHATWG event-stream format).

Bytes arrive in arbitrary pieces: an event may be split across reads, a line may end in LF,
CRLF or CR, and a multi-byte UTF-8 character may be cut in two. Lines are split on bytes and
decoded only when whole, so none of that matters. Comment lines (``:`` keep-alives) are
skipped; ``event:``, ``data:`` (multi-line) and ``id:`` are kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field

__all__ = ["SSEEvent", "SSEParser", "aiter_sse"]


@dataclass(slots=True)
class SSEEvent:
    """One dispatched event."""

    data: str
    event: str = "message"
    id: str | None = None


@dataclass(slots=True)
class SSEParser:
    """Feed bytes, get complete events."""

    _buffer: bytes = b""
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: str | None = None
    _pending_cr: bool = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume a piece of the stream; return the events it completed."""
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CRLF split across reads
        self._pending_cr = chunk.endswith(b"\r")
        data = self._buffer + chunk
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._buffer = lines.pop()
        events: list[SSEEvent] = []
        for raw in lines:
            event = self._line(raw.decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent("\n".join(self._data), self._event or "message", self._id)
        self._data = []
        self._event = ""
        return event


async def aiter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    """Events from an async iterable of byte chunks (e.g. ``response.aiter_bytes()``)."""
    parser = SSEParser()
    async for chunk in chunks:
        for event in parser.feed(chunk):
            yield event
    for event in parser.feed(b"\n\n"):  # a final event without its blank line
        yield event
