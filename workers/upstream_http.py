"""The upstream HTTP client: one pooled aiohttp session per worker process.

Why aiohttp and not httpx: under concurrency httpx spends its time in httpcore's pool
bookkeeping and anyio (encode/httpx#3215). Against the nginx mock (20 ms, ``python -m
bench.clients``), one process, 64 calls in flight: httpx 118 calls/s at 7.9 ms CPU per call,
httpx over ``httpx-aiohttp``'s transport 2,169 at 0.34 ms, aiohttp 2,510 at 0.15 ms.

Adapters use the session directly (``session.post(...)`` as a context manager, so leaving it
early, e.g. a cancelled request, closes the upstream connection), bound each call with
:func:`call_timeout`, and turn an error response into an :class:`UpstreamReply` for their one
error-mapping function. Transport failures are mapped in :mod:`workers.errors`.
"""

from __future__ import annotations

import functools
import ssl
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import httpx

from workers.errors import UnexpectedBody

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "UpstreamReply",
    "call_timeout",
    "expect_event_stream",
    "http_client",
    "proxy_for",
    "read_reply",
]

#: Pool sized for hundreds of concurrent upstream calls per worker process.
DEFAULT_MAX_CONNECTIONS = 1000
#: Bounds for a call that does not set its own (every adapter call does).
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=60.0)


def http_client(max_connections: int = DEFAULT_MAX_CONNECTIONS) -> aiohttp.ClientSession:
    """A pooled session for one worker process; create it inside the running loop.

    It trusts what the httpx client before it trusted (certifi, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR``). Proxies are not looked up here: each adapter resolves its own once
    (:func:`proxy_for`).
    """
    connector = aiohttp.TCPConnector(limit=max_connections, ssl=_trust())
    return aiohttp.ClientSession(connector=connector, timeout=DEFAULT_TIMEOUT)


def proxy_for(url: str, environ: Mapping[str, str]) -> str | None:
    """The proxy for calls to ``url``: ``HTTPS_PROXY`` / ``HTTP_PROXY`` (by scheme) or
    ``ALL_PROXY``, unless ``NO_PROXY`` exempts its host; any case, as curl reads them.

    Resolved once per adapter: aiohttp's ``trust_env`` looks them up, and reads ``~/.netrc``,
    on every request in a worker thread: measured at a third of ``llm-edge up``'s CPU per miss.
    """
    env = {k.lower(): v for k, v in environ.items() if k.lower().endswith("_proxy") and v}
    parts = urllib.parse.urlsplit(url)
    proxy = env.get(f"{parts.scheme}_proxy") or env.get("all_proxy")
    if not proxy:
        return None
    no_proxy = env.get("no_proxy")
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if no_proxy and bypass(parts.hostname or "", {"no": no_proxy}):
        return None
    return proxy


@functools.cache
def _trust() -> ssl.SSLContext:
    """Loaded once per process: reading the CA bundle takes ~20 ms of blocked event loop."""
    return httpx.create_ssl_context()


def call_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """Per-call bounds: waiting for a connection, connecting, and each read, as httpx's
    ``timeout=seconds`` did. No total: a stream may run longer while bytes keep coming (the
    worker bounds the whole call by the request's deadline)."""
    return aiohttp.ClientTimeout(total=None, connect=seconds, sock_read=seconds)


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A whole upstream answer (an error, or a body still to be checked).

    Attributes:
        status: HTTP status.
        reason: the status line's reason phrase.
        headers: response headers, case-insensitive.
        body: the body, decompressed.
    """

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        """The body as text (undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")


async def read_reply(response: aiohttp.ClientResponse) -> UpstreamReply:
    """Read ``response`` to its end."""
    body = await response.read()
    return UpstreamReply(response.status, response.reason or "", response.headers, body)


#: How much of a body that is not an event stream is kept for the error message.
UNEXPECTED_BODY_SHOWN = 300


async def expect_event_stream(response: aiohttp.ClientResponse) -> None:
    """Refuse a streamed answer that is not ``text/event-stream``.

    An HTML error page or a JSON body read as SSE holds no ``data:`` line: it would pass for
    an empty stream that succeeded.

    Raises:
        UnexpectedBody: naming the content type and the start of the body.
    """
    if response.content_type == "text/event-stream":
        return
    start = await response.content.read(UNEXPECTED_BODY_SHOWN)
    raise UnexpectedBody(
        f"expected an event stream, got {response.content_type}: "
        f"{start.decode('utf-8', errors='replace')}"
    )
