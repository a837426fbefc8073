"""The upstream HTTP client: one pooled :class:`~workers.h1.UpstreamClient` per worker process.

Why our own HTTP/1.1 client (:mod:`workers.h1`, protocols parsed by httptools) and not a
general one: the upstream call is most of a worker's CPU per miss. Against the nginx mock
(20 ms, ``python -m bench.clients``), one process, CPU per call at 64 / 1000 calls in flight:
httpx 7.9 ms (httpcore's pool bookkeeping and anyio, encode/httpx#3215), httpx over
``httpx-aiohttp``'s transport 0.34 ms, aiohttp 0.14 / 0.18 ms (2,367 / 3,834 calls/s),
``workers.h1`` 0.044 / 0.044 ms (2,855 / 11,693 calls/s); streams 0.15 ms with aiohttp,
0.06 ms with ``workers.h1``.

Adapters call it through :class:`~workers.upstream_post.UpstreamPoster` (``client.post(...)``
as a context manager, so leaving it early, e.g. a cancelled request, closes the upstream
connection), which bounds each wait of a call with the call's timeout and turns an error
response into an :class:`UpstreamReply` for the adapter's one error-mapping function.
Transport failures are mapped in :mod:`workers.errors`.
"""

from __future__ import annotations

import functools
import ssl
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import httpx

from schemas import headers
from workers.errors import UnexpectedBody
from workers.h1 import DEFAULT_MAX_CONNECTIONS, Response, UpstreamClient

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "LIMIT_HEADERS",
    "UpstreamReply",
    "expect_content_type",
    "expect_event_stream",
    "http_client",
    "noted_limits",
    "proxy_for",
    "read_reply",
]

#: The upstream's rate-limit headers a worker passes back to the broker (it shares the
#: provider's limits among brokers and pauses a deployment that has nothing left).
LIMIT_HEADERS = headers.RATELIMIT
_LIMITS: ContextVar[dict[str, str] | None] = ContextVar("upstream_limits", default=None)


@contextmanager
def noted_limits() -> Iterator[dict[str, str]]:
    """Collect the rate-limit headers of the upstream answers read inside (one call's: the
    runner reads them into its reply). A context variable, so adapters need no new return
    value: every answer read through :func:`read_reply` or :func:`expect_event_stream` is
    noted."""
    noted: dict[str, str] = {}
    token = _LIMITS.set(noted)
    try:
        yield noted
    finally:
        _LIMITS.reset(token)


def _note(response: Response) -> None:
    noted = _LIMITS.get()
    if noted is None:
        return
    for name in LIMIT_HEADERS:
        value = response.headers.get(name)
        if value is not None:
            noted[name] = value


def http_client(max_connections: int = DEFAULT_MAX_CONNECTIONS) -> UpstreamClient:
    """A pooled client for one worker process; create it inside the running loop.

    It trusts what the httpx client before it trusted (certifi, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR``). Proxies are not looked up here: each adapter resolves its own once
    (:func:`proxy_for`).
    """
    return UpstreamClient(max_connections, ssl_context=_trust())


def proxy_for(url: str, environ: Mapping[str, str]) -> str | None:
    """The proxy for calls to ``url``: ``HTTPS_PROXY`` / ``HTTP_PROXY`` (by scheme) or
    ``ALL_PROXY``, unless ``NO_PROXY`` exempts its host; any case, as curl reads them.

    Resolved once per adapter, not per call (looking them up on every request, as aiohttp's
    ``trust_env`` did, was measured at a third of ``llm-edge up``'s CPU per miss).
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
    context = httpx.create_ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


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


async def read_reply(response: Response) -> UpstreamReply:
    """Read ``response`` to its end (its rate-limit headers noted)."""
    _note(response)
    body = await response.read()
    return UpstreamReply(response.status, response.reason, response.headers, body)


#: How much of a body that is not an event stream is kept for the error message.
UNEXPECTED_BODY_SHOWN = 300


async def expect_event_stream(response: Response) -> None:
    """Refuse a streamed answer that is not ``text/event-stream`` (its rate-limit headers
    noted).

    An HTML error page or a JSON body read as SSE holds no ``data:`` line: it would pass for
    an empty stream that succeeded.

    Raises:
        UnexpectedBody: naming the content type and the start of the body.
    """
    _note(response)
    await expect_content_type(response, "text/event-stream", "an event stream")


async def expect_content_type(response: Response, content_type: str, expected: str) -> None:
    """Refuse a streamed answer whose content type is not ``content_type``.

    Raises:
        UnexpectedBody: ``expected <expected>, got <content type>: <start of the body>``.
    """
    if response.content_type == content_type:
        return
    start = await response.read_some(UNEXPECTED_BODY_SHOWN)
    raise UnexpectedBody(
        f"expected {expected}, got {response.content_type}: "
        f"{start.decode('utf-8', errors='replace')}"
    )
