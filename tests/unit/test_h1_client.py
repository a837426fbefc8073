"""The upstream HTTP/1.1 client against raw local servers: reuse, framing, bounds, proxies."""

from __future__ import annotations

import asyncio
import base64
import gzip
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from workers.h1 import TransportError, TransportTimeout, UpstreamClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
JSON = {"content-type": "application/json"}


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (Content-Length framed)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def answer(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    return head + b"".join(extra) + b"content-length: %d\r\n\r\n" % len(body) + body


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield f"http://127.0.0.1:{port}"
        srv.close()


async def test_sequential_calls_reuse_one_connection() -> None:
    """Keep-alive: five calls in a row open one connection, each answer is its own."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                _, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(answer(b'{"echo":' + body + b"}"))
            await writer.drain()
        writer.close()

    async with server(handler) as base, UpstreamClient() as client:
        for i in range(5):
            call = client.post(f"{base}/v1/x", data=b"%d" % i, headers=JSON, timeout=5)
            async with call as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "application/json"
                assert await response.read() == b'{"echo":%d}' % i
    assert connections == 1


async def test_chunked_and_gzip_bodies_arrive_whole_and_in_pieces() -> None:
    """Chunked transfer encoding is unframed and gzip decoded, read whole or as it comes."""
    payload = b"data: " + base64.b64encode(os.urandom(6000)) + b"\n\n"  # gzip cannot shrink it
    packed = gzip.compress(payload)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await read_request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"content-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            for start in range(0, len(packed), 700):
                piece = packed[start : start + 700]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.001)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        writer.close()

    async with server(handler) as base, UpstreamClient() as client:
        async with client.post(base, data=b"{}", headers=JSON, timeout=5) as response:
            assert response.content_type == "text/event-stream"
            assert await response.read() == payload
        async with client.post(base, data=b"{}", headers=JSON, timeout=5) as response:
            pieces = [chunk async for chunk in response.iter_chunks()]
        assert b"".join(pieces) == payload
        assert len(pieces) > 1


async def test_a_silent_upstream_times_out_within_the_bound() -> None:
    """Headers that never come: TransportTimeout after the call's timeout, not later."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with server(handler) as base, UpstreamClient() as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TransportTimeout):
            async with client.post(base, data=b"{}", headers=JSON, timeout=0.3):
                pass
        assert 0.25 < loop.time() - started < 2.0
        assert client.open_connections == 0


async def test_a_stream_stalling_midway_times_out_but_a_slow_steady_one_does_not() -> None:
    """The read bound is per wait: bytes every 0.1 s keep a 0.3 s call alive for 1 s."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(10):
            writer.write(b"2\r\nok\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        if body == b"stall":
            await asyncio.sleep(5)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with server(handler) as base, UpstreamClient() as client:
        async with client.post(base, data=b"steady", headers=JSON, timeout=0.3) as response:
            assert await response.read() == b"ok" * 10
        with pytest.raises(TransportTimeout):
            async with client.post(base, data=b"stall", headers=JSON, timeout=0.3) as response:
                await response.read()


async def test_a_connection_closed_before_the_answer_is_a_transport_error() -> None:
    """Half an answer then a close: an error, never a short body passed off as whole."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial":')
        await writer.drain()
        writer.close()

    async with server(handler) as base, UpstreamClient() as client:
        with pytest.raises(TransportError) as caught:
            async with client.post(base, data=b"{}", headers=JSON, timeout=5) as response:
                await response.read()
        assert not isinstance(caught.value, TransportTimeout)


async def test_a_body_delimited_by_the_close_is_read_to_its_end() -> None:
    """No length, no chunking (HTTP/1.0 style): the close ends the body."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"a":1}')
        await writer.drain()
        writer.close()

    async with server(handler) as base, UpstreamClient() as client:
        async with client.post(base, data=b"{}", headers=JSON, timeout=5) as response:
            assert await response.read() == b'{"a":1}'
        assert client.open_connections == 0  # not kept: the server closed it


async def test_leaving_a_stream_early_closes_its_connection() -> None:
    """A cancelled request's upstream connection is closed, which the upstream sees."""
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        try:
            for _ in range(100):
                writer.write(b"1\r\nx\r\n")
                await writer.drain()
                await asyncio.sleep(0.02)
        except ConnectionError:  # the client closed the connection: writing fails
            closed.set()

    async with server(handler) as base, UpstreamClient() as client:
        async with client.post(base, data=b"{}", headers=JSON, timeout=5) as response:
            async for _ in response.iter_chunks():
                break
        async with asyncio.timeout(5):
            await closed.wait()
        assert client.open_connections == 0


async def test_calls_beyond_the_connection_limit_wait_for_a_free_one() -> None:
    """Twelve calls through a two-connection pool: all answered, never more than two open."""
    open_now = peak = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        try:
            while True:
                _, body = await read_request(reader)
                await asyncio.sleep(0.02)
                writer.write(answer(body))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            open_now -= 1

    async def one(client: UpstreamClient, base: str, i: int) -> bytes:
        async with client.post(base, data=b"%d" % i, headers=JSON, timeout=5) as response:
            return await response.read()

    async with server(handler) as base, UpstreamClient(max_connections=2) as client:
        answers = await asyncio.gather(*(one(client, base, i) for i in range(12)))
    assert answers == [b"%d" % i for i in range(12)]
    assert peak == 2


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    """The server drops the kept connection between calls: the next call opens a new one."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(answer(b"{}"))
        await writer.drain()
        writer.close()  # despite keep-alive

    async with server(handler) as base, UpstreamClient() as client:
        for _ in range(3):
            async with client.post(base, data=b"{}", headers=JSON, timeout=5) as response:
                assert await response.read() == b"{}"
            await asyncio.sleep(0.05)
    assert connections == 3


async def test_refused_connections_and_header_injection_are_refused_cleanly() -> None:
    """Nothing listening: a TransportError. A line break in a header value: ValueError,
    before anything is sent."""
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    async with UpstreamClient() as client:
        with pytest.raises(TransportError):
            async with client.post(f"http://127.0.0.1:{port}", data=b"", headers={}, timeout=2):
                pass
        hdrs = {"x-request-id": "a\r\nx-evil: 1"}
        with pytest.raises(ValueError, match="line break"):
            async with client.post(f"http://127.0.0.1:{port}", data=b"", headers=hdrs, timeout=2):
                pass
        assert client.open_connections == 0


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    d = tmp_path_factory.mktemp("h1tls")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
            "-out", "cert.pem", "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost",
        ],
        cwd=d, check=True, capture_output=True,
    )  # fmt: skip
    return d


async def test_https_through_a_connect_proxy(tls_files: Path) -> None:
    """HTTPS_PROXY style: CONNECT to the proxy with credentials, then TLS to the origin."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tls_files / "cert.pem", tls_files / "key.pem")

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await read_request(reader)
        assert head.startswith(b"POST /v1/chat HTTP/1.1\r\n")
        writer.write(answer(b'{"over":"tls","got":' + body + b"}"))
        await writer.drain()

    tunnels: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        tunnels.append(head)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", origin_port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    tls_origin = await asyncio.start_server(origin, "127.0.0.1", 0, ssl=server_ctx)
    origin_port = tls_origin.sockets[0].getsockname()[1]
    async with tls_origin, server(proxy) as proxy_url:
        trust = ssl.create_default_context(cafile=str(tls_files / "cert.pem"))
        async with UpstreamClient(ssl_context=trust) as client:
            via = proxy_url.replace("http://", "http://user:s%40cret@")
            url = f"https://localhost:{origin_port}/v1/chat"
            call = client.post(url, data=b"1", headers=JSON, timeout=5, proxy=via)
            async with call as response:
                assert await response.read() == b'{"over":"tls","got":1}'
    assert tunnels[0].startswith(b"CONNECT localhost:%d HTTP/1.1\r\n" % origin_port)
    assert b"Proxy-Authorization: Basic dXNlcjpzQGNyZXQ=\r\n" in tunnels[0]
