"""A scripted upstream: a real HTTP server on 127.0.0.1 (port 0) whose answers a test writes
as a function of what the adapter sent, the adapters' test double.

    async with scripted_upstream(lambda sent: Answer(json=...)) as base_url: ...

Answers may be JSON, text, or SSE pieces written one by one (each flushed on its own, so
the client reads them split), after an optional delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from tests.support.loopback_http import serving, streamed

__all__ = ["Answer", "Handler", "Sent", "closed_port_url", "scripted_upstream"]


@dataclass(frozen=True)
class Sent:
    """A request the upstream received."""

    method: str
    path_qs: str
    headers: CIMultiDictProxy[str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class Answer:
    """What the upstream answers: ``json`` or ``text`` whole, or ``pieces`` streamed; or,
    with ``reset``, the connection dropped without an answer."""

    status: int = 200
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    pieces: list[bytes] | None = None
    delay_s: float = 0.0
    reset: bool = False


Handler = Callable[[Sent], Answer]


async def _respond(request: web.BaseRequest, answer: Answer) -> web.StreamResponse:
    if answer.delay_s:
        await asyncio.sleep(answer.delay_s)
    if answer.reset and request.transport is not None:
        request.transport.abort()
        return web.Response()
    if answer.pieces is not None:
        headers = CIMultiDict(answer.headers)
        headers["Content-Type"] = "text/event-stream"  # whatever the answer's headers say
        return await streamed(request, answer.pieces, headers, answer.status)
    if answer.json is not None:
        return web.json_response(answer.json, status=answer.status, headers=answer.headers)
    return web.Response(status=answer.status, text=answer.text or "", headers=answer.headers)


@contextlib.asynccontextmanager
async def scripted_upstream(handler: Handler) -> AsyncIterator[str]:
    """Serve ``handler`` on a free loopback port; yield the base URL (no trailing slash)."""

    async def serve(request: web.BaseRequest) -> web.StreamResponse:
        sent = Sent(request.method, request.path_qs, request.headers, await request.read())
        return await _respond(request, handler(sent))

    async with serving(serve) as base_url:
        yield base_url


def closed_port_url() -> str:
    """A loopback URL nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
