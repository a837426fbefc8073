"""Anthropic Messages API upstream: OpenAI-shaped requests in, OpenAI-shaped answers out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from opentelemetry.trace import SpanKind

from edge_runtime.tracing import inject, span
from schemas import ChatCompletionChunk, headers
from workers.anthropic_translate import (
    StreamTranslator,
    completion_from_anthropic,
    to_anthropic_request,
)
from workers.base import ProviderRequest
from workers.config import ProviderConfig
from workers.errors import (
    ErrorKind,
    ProviderError,
    UnexpectedBody,
    kind_for_status,
    transport_error,
)
from workers.h1 import TransportError, UpstreamClient
from workers.openai import parse_retry_after
from workers.sse import aiter_sse
from workers.upstream_http import UpstreamReply, expect_event_stream, read_reply

__all__ = ["ANTHROPIC_VERSION", "AnthropicProvider"]

#: The ``anthropic-version`` header sent upstream.
ANTHROPIC_VERSION = "2023-06-01"

_encoder = msgspec.json.Encoder()
_json = msgspec.json.Decoder(dict[str, Any])

#: Anthropic error ``type`` -> our kind (the status decides when the type is unknown).
_ERROR_TYPES = {
    "invalid_request_error": ErrorKind.BAD_REQUEST,
    "authentication_error": ErrorKind.AUTHENTICATION,
    "permission_error": ErrorKind.AUTHENTICATION,
    "not_found_error": ErrorKind.BAD_REQUEST,
    "request_too_large": ErrorKind.BAD_REQUEST,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "api_error": ErrorKind.UNAVAILABLE,
    "overloaded_error": ErrorKind.UNAVAILABLE,
    "timeout_error": ErrorKind.TIMEOUT,
}


class AnthropicProvider:
    """Chat completions served by the Messages API.

    Args:
        config: the provider's settings (``base_url`` defaults to Anthropic's ``/v1``).
        client: a pooled session.
        api_key: sent as ``x-api-key``; never logged.
    """

    def __init__(
        self,
        config: ProviderConfig,
        client: UpstreamClient,
        api_key: str | None,
        proxy: str | None = None,
    ) -> None:
        self.name = config.name
        self._config = config
        self._client = client
        self._proxy = proxy
        self._api_key = api_key
        self._url = f"{config.base_url}/messages"
        self._headers = {
            "content-type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
            **config.headers,
        }
        if api_key:
            self._headers["x-api-key"] = api_key

    def _body(self, request: ProviderRequest, *, stream: bool) -> bytes:
        return _encoder.encode(
            to_anthropic_request(request.chat, request.upstream_model, stream=stream)
        )

    def _request_headers(self, request: ProviderRequest) -> dict[str, str]:
        outgoing = dict(self._headers)
        if request.request_id:  # Anthropic documents no client id header: ours, for its logs
            outgoing[headers.REQUEST_ID] = request.request_id
        inject(outgoing)  # the upstream call joins the request's trace
        return outgoing

    async def complete(self, request: ProviderRequest) -> bytes:
        """POST ``/messages``; return an OpenAI ``chat.completion``."""
        timeout = min(request.timeout_s, self._config.timeout_s)
        try:
            with span(
                "upstream POST", kind=SpanKind.CLIENT, attributes={"llm.provider": self.name}
            ):
                async with self._client.post(
                    self._url,
                    data=self._body(request, stream=False),
                    headers=self._request_headers(request),
                    timeout=timeout,
                    proxy=self._proxy,
                ) as response:
                    reply = await read_reply(response)
        except TransportError as exc:
            raise self._error(exc) from exc
        if reply.status >= 400:
            raise self._error(reply)
        try:
            completion = completion_from_anthropic(_json.decode(reply.body), int(time.time()))
        except (msgspec.MsgspecError, ValueError, TypeError) as exc:
            raise self._error(exc) from exc
        return _encoder.encode(completion)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        """POST with ``stream: true``; translate each event into OpenAI chunks.

        Raises:
            ProviderError: ``invalid_response`` for a body that is not an event stream, or one
                that closes without ``message_stop`` (its answer may be cut short).
        """
        timeout = min(request.timeout_s, self._config.timeout_s)
        translator = StreamTranslator(created=int(time.time()))
        try:
            async with self._client.post(
                self._url,
                data=self._body(request, stream=True),
                headers=self._request_headers(request),
                timeout=timeout,
                proxy=self._proxy,
            ) as response:
                if response.status >= 400:
                    raise self._error(await read_reply(response))
                await expect_event_stream(response)
                async for event in aiter_sse(response.iter_chunks()):
                    data = _json.decode(event.data)
                    if data.get("type") == "error":
                        raise self._event_error(data)
                    for chunk in translator.feed(data):
                        yield chunk
                    if data.get("type") == "message_stop":
                        return
        except (TransportError, UnexpectedBody) as exc:
            raise self._error(exc) from exc
        except msgspec.MsgspecError as exc:
            raise self._error(exc) from exc
        # closed cleanly but cut short: the answer so far may be partial
        raise self._error(UnexpectedBody("the event stream ended without `message_stop`"))

    def _event_error(self, data: dict[str, Any], status: int | None = None) -> ProviderError:
        error = data.get("error") or {}
        kind = _ERROR_TYPES.get(str(error.get("type")))
        if kind is None:
            kind = kind_for_status(status) if status else ErrorKind.UNAVAILABLE
        return ProviderError(
            self.name, kind, self._scrub(str(error.get("message", error))), upstream_status=status
        )

    def _error(self, failure: UpstreamReply | Exception) -> ProviderError:
        """Map every upstream failure to a :class:`ProviderError` (the only place that does)."""
        if isinstance(failure, Exception):
            error = transport_error(self.name, failure)
            return ProviderError(self.name, error.kind, self._scrub(error.message))
        try:
            error = self._event_error(_json.decode(failure.body), failure.status)
        except msgspec.MsgspecError:
            error = ProviderError(
                self.name,
                kind_for_status(failure.status),
                self._scrub(failure.text[:300]),
                upstream_status=failure.status,
            )
        if failure.status == 529:  # overloaded: retryable whatever the body says
            error.kind = ErrorKind.UNAVAILABLE
        error.retry_after = parse_retry_after(failure.headers)
        return error

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    async def aclose(self) -> None:
        """The client belongs to the caller."""
