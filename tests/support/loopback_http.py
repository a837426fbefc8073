"""aiohttp servers on loopback for the fake upstreams: serve a handler on a free port, and
write a streamed answer piece by piece (each flushed on its own, so the client reads them
split)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

from aiohttp import web
from aiohttp.test_utils import RawTestServer

__all__ = ["serving", "streamed"]


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """Serve ``handler`` on a free loopback port; yield the base URL (no trailing slash)."""
    server = RawTestServer(handler, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def streamed(
    request: web.BaseRequest,
    pieces: Iterable[bytes],
    headers: Mapping[str, str],
    status: int = 200,
) -> web.StreamResponse:
    """Answer ``request`` with ``pieces`` written one by one, then the end."""
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    for piece in pieces:
        await response.write(piece)
    await response.write_eof()
    return response
