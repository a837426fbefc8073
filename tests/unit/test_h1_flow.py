"""Flow control of the upstream client against a raw local server: whole bodies of any size are
read to their end, a slow stream consumer holds a bounded amount."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from workers.h1 import UpstreamClient
from workers.h1.connection import READ_AHEAD

#: Several times the read-ahead: a body the client must read past its pause point.
BODY = os.urandom(8 * READ_AHEAD)
#: A socket read adds up to this much at once (asyncio's and uvloop's read size) on top of
#: what was buffered before the client paused.
READ_SIZE = 256 * 1024
WAIT_S = 10.0


def framed(body: bytes, *, chunked: bool) -> bytes:
    """An HTTP/1.1 200 carrying ``body`` with a content length, or chunked in 64 KiB chunks."""
    if not chunked:
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    step = 64 * 1024
    chunks = [
        b"%x\r\n%s\r\n" % (len(body[i : i + step]), body[i : i + step])
        for i in range(0, len(body), step)
    ]
    return (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"".join(chunks) + b"0\r\n\r\n"
    )


@asynccontextmanager
async def upstream(answer: bytes) -> AsyncIterator[str]:
    """A server that answers every request with ``answer``, written at once."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(answer)
        await writer.drain()
        await reader.read()  # until the client closes or reuses the connection
        writer.close()

    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield f"http://127.0.0.1:{port}"
        srv.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_whole_body_many_times_the_read_ahead_is_read_to_its_end(chunked: bool) -> None:
    """read() of an 8 MiB body returns it whole: the read-ahead bound never stalls a reader
    that holds the whole body anyway."""
    async with upstream(framed(BODY, chunked=chunked)) as base, UpstreamClient() as client:
        async with client.post(base, data=b"{}", headers={}, timeout=WAIT_S) as response:
            body = await asyncio.wait_for(response.read(), WAIT_S)
        assert body == BODY
        assert client.open_connections == 1  # read to its end: kept for the next call


async def test_a_slow_stream_consumer_holds_a_bounded_read_ahead_and_gets_every_byte() -> None:
    """A consumer slower than the socket: the client stops reading near READ_AHEAD, resumes as
    the consumer takes pieces, and the stream arrives whole."""
    loop = asyncio.get_running_loop()
    peak = 0
    pieces = []
    async with (
        upstream(framed(BODY, chunked=True)) as base,
        UpstreamClient() as client,
        client.post(base, data=b"{}", headers={}, timeout=WAIT_S) as response,
        asyncio.timeout(WAIT_S),
    ):
        async for piece in response.iter_chunks():
            pieces.append(piece)
            peak = max(peak, response.buffered)
            # each piece handed to a thread and back, as a publish goes to the network
            await loop.run_in_executor(None, len, piece)
    assert b"".join(pieces) == BODY
    assert READ_AHEAD // 2 < peak <= READ_AHEAD + READ_SIZE
