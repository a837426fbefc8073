"""``/v1/responses/{id}`` on the bridge: stored responses, forwarded to the brokers'
``llm.responses.get|delete|cancel|input_items`` with the caller's ``Authorization`` (who may
see a response is the brokers' business). Creating a response (``POST /v1/responses``) is a
request like chat's (:mod:`edge_bridge.app`), and so is following a streamed background
response again (``GET /v1/responses/{id}?stream=true``: :func:`resumed` is its query)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import msgspec
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from edge_bridge.asgi import nats_headers
from schemas import error_body, headers, subjects

__all__ = ["ASK_TIMEOUT_S", "ResponseRoutes", "resumed"]

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: The longest a broker may take to answer one of these (each is a KV read or write or two).
ASK_TIMEOUT_S = 15.0
_PATH = re.compile(r"^/v1/responses/([^/]+)(/cancel|/input_items)?$")
#: (method, suffix) -> subject
_OPS = {
    ("GET", None): subjects.RESPONSES_GET,
    ("DELETE", None): subjects.RESPONSES_DELETE,
    ("POST", "/cancel"): subjects.RESPONSES_CANCEL,
    ("GET", "/input_items"): subjects.RESPONSES_INPUT_ITEMS,
}
_encoder = msgspec.json.Encoder()
#: The broker's reply headers a caller gets (as ``x-request-id`` ...: HTTP lower-cases them).
_EXPOSE = (headers.REQUEST_ID, headers.COST, headers.SERVICE_TIER)


async def _json(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    response_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})


def resumed(scope: Scope) -> bytes | None:
    """The ``llm.responses.get`` query of ``GET /v1/responses/{id}?stream=true`` (a streamed
    background response followed again, after ``starting_after``); ``None`` for any other
    request, or a malformed ``starting_after`` (the broker is then asked for the response
    as a whole and the caller learns nothing is streamed)."""
    match = _PATH.match(scope["path"].rstrip("/"))
    if scope["method"] != "GET" or match is None or match.group(2) is not None:
        return None
    params = parse_qs(scope.get("query_string", b"").decode())
    if params.get("stream", ["false"])[0].lower() != "true":
        return None
    query: dict[str, Any] = {"id": match.group(1), "stream": True}
    if "starting_after" in params:
        try:
            query["starting_after"] = int(params["starting_after"][0])
        except ValueError:
            return None
    return _encoder.encode(query)


class ResponseRoutes:
    """The stored-response routes.

    Args:
        nc: the bridge's connection.
    """

    def __init__(self, nc: Client) -> None:
        self._nc = nc

    async def handle(self, scope: Scope, send: Send) -> bool:
        """Serve the request if it is ours; ``False`` otherwise."""
        match = _PATH.match(scope["path"].rstrip("/"))
        if match is None:
            return False
        subject = _OPS.get((scope["method"], match.group(2)))
        if subject is None:
            message = f"{scope['method']} is not allowed on {scope['path']}"
            await _json(send, 405, error_body(405, "method_not_allowed", message), [])
            return True
        query: dict[str, Any] = {"id": match.group(1)}
        if subject == subjects.RESPONSES_INPUT_ITEMS:
            params = parse_qs(scope.get("query_string", b"").decode())
            for name in ("after", "order"):
                if name in params:
                    query[name] = params[name][0]
            if "limit" in params:
                try:
                    query["limit"] = int(params["limit"][0])
                except ValueError:
                    body = error_body(400, "invalid_request", "limit must be an integer")
                    await _json(send, 400, body, [])
                    return True
        forwarded = nats_headers(scope)
        passed = {
            k: forwarded[k] for k in (headers.AUTHORIZATION, headers.REQUEST_ID) if k in forwarded
        }
        try:
            answer = await self._nc.request(
                subject, _encoder.encode(query), timeout=ASK_TIMEOUT_S, headers=passed or None
            )
        except (NoRespondersError, NatsTimeout):
            body = error_body(503, "no_broker", "no broker answered")
            await _json(send, 503, body, [(b"retry-after", b"1")])
            return True
        hdrs = answer.headers or {}
        extra = [(name.lower().encode(), hdrs[name].encode()) for name in _EXPOSE if name in hdrs]
        await _json(send, int(hdrs.get(headers.STATUS, "200")), answer.data, extra)
        return True
