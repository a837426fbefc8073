"""One keep-alive HTTP/1.1 connection to an upstream, and the answer it is reading.

:class:`Connection` is an ``asyncio.Protocol``: bytes from the socket go straight into an
``httptools`` response parser, whose callbacks fill a :class:`Response`. The caller waits
only where it must (for the status line and headers, then for body bytes): one future per
wait, no task, no stream reader between the socket and the parser.

Reads are bounded without a timer per read: each arriving byte moves a deadline forward and
one timer, re-armed lazily, fires only when the deadline has really passed.
"""

from __future__ import annotations

import asyncio
import collections
import zlib
from collections.abc import AsyncIterator
from typing import cast

import httptools

from workers.h1.errors import TransportError, TransportTimeout

__all__ = ["Connection", "Headers", "Response"]

#: Body bytes read ahead of a slow consumer before the socket stops being read.
#:
#: Only a consumer of pieces (:meth:`Response.iter_chunks`, an event stream relayed message by
#: message) is waited for: its buffer is what the bound keeps small, and TCP pushes back on an
#: upstream that produces faster than we publish. :meth:`Response.read` holds the whole body
#: by definition, so it lifts the bound: the bytes have nowhere to go but its buffer, and a
#: pause there waited for a reader that never came (a 6 MiB answer stalled at 1 MiB until
#: the caller's deadline, the read timer being re-armed while paused).
READ_AHEAD = 1 << 20
#: A request body up to this size is sent in one buffer with its head (one small copy).
SMALL_BODY = 64 * 1024
_DECODABLE = {"gzip", "deflate", "x-gzip"}


class Headers(dict[str, str]):
    """Response headers by lower-case name (repeated names joined with ``, ``)."""

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        """The value of ``name``, in any case."""
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


class Response:
    """An upstream answer: status and headers first, then the body as it arrives."""

    __slots__ = (
        "_chunks",
        "_complete",
        "_conn",
        "_decoder",
        "_error",
        "_size",
        "_waiter",
        "_whole",
        "headers",
        "reason",
        "status",
    )

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.status = 0
        self.reason = ""
        self.headers = Headers()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._whole = False  # read() holds the whole body: no read-ahead bound
        self._complete = False
        self._error: TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._decoder: zlib._Decompress | None = None

    @property
    def content_type(self) -> str:
        """The media type, lower-case, without parameters."""
        value = self.headers.get("content-type") or ""
        return value.partition(";")[0].strip().lower()

    @property
    def complete(self) -> bool:
        """Whether the whole body has arrived."""
        return self._complete

    @property
    def buffered(self) -> int:
        """Body bytes read from the socket that the consumer has not taken yet."""
        return self._size

    async def wait_headers(self) -> None:
        """Wait for the status line and the headers."""
        while not self.status:
            await self._progress()

    async def read(self) -> bytes:
        """The whole body (waits for its end)."""
        if self._error is not None:
            raise self._error
        self._whole = True  # every byte ends in the returned body: waiting would only stall
        self._conn.resume()
        while not self._complete:
            await self._progress()
        body = b"".join(self._chunks) if len(self._chunks) != 1 else self._chunks[0]
        self._chunks.clear()
        self._size = 0
        return self._finish(body)

    async def read_some(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of what arrives first (empty at the end of the body)."""
        while not self._chunks and not self._complete:
            await self._progress()
        out = b""
        while self._chunks and len(out) < limit:
            out += self._take()
        return out[:limit]

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive, in the pieces they arrive in."""
        while True:
            if self._error is not None:
                raise self._error
            if self._chunks:
                piece = self._take()
                if piece:  # a compressed piece may decode to nothing yet
                    yield piece
            elif self._complete:
                tail = self._finish(b"")
                if tail:
                    yield tail
                return
            else:
                await self._progress()

    def _take(self) -> bytes:
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        if self._size < READ_AHEAD // 2:
            self._conn.resume()
        return chunk if self._decoder is None else self._decoder.decompress(chunk)

    def _finish(self, body: bytes) -> bytes:
        if self._decoder is None:
            return body
        decoder, self._decoder = self._decoder, None
        return decoder.decompress(body) + decoder.flush()

    async def _progress(self) -> None:
        """Wait for the connection to deliver anything (or fail)."""
        if self._error is not None:
            raise self._error
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    # called by the connection

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: TransportError) -> None:
        if self._error is None and not self._complete:
            self._error = error
        self._wake()

    def _headers_done(self, status: int, raw: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        for name, value in raw:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text
        encoding = (self.headers.get("content-encoding") or "").strip().lower()
        if encoding in _DECODABLE:
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
        elif encoding not in {"", "identity"}:
            self._error = TransportError(f"unsupported content-encoding {encoding!r}")
        self._wake()

    def _body(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > READ_AHEAD and not self._whole:
            self._conn.pause()
        self._wake()

    def _done(self) -> None:
        self._complete = True
        self._wake()


class Connection(asyncio.Protocol):
    """A socket to one origin (or proxy) that answers one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None
        self._raw: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._read_timeout = 0.0
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._until_close = False
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0
        #: set by the pool: counted against its limit until released
        self.counted = False
        self.tunnel: asyncio.Future[bytes] | None = None
        self._tunnel_buffer = b""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self._tunnel_data(data)
            return
        if self._response is None or self._response.complete:  # bytes nobody asked for
            self.abort()  # the connection is unusable (never reused)
            return
        self._deadline = self._loop.time() + self._read_timeout
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError(f"unreadable upstream response: {exc}"))
            self.abort()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        self._stop_timer()
        if self.tunnel is not None and not self.tunnel.done():
            self.tunnel.set_exception(TransportError("the proxy closed the connection"))
        response = self._response
        if response is None or response.complete:
            return
        if self._until_close and response.status:  # a body delimited by the close: complete
            response._done()
            return
        reason = f": {exc}" if exc else ""
        self._fail(TransportError(f"the upstream closed the connection before answering{reason}"))

    def pause_writing(self) -> None:  # request bodies are small and written at once
        pass

    def resume_writing(self) -> None:
        pass

    # httptools callbacks

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        response = self._response
        if response is None or response.complete:  # a second answer to one request
            self.abort()
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            self._raw, self._reason = [], b""
            return
        response.reason = self._reason.decode("latin-1")
        names = {name.lower() for name, _ in self._raw}
        self._until_close = (
            b"content-length" not in names
            and b"transfer-encoding" not in names
            and status not in {204, 304}
        )
        response._headers_done(status, self._raw)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._body(body)

    def on_message_complete(self) -> None:
        response = self._response
        if response is None or not response.status:
            return
        self.keep_alive = self._parser.should_keep_alive() and not self._until_close
        self._stop_timer()
        response._done()

    # used by the client

    def send(self, head: bytes, body: bytes | bytearray, read_timeout: float) -> Response:
        """Write a whole request; its answer will arrive in the returned :class:`Response`.

        A large body goes to the socket as it is, after its head (never copied into one
        buffer with it: a 4 MiB prompt copied cost 5 % of the miss path's CPU)."""
        assert self.transport is not None
        response = self._response = Response(self)
        self._raw, self._reason = [], b""
        self._until_close = False
        self.keep_alive = False
        self._read_timeout = read_timeout
        self._deadline = self._loop.time() + read_timeout
        self._timer = self._loop.call_at(self._deadline, self._check_deadline)
        if len(body) <= SMALL_BODY:
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))
        return response

    def done_with(self) -> None:
        """The caller is finished with the current answer."""
        self._response = None
        self._stop_timer()

    def pause(self) -> None:
        """Stop reading the socket until the consumer catches up."""
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        """Read the socket again."""
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self._deadline = self._loop.time() + self._read_timeout
            self.transport.resume_reading()

    def abort(self) -> None:
        """Close at once (the answer is abandoned, or the connection is stale)."""
        self.closed = True
        self.keep_alive = False
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()

    async def open_tunnel(self, request: bytes) -> bytes:
        """Send a proxy ``CONNECT`` and return its status line (the head is read here, not
        by the response parser: a tunnel's 200 has no body length)."""
        assert self.transport is not None
        self.tunnel = self._loop.create_future()
        self.transport.write(request)
        try:
            return await self.tunnel
        finally:
            self.tunnel = None

    def _tunnel_data(self, data: bytes) -> None:
        self._tunnel_buffer += data
        head, found, rest = self._tunnel_buffer.partition(b"\r\n\r\n")
        if not found:
            if len(self._tunnel_buffer) > 16384:
                self.abort()
            return
        if rest:  # the server spoke before the TLS handshake: not a tunnel
            self.abort()
            return
        self._tunnel_buffer = b""
        if self.tunnel is not None and not self.tunnel.done():
            self.tunnel.set_result(head.split(b"\r\n", 1)[0])

    def _fail(self, error: TransportError) -> None:
        self._stop_timer()
        if self._response is not None:
            self._response._fail(error)

    def _check_deadline(self) -> None:
        self._timer = None
        if self._response is None or self._response.complete or self.closed:
            return
        if self._paused:  # waiting on our consumer, not on the upstream
            self._deadline = self._loop.time() + self._read_timeout
        elif self._loop.time() >= self._deadline:
            self._fail(TransportTimeout(f"no answer from the upstream in {self._read_timeout:g} s"))
            self.abort()
            return
        self._timer = self._loop.call_at(self._deadline, self._check_deadline)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
