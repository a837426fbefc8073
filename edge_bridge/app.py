"""The HTTP bridge: an OpenAI-compatible ASGI app that turns HTTP into NATS request/reply.

It holds no business logic: status codes, bodies and cache headers all come from the broker.
Written against bare ASGI (no framework) because it routes a few paths and sits on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.nuid import NUID
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from edge_bridge.asgi import nats_headers as forwarded_headers
from edge_bridge.asgi import read_body
from edge_bridge.batches import BatchRoutes
from edge_bridge.console import ConsoleRoutes
from edge_bridge.responses import ResponseRoutes, resumed
from edge_bridge.retry import Reconnects, Relay
from edge_client.chat import ChatStreamError
from edge_client.request import DEFAULT_RETRY, RetryPolicy
from edge_runtime.inbox import Inbox
from edge_runtime.tracing import inject, span
from schemas import error_body, headers, subjects
from schemas.errors import anthropic_error

__all__ = ["DEFAULT_HTTP_TIMEOUT_S", "DEFAULT_MAX_REQUEST_BYTES", "BridgeApp"]

log = logging.getLogger("llm_edge.bridge")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_HTTP_TIMEOUT_S = 600.0
#: The largest chat or messages body the bridge reads: the brokers' default request limit.
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
PING_TIMEOUT_S = 2.0

#: Reply headers copied to the HTTP response.
_EXPOSE = (
    headers.CACHE,
    headers.CACHE_KEY,
    headers.CACHED_INPUTS,
    headers.REQUEST_ID,
    headers.PROVIDER,
    headers.DEPLOYMENT,
    headers.ATTEMPTS,
    headers.MODEL,
    headers.FALLBACK,
    headers.RETRY_AFTER,
    headers.COALESCED,
    headers.COST,
    headers.COST_SAVED,
    headers.SERVICE_TIER,
    headers.SEMANTIC_SIMILARITY,
    headers.QUEUE_MS,
    headers.TOKEN_COUNT,
    *headers.RATELIMIT,
)
_JSON = (b"content-type", b"application/json")
_SSE = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def _exposed(reply_headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(n.lower().encode(), reply_headers[n].encode()) for n in _EXPOSE if n in reply_headers]


#: Requests answered faster than this never pay for a disconnect watcher (a client that
#: leaves earlier is noticed when the watcher starts: its request is cancelled this late).
WATCH_AFTER_S = 0.5


class _DisconnectWatch:
    """Cancels the current task if the client disconnects (the body has been read by then).

    The watcher task starts only after :data:`WATCH_AFTER_S`, so fast replies cost one timer.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._owner = asyncio.current_task()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.client_left = False
        self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        self._task = asyncio.ensure_future(self._wait())

    async def _wait(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if not self._closed and self._owner is not None:
            self.client_left = True
            self._owner.cancel()

    def close(self) -> None:
        """The request is over: stop watching."""
        self._closed = True
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


@dataclass(frozen=True, slots=True)
class _Api:
    """An HTTP API the bridge serves over one NATS subject."""

    subject: str
    done: bytes  # what closes a successful stream (OpenAI: ``data: [DONE]``)
    anthropic: bool = False


_CHAT = _Api(subjects.CHAT, b"data: [DONE]\n\n")
_MESSAGES = _Api(subjects.MESSAGES, b"", anthropic=True)
_COUNT_TOKENS = _Api(subjects.COUNT_TOKENS, b"", anthropic=True)
_EMBEDDINGS = _Api(subjects.EMBEDDINGS, b"")  # never streamed: one JSON answer
_RESPONSES = _Api(subjects.RESPONSES, b"")  # its stream ends with its own last event
_RESPONSES_RESUMED = _Api(subjects.RESPONSES_GET, b"")  # a background stream followed again
_ROUTES = {
    "/v1/chat/completions": _CHAT,
    "/v1/messages": _MESSAGES,
    "/v1/messages/count_tokens": _COUNT_TOKENS,
    "/v1/embeddings": _EMBEDDINGS,
    "/v1/responses": _RESPONSES,
}


class BridgeApp:
    """The ASGI application.

    Args:
        nc: connected NATS client.
        timeout_s: upper bound on one HTTP request (the broker applies model deadlines).
        retry: how chat and messages requests are sent again when an attempt was lost
            (see :mod:`edge_bridge.retry`).
        reconnects: the connection's reconnect signal (a reply lost to a reconnect is then
            retried at once).
        max_request_bytes: the largest chat, messages or embeddings body read (413 above
            it); the NATS server's ``max_payload`` caps it too.
        console_hosts: host names (beside loopback ones) the console answers to without
            keys, such as the name of an SSH tunnel's end.
    """

    def __init__(
        self,
        nc: Client,
        *,
        timeout_s: float = DEFAULT_HTTP_TIMEOUT_S,
        retry: RetryPolicy = DEFAULT_RETRY,
        reconnects: Reconnects | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        console_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self._nc = nc
        self._max_body = max_request_bytes
        self._timeout = timeout_s
        self._nuid = NUID()
        self._batches = BatchRoutes(nc)
        self._responses = ResponseRoutes(nc)
        self._console = ConsoleRoutes(nc, public_hosts=console_hosts)
        self._relay = Relay(nc, Inbox(nc), timeout_s=timeout_s, policy=retry, reconnects=reconnects)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"].rstrip("/")
        api = _ROUTES.get(path)
        too_long = headers.oversized(forwarded_headers(scope))
        if too_long is not None:  # refused before any route could publish it (see MAX_VALUE_BYTES)
            limit = headers.MAX_VALUE_BYTES[too_long]
            message = f"the {too_long} header is over its {limit}-byte limit"
            code = "request_header_fields_too_large"
            await _error(send, 431, code, message, anthropic=api is not None and api.anthropic)
            return
        if await self._resource(path, scope, receive, send):
            return
        if api is not None and method == "POST":
            await self._forward(api, scope, receive, send)
        elif (method, path) == ("GET", "/v1/models"):
            await self._models(scope, send)
        elif (method, path) == ("GET", "/metrics"):
            body = generate_latest(REGISTRY)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
        elif (method, path) == ("GET", "/health"):
            await self._health(send)
        elif (method, path) == ("GET", "/ready"):
            await self._ready(send)
        elif path == "/console" or path.startswith("/console/"):
            await self._console.handle(scope, receive, send)
        elif api is not None or path in {"/v1/models", "/health", "/ready", "/metrics"}:
            await _error(send, 405, "method_not_allowed", f"{method} is not allowed on {path}")
        else:
            await _error(send, 404, "not_found", f"no route for {method} {path}")

    async def _resource(self, path: str, scope: Scope, receive: Receive, send: Send) -> bool:
        """Serve files, batches and stored responses; ``False`` for any other path."""
        if path.startswith(("/v1/files", "/v1/batches")):
            return await self._batches.handle(scope, receive, send)
        if path.startswith("/v1/responses/"):
            query = resumed(scope)
            if query is None:
                return await self._responses.handle(scope, send)
            nats_headers = forwarded_headers(scope)
            nats_headers.setdefault(headers.REQUEST_ID, self._nuid.next().decode())
            await self._relay_answer(_RESPONSES_RESUMED, query, nats_headers, send)
            return True
        return False

    async def _forward(self, api: _Api, scope: Scope, receive: Receive, send: Send) -> None:
        limit = min(self._max_body, self._nc.max_payload - headers.HEADER_ROOM)
        body = await read_body(receive, limit)
        if body is None:
            message = f"request body is over the {limit}-byte limit"
            await _error(send, 413, "request_too_large", message, anthropic=api.anthropic)
            return
        nats_headers = forwarded_headers(scope)
        nats_headers.setdefault(headers.REQUEST_ID, self._nuid.next().decode())
        watch = _DisconnectWatch(receive)
        try:
            with span(f"POST {api.subject}", parent=nats_headers, kind=SpanKind.SERVER):
                inject(nats_headers)  # the broker's span is this one's child
                await self._relay_answer(api, body, nats_headers, send)
        except asyncio.CancelledError:
            if not watch.client_left:
                raise
            # the client left: the relay was stopped and has cancelled the request
        finally:
            watch.close()

    async def _relay_answer(
        self, api: _Api, body: bytes, nats_headers: dict[str, str], send: Send
    ) -> None:
        """The answer as the API's own servers give it: one JSON response, or server-sent
        events when the broker streams (the broker, which decodes the body anyway, tells
        which by its first message's ``Llm-Stream``: the bridge never parses a body, a
        4 MiB one took 1.2-1.9 ms to search). Attempts lost to a NATS failover are sent
        again until the first message (:mod:`edge_bridge.retry`), never once a byte was
        sent to the caller; each has a reply subject of the bridge's own inbox, so
        cancelling the request (the client left) proves the cancel is the caller's.

        A stream reaches the caller whole, in order, and ends with its last event (``[DONE]``
        or Anthropic's ``message_stop``), or it ends with an error event: a message missing
        or out of order (``Llm-Seq``) or the deadline passing after the stream began is
        never a 200 that silently lacks its content.
        """
        started = False
        expected = 0
        messages = self._relay.stream(api.subject, body, nats_headers)
        try:
            async with contextlib.aclosing(messages):
                async for msg in messages:
                    hdrs = msg.headers or {}
                    kind = hdrs.get(headers.STREAM)
                    if kind in {"chunk", "end"}:
                        if hdrs.get(headers.SEQ, str(expected)) != str(expected):
                            message = f"stream message {expected} was lost or out of order"
                            await _stream_failed(
                                send, api, started, 502, code="stream_gap", message=message
                            )
                            return  # leaving the relay cancels the request upstream
                        expected += 1
                    if not started and kind in {"chunk", "end"}:
                        await send(
                            {
                                "type": "http.response.start",
                                "status": 200,
                                "headers": [*_SSE, *_exposed(hdrs)],
                            }
                        )
                        started = True
                    if kind == "chunk":
                        await _sse(send, msg.data, hdrs, more=True)
                    elif kind == "end":
                        await send({"type": "http.response.body", "body": api.done})
                    elif started:  # an error after the stream began: one error event, then close
                        await _sse(send, msg.data, hdrs, more=False)
                    else:
                        status = int(hdrs.get(headers.STATUS, "500"))
                        await _respond(send, status, msg.data, _exposed(hdrs))
        except ChatStreamError as exc:
            await _error(
                send,
                exc.status,
                exc.code or "no_broker",
                exc.message,
                retry_after="1",
                anthropic=api.anthropic,
            )
        except TimeoutError:
            message = "the broker did not answer in time"
            await _stream_failed(send, api, started, 504, code="deadline_exceeded", message=message)

    async def _models(self, scope: Scope, send: Send) -> None:
        auth = forwarded_headers(scope).get(headers.AUTHORIZATION)
        try:
            answer = await self._nc.request(
                subjects.MODELS,
                b"",
                timeout=PING_TIMEOUT_S,
                headers={headers.AUTHORIZATION: auth} if auth else None,
            )
        except (NoRespondersError, NatsTimeout):
            await _error(send, 503, "no_broker", "no broker is running", retry_after="1")
            return
        await _respond(send, int((answer.headers or {}).get(headers.STATUS, "200")), answer.data)

    async def _health(self, send: Send) -> None:
        """200 while the bridge can serve; 503 once its NATS connection is closed for good
        (a reconnecting connection still counts as alive: requests wait for it)."""
        if self._nc.is_closed:
            await _error(send, 503, "nats_closed", "the NATS connection is closed")
            return
        await _respond(send, 200, b'{"status":"ok"}')

    async def _ready(self, send: Send) -> None:
        if not self._nc.is_connected:
            await _error(send, 503, "nats_disconnected", "not connected to NATS")
            return
        try:
            await self._nc.request(subjects.BROKER_PING, b"", timeout=PING_TIMEOUT_S)
        except (NoRespondersError, NatsTimeout):
            await _error(send, 503, "no_broker", "no broker answers")
            return
        await _respond(send, 200, b'{"status":"ready"}')


async def _sse(send: Send, data: bytes, hdrs: dict[str, str], *, more: bool) -> None:
    event = hdrs.get(headers.EVENT)
    prefix = b"event: " + event.encode() + b"\ndata: " if event else b"data: "
    await send({"type": "http.response.body", "more_body": more, "body": prefix + data + b"\n\n"})


async def _stream_failed(
    send: Send, api: _Api, started: bool, status: int, *, code: str, message: str
) -> None:
    """End a stream that failed: one error event when it had begun (its 200 is sent), else
    an error response."""
    if not started:
        await _error(send, status, code, message, anthropic=api.anthropic)
        return
    if api.anthropic:
        event = b"event: error\ndata: " + anthropic_error(status, message)
    else:
        event = b"data: " + error_body(status, code, message)
    await send({"type": "http.response.body", "body": event + b"\n\n"})


async def _respond(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    response_headers = [_JSON, (b"content-length", str(len(body)).encode())]
    if extra:
        response_headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})


async def _error(
    send: Send,
    status: int,
    code: str,
    message: str,
    retry_after: str | None = None,
    *,
    anthropic: bool = False,
) -> None:
    extra = [(b"retry-after", retry_after.encode())] if retry_after else None
    body = anthropic_error(status, message) if anthropic else error_body(status, code, message)
    await _respond(send, status, body, extra)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
