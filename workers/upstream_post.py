"""One provider's POSTs to its upstream: a whole answer, or a stream to read.

Every adapter calls its upstream the same way: its pooled client and proxy, the call's
timeout capped by the provider's, the trace carried in the headers (injected inside the
``upstream POST`` span, so the upstream's side joins it), and every failure (a transport
error, an error status, an answer that is not what was asked for) handed to the adapter's
one error-mapping function. :class:`UpstreamPoster` does that once; the adapters keep what
differs between them: URL, body, headers, how an answer is read and how an error is mapped.

The stream is a small hand-written context manager rather than an
``@asynccontextmanager`` generator: it sits on every streamed call, whose whole cost in
:mod:`workers.h1` is about 0.06 ms of CPU.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType

from opentelemetry.trace import SpanKind

from edge_runtime.tracing import inject, span
from workers.config import ProviderConfig
from workers.errors import ProviderError, UnexpectedBody
from workers.h1 import Call, Response, TransportError, UpstreamClient
from workers.upstream_http import UpstreamReply, expect_event_stream, read_reply

__all__ = ["ErrorMap", "UpstreamPoster", "UpstreamStream"]

#: An adapter's one error-mapping function: an error answer or a failure, as ours.
ErrorMap = Callable[[UpstreamReply | Exception], ProviderError]
#: What refuses a streamed answer's start (its content type): raises UnexpectedBody.
Expect = Callable[[Response], Awaitable[None]]


class UpstreamPoster:
    """POSTs to one provider's upstream.

    Args:
        config: the provider's settings (its name, and the timeout that caps every call's).
        client: the worker's pooled client.
        proxy: the proxy for the upstream, if any.
        error: the adapter's error mapping; what it returns is raised.
        unreadable: more exceptions that reading a stream may raise (a decoder's, a
            translator's) which are mapped through ``error`` too.
    """

    __slots__ = ("_attributes", "_client", "_error", "_proxy", "_stream_failures", "_timeout_s")

    def __init__(
        self,
        config: ProviderConfig,
        client: UpstreamClient,
        proxy: str | None,
        error: ErrorMap,
        *,
        unreadable: tuple[type[Exception], ...] = (),
    ) -> None:
        self._client = client
        self._proxy = proxy
        self._error = error
        self._timeout_s = config.timeout_s
        self._attributes = {"llm.provider": config.name}
        self._stream_failures: tuple[type[Exception], ...] = (
            TransportError,
            UnexpectedBody,
            *unreadable,
        )

    @property
    def client(self) -> UpstreamClient:
        """The pooled session the calls go through (for a provider's other calls: batches)."""
        return self._client

    @property
    def proxy(self) -> str | None:
        """The proxy the calls go through."""
        return self._proxy

    async def whole(
        self,
        url: str,
        body: bytes,
        headers: Awaitable[dict[str, str]],
        timeout_s: float,
        *,
        method: str = "POST",
    ) -> UpstreamReply:
        """POST ``body`` (or ``method`` it) and read the whole answer.

        Args:
            url: where to.
            body: the request body.
            headers: the call's headers (awaited inside the call's span; the trace is added).
            timeout_s: the request's own bound (the provider's caps it).
            method: another method than ``POST`` (``GET`` a response the upstream runs).

        Raises:
            ProviderError: a transport failure or an error status, as ``error`` maps it.
        """
        try:
            with span(f"upstream {method}", kind=SpanKind.CLIENT, attributes=self._attributes):
                outgoing = await headers
                inject(outgoing)  # the upstream call joins the request's trace
                async with self._client.request(
                    method,
                    url,
                    data=body,
                    headers=outgoing,
                    timeout=min(timeout_s, self._timeout_s),
                    proxy=self._proxy,
                ) as response:
                    reply = await read_reply(response)
        except TransportError as exc:
            raise self._error(exc) from exc
        if reply.status >= 400:
            raise self._error(reply)
        return reply

    def stream(
        self,
        url: str,
        body: bytes,
        headers: Awaitable[dict[str, str]],
        timeout_s: float,
        *,
        expect: Expect = expect_event_stream,
    ) -> UpstreamStream:
        """POST ``body`` for a streamed answer, to use as ``async with ... as response``.

        An error status, an answer ``expect`` refuses, and a transport failure or an
        ``unreadable`` exception while the block reads are raised as ``error`` maps them;
        leaving the block early closes the upstream connection.
        """
        return UpstreamStream(
            self,
            url,
            body=body,
            headers=headers,
            timeout_s=min(timeout_s, self._timeout_s),
            expect=expect,
        )


class UpstreamStream:
    """One streamed call in flight: ``async with`` gives its :class:`Response`, checked."""

    __slots__ = ("_body", "_call", "_expect", "_headers", "_poster", "_timeout_s", "_url")

    def __init__(
        self,
        poster: UpstreamPoster,
        url: str,
        *,
        body: bytes,
        headers: Awaitable[dict[str, str]],
        timeout_s: float,
        expect: Expect,
    ) -> None:
        self._poster = poster
        self._url = url
        self._body = body
        self._headers = headers
        self._timeout_s = timeout_s
        self._expect = expect
        self._call: Call | None = None

    async def __aenter__(self) -> Response:
        poster = self._poster
        try:
            outgoing = await self._headers
            inject(outgoing)
            call = poster._client.post(
                self._url,
                data=self._body,
                headers=outgoing,
                timeout=self._timeout_s,
                proxy=poster._proxy,
            )
            response = await call.__aenter__()
        except poster._stream_failures as exc:
            raise poster._error(exc) from exc
        self._call = call
        try:
            await self._check(response)
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return response

    async def _check(self, response: Response) -> None:
        """Refuse an error status and an answer ``expect`` refuses."""
        if response.status >= 400:
            raise self._poster._error(await read_reply(response))
        await self._expect(response)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        call, self._call = self._call, None
        if call is not None:
            await call.__aexit__(exc_type, exc, tb)
        if isinstance(exc, self._poster._stream_failures):
            raise self._poster._error(exc) from exc
