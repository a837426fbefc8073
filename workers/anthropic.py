"""Anthropic Messages API upstream.

Two ways in. The Messages API itself (``llm.messages``, token counts): the caller's body goes
upstream as it was sent (the model name aside; byte for byte when the names agree) with the
caller's ``anthropic-version`` and ``anthropic-beta``, and the answer comes back as the
upstream gave it, whole or event by event. Chat completions (``llm.chat``): translated to a
Messages request (:mod:`workers.chat_to_messages`, a 400 naming what cannot be carried) and
back (:mod:`workers.anthropic_translate`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import msgspec

from schemas import ChatCompletionChunk, headers
from schemas.codec import (
    KNOWN_REQUEST_FIELDS,
    Closure,
    decode_closed_chat_request,
    unknown_nested_field,
)
from workers.anthropic_translate import StreamTranslator, completion_from_anthropic
from workers.base import Event, ProviderRequest
from workers.batch_anthropic import AnthropicBatches
from workers.batches import BatchHttp
from workers.chat_to_messages import to_anthropic_request
from workers.config import ProviderConfig
from workers.errors import (
    CannotCarry,
    ErrorKind,
    ProviderError,
    UnexpectedBody,
    kind_for_status,
    transport_error,
)
from workers.h1 import UpstreamClient
from workers.openai import parse_retry_after
from workers.sse import aiter_sse
from workers.upstream_http import UpstreamReply
from workers.upstream_post import UpstreamPoster

__all__ = ["ANTHROPIC_VERSION", "AnthropicProvider", "anthropic_error_kind"]

#: The ``anthropic-version`` header sent upstream.
ANTHROPIC_VERSION = "2023-06-01"

_encoder = msgspec.json.Encoder()
_json = msgspec.json.Decoder(dict[str, Any])
_name = msgspec.json.Decoder(str)


class _Message(msgspec.Struct):
    """What a whole Messages answer must be (nothing else of it is decoded)."""

    type: Literal["message"]


class _Count(msgspec.Struct):
    """What a token count must be."""

    input_tokens: int


_message_check = msgspec.json.Decoder(_Message)
_count_check = msgspec.json.Decoder(_Count)

#: Anthropic error ``type`` -> our kind (the status decides when the type is unknown); Claude
#: on Vertex AI answers with the same types.
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


def anthropic_error_kind(error_type: object, status: int | None) -> ErrorKind:
    """Our kind for an Anthropic error ``type``, else for its HTTP status (``None`` inside a
    stream); a 529 (overloaded) is retryable whatever the body says."""
    if status == 529:
        return ErrorKind.UNAVAILABLE
    kind = _ERROR_TYPES.get(str(error_type))
    if kind is not None:
        return kind
    return kind_for_status(status) if status else ErrorKind.UNAVAILABLE


def _refuse_nested(body: bytes) -> None:
    """Refuse a chat body's first nested field the contract does not name.

    Raises:
        CannotCarry: naming it.
    """
    problem = unknown_nested_field(body) or "unknown field"
    where = problem.rpartition("at `$.")[2].rstrip("`") if "at `$." in problem else "messages"
    raise CannotCarry(where, problem.partition(" - at ")[0])


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
        self._upstream = UpstreamPoster(
            config, client, proxy, self._error, unreadable=(msgspec.MsgspecError,)
        )
        self._api_key = api_key
        self._base_url = config.base_url
        self._url = f"{config.base_url}/messages"
        self._count_url = f"{config.base_url}/messages/count_tokens"
        self._headers = {
            "content-type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
            **config.headers,
        }
        if api_key:
            self._headers["x-api-key"] = api_key

    def _body(self, request: ProviderRequest, *, stream: bool) -> bytes:
        """The Messages body for a chat request.

        Raises:
            ProviderError: ``bad_request`` naming a field the Messages API cannot carry.
            msgspec.MsgspecError: the body is not a chat request.
        """
        chat, closure = decode_closed_chat_request(request.body)
        try:
            if closure is Closure.OPEN:  # a nested field the contract does not name
                _refuse_nested(request.body)
            extras = {}
            if closure is not Closure.CLOSED:
                extras = {k: v for k, v in request.fields.items() if k not in KNOWN_REQUEST_FIELDS}
            model = request.upstream_model
            body = to_anthropic_request(chat, model, stream=stream, extras=extras)
        except CannotCarry as exc:
            raise exc.refusal(self.name, "the Anthropic Messages API") from None
        return _encoder.encode(body)

    def _native_body(self, request: ProviderRequest) -> bytes:
        """The caller's Messages body with the upstream model: the body itself when the names
        agree; else its top-level fields re-joined, each the caller's raw JSON."""
        raw = request.fields.get("model")
        model = request.upstream_model
        if raw is not None and _name.decode(raw) == model:
            return request.body
        body = dict(request.fields)
        body["model"] = msgspec.Raw(_encoder.encode(model))
        return _encoder.encode(body)

    async def _request_headers(self, request: ProviderRequest) -> dict[str, str]:
        outgoing = dict(self._headers)
        for name, given in request.upstream_headers.items():  # the caller's version and betas
            mine = next((k for k in outgoing if k.lower() == name), None)
            value = given
            if mine is not None and name == headers.ANTHROPIC_BETA:
                value = f"{outgoing.pop(mine)},{given}"  # configured betas and the caller's
            elif mine is not None:
                del outgoing[mine]
            outgoing[name] = value
        if request.request_id:  # Anthropic documents no client id header: ours, for its logs
            outgoing[headers.REQUEST_ID] = request.request_id
        return outgoing

    async def _post(self, url: str, body: bytes, request: ProviderRequest) -> UpstreamReply:
        """One whole POST; an error status raised as a :class:`ProviderError`."""
        return await self._upstream.whole(
            url, body, self._request_headers(request), request.timeout_s
        )

    def batches(self) -> AnthropicBatches:
        """Anthropic's Message Batches, lines translated as :meth:`complete` translates."""
        upstream = self._upstream
        http = BatchHttp(
            self._base_url, upstream.client, self._headers, upstream.proxy, self._error
        )

        def translate(chat: bytes, model: str) -> bytes:
            return self._body(ProviderRequest(chat, upstream_model=model), stream=False)

        return AnthropicBatches(http, translate)

    async def complete(self, request: ProviderRequest) -> bytes:
        """POST ``/messages``; return an OpenAI ``chat.completion``."""
        reply = await self._post(self._url, self._body(request, stream=False), request)
        try:
            completion = completion_from_anthropic(_json.decode(reply.body), int(time.time()))
        except (msgspec.MsgspecError, ValueError, TypeError) as exc:
            raise self._error(exc) from exc
        return _encoder.encode(completion)

    async def complete_messages(self, request: ProviderRequest) -> bytes:
        """POST the caller's Messages request; return the upstream's ``message`` as it is."""
        reply = await self._post(self._url, self._native_body(request), request)
        try:
            _message_check.decode(reply.body)
        except msgspec.MsgspecError as exc:
            raise self._error(exc) from exc
        return reply.body

    async def count_tokens(self, request: ProviderRequest) -> tuple[bytes, bool]:
        """POST ``/messages/count_tokens``; the upstream's count as it is."""
        reply = await self._post(self._count_url, self._native_body(request), request)
        try:
            _count_check.decode(reply.body)
        except msgspec.MsgspecError as exc:
            raise self._error(exc) from exc
        return reply.body, True

    async def stream_messages(self, request: ProviderRequest) -> AsyncIterator[Event]:
        """POST the caller's streamed Messages request; yield every event as the upstream
        sent it (``ping`` included), through ``message_stop``.

        Raises:
            ProviderError: an ``error`` event (its type kept), a body that is not an event
                stream, or one that closes without ``message_stop``.
        """
        async with self._upstream.stream(
            self._url, self._native_body(request), self._request_headers(request), request.timeout_s
        ) as response:
            async for event in aiter_sse(response.iter_chunks()):
                name = event.event
                if name == "message":  # an event without its `event:` line: its type
                    name = str(_json.decode(event.data).get("type") or name)
                if name == "error":
                    raise self._event_error(_json.decode(event.data))
                yield Event(name, event.data.encode())
                if name == "message_stop":
                    return
        raise self._error(UnexpectedBody("the event stream ended without `message_stop`"))

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        """POST with ``stream: true``; translate each event into OpenAI chunks.

        Raises:
            ProviderError: ``invalid_response`` for a body that is not an event stream, or one
                that closes without ``message_stop`` (its answer may be cut short).
        """
        translator = StreamTranslator(created=int(time.time()))
        async with self._upstream.stream(
            self._url,
            self._body(request, stream=True),
            self._request_headers(request),
            request.timeout_s,
        ) as response:
            async for event in aiter_sse(response.iter_chunks()):
                data = _json.decode(event.data)
                if data.get("type") == "error":
                    raise self._event_error(data)
                for chunk in translator.feed(data):
                    yield chunk
                if data.get("type") == "message_stop":
                    return
        # closed cleanly but cut short: the answer so far may be partial
        raise self._error(UnexpectedBody("the event stream ended without `message_stop`"))

    def _event_error(self, data: dict[str, Any], status: int | None = None) -> ProviderError:
        error = data.get("error") or {}
        kind_name = error.get("type")
        return ProviderError(
            self.name,
            anthropic_error_kind(kind_name, status),
            self._scrub(str(error.get("message", error))),
            upstream_status=status,
            upstream_type=kind_name if isinstance(kind_name, str) else None,
        )

    def _error(self, failure: UpstreamReply | Exception) -> ProviderError:
        """Map every upstream failure to a :class:`ProviderError` (the only place that does)."""
        if isinstance(failure, Exception):
            return transport_error(self.name, failure, self._scrub)
        try:
            error = self._event_error(_json.decode(failure.body), failure.status)
        except msgspec.MsgspecError:
            error = ProviderError(
                self.name,
                kind_for_status(failure.status),
                self._scrub(failure.text[:300]),
                upstream_status=failure.status,
            )
        error.retry_after = parse_retry_after(failure.headers)
        return error

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    async def aclose(self) -> None:
        """The client belongs to the caller."""
