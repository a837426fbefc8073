"""Gemini upstreams: Google AI Studio (``kind = "gemini"``) and Gemini on Vertex AI
(``kind = "vertex"``, see :mod:`workers.vertex`).

Both take the same ``generateContent`` body and answer the same way
(:mod:`workers.gemini_translate`); they differ in the URL and in how a call is authorized,
which is what :class:`GeminiAuth` hides: AI Studio's key in ``x-goog-api-key``, Vertex AI's
OAuth token in ``authorization``. Streams are ``streamGenerateContent?alt=sse``: one event per
``GenerateContentResponse`` and no terminator, so a stream that closes before every candidate
has its ``finishReason`` is a cut-short answer.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

import msgspec

from schemas import ChatCompletionChunk
from workers.base import ProviderRequest
from workers.batch_gemini import GeminiBatches
from workers.batches import BatchHttp
from workers.config import ProviderConfig
from workers.errors import (
    ErrorKind,
    ProviderError,
    UnexpectedBody,
    kind_for_status,
    transport_error,
)
from workers.gemini_translate import StreamTranslator, completion_from_gemini, to_gemini_request
from workers.h1 import UpstreamClient
from workers.openai import parse_retry_after
from workers.sse import aiter_sse
from workers.upstream_http import UpstreamReply
from workers.upstream_post import UpstreamPoster

__all__ = ["ApiKeyAuth", "GeminiAuth", "GeminiProvider", "google_error"]

_encoder = msgspec.json.Encoder()
_json = msgspec.json.Decoder(dict[str, Any])

#: ``google.rpc.Code`` names (``error.status``) -> our kind; the HTTP status decides otherwise.
_STATUSES = {
    "INVALID_ARGUMENT": ErrorKind.BAD_REQUEST,
    "FAILED_PRECONDITION": ErrorKind.BAD_REQUEST,
    "OUT_OF_RANGE": ErrorKind.BAD_REQUEST,
    "NOT_FOUND": ErrorKind.BAD_REQUEST,
    "ALREADY_EXISTS": ErrorKind.BAD_REQUEST,
    "UNAUTHENTICATED": ErrorKind.AUTHENTICATION,
    "PERMISSION_DENIED": ErrorKind.AUTHENTICATION,
    "RESOURCE_EXHAUSTED": ErrorKind.RATE_LIMITED,
    "UNAVAILABLE": ErrorKind.UNAVAILABLE,
    "INTERNAL": ErrorKind.UNAVAILABLE,
    "UNKNOWN": ErrorKind.UNAVAILABLE,
    "ABORTED": ErrorKind.UNAVAILABLE,
    "DEADLINE_EXCEEDED": ErrorKind.TIMEOUT,
}
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
#: What reading a stream's events may raise besides a transport failure.
_UNREADABLE = (msgspec.MsgspecError, TypeError, AttributeError)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


class GeminiAuth(Protocol):
    """How calls to one Gemini upstream are authorized."""

    async def headers(self) -> Mapping[str, str]:
        """The headers that authorize the next call.

        Raises:
            ProviderError: no credentials could be had (e.g. a token endpoint that failed).
        """
        ...

    def rejected(self) -> None:
        """The upstream refused the credentials (401): do not use them again."""
        ...

    def scrub(self, text: str) -> str:
        """``text`` without any secret of ours in it."""
        ...


class ApiKeyAuth:
    """Google AI Studio: the key in ``x-goog-api-key`` (never in the URL, where logs keep it)."""

    def __init__(self, api_key: str | None) -> None:
        self._key = api_key
        self._headers = {"x-goog-api-key": api_key} if api_key else {}

    @property
    def fixed(self) -> Mapping[str, str]:
        """The key header (it never changes, so calls that want it up front may have it)."""
        return self._headers

    async def headers(self) -> Mapping[str, str]:
        """The key header."""
        return self._headers

    def rejected(self) -> None:
        """A static key stays what it is."""

    def scrub(self, text: str) -> str:
        """Remove the key from ``text``."""
        return text.replace(self._key, "***") if self._key else text


def _retry_delay(error: Mapping[str, Any]) -> float | None:
    """``RetryInfo.retryDelay`` (a protobuf Duration in JSON: ``"37s"``, ``"1.5s"``)."""
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("@type") == _RETRY_INFO:
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def google_error(
    provider: str,
    body: bytes,
    status: int | None,
    headers: Mapping[str, str] | None = None,
    scrub: Callable[[str], str] = str,
) -> ProviderError:
    """A Google API error (``{"error": {"code", "message", "status", "details"}}``) as ours.

    ``status`` is the HTTP status when there was one (``None`` for an error inside a stream).
    The wait comes from ``RetryInfo`` in the details, else from ``Retry-After``; ``scrub``
    takes our secrets out of the message.
    """
    try:
        error = _json.decode(body).get("error")
    except msgspec.MsgspecError:
        error = None
    if not isinstance(error, dict):
        text = body.decode("utf-8", errors="replace")[:300]
        kind = kind_for_status(status) if status else ErrorKind.INVALID_RESPONSE
        return ProviderError(provider, kind, scrub(text), upstream_status=status)
    named = _STATUSES.get(str(error.get("status")))
    code = status or int(error.get("code") or 0)
    fallback = kind_for_status(code) if code else ErrorKind.UNAVAILABLE
    kind = named if named is not None else fallback
    retry_after = _retry_delay(error)
    if retry_after is None and headers is not None:
        retry_after = parse_retry_after(headers)
    return ProviderError(
        provider,
        kind,
        scrub(str(error.get("message") or error.get("status") or error)),
        upstream_status=status,
        retry_after=retry_after,
    )


class GeminiProvider:
    """Chat completions served by ``generateContent`` / ``streamGenerateContent``.

    Args:
        config: the provider's settings.
        client: a pooled session.
        models_url: the URL up to and including ``/models`` (AI Studio's
            ``.../v1beta/models``; Vertex AI's ``.../publishers/google/models``).
        auth: what authorizes each call.
        proxy: the proxy for ``models_url``, if any.
    """

    def __init__(
        self,
        config: ProviderConfig,
        client: UpstreamClient,
        models_url: str,
        auth: GeminiAuth,
        proxy: str | None = None,
    ) -> None:
        self.name = config.name
        self._config = config
        self._models_url = models_url
        self._auth = auth
        self._headers = {"content-type": "application/json", **config.headers}
        self._upstream = UpstreamPoster(config, client, proxy, self._error, unreadable=_UNREADABLE)

    def _url(self, model: str, *, stream: bool) -> str:
        model = urllib.parse.quote(model.removeprefix("models/"), safe="")
        if stream:
            return f"{self._models_url}/{model}:streamGenerateContent?alt=sse"
        return f"{self._models_url}/{model}:generateContent"

    async def _request_headers(self) -> dict[str, str]:
        return {**self._headers, **await self._auth.headers()}

    def _body(self, request: ProviderRequest) -> bytes:
        try:
            return _encoder.encode(to_gemini_request(request.chat))
        except (msgspec.MsgspecError, ValueError) as exc:
            raise ProviderError(self.name, ErrorKind.BAD_REQUEST, str(exc)) from exc

    async def complete(self, request: ProviderRequest) -> bytes:
        """POST ``:generateContent``; return an OpenAI ``chat.completion``."""
        reply = await self._upstream.whole(
            self._url(request.upstream_model, stream=False),
            self._body(request),
            self._request_headers(),
            request.timeout_s,
        )
        try:
            completion = completion_from_gemini(
                _json.decode(reply.body), request.upstream_model, int(time.time())
            )
        except (msgspec.MsgspecError, ValueError, TypeError, AttributeError) as exc:
            raise self._error(exc) from exc
        return _encoder.encode(completion)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        """POST ``:streamGenerateContent?alt=sse``; translate each event into OpenAI chunks.

        Raises:
            ProviderError: ``invalid_response`` for a body that is not an event stream, or one
                that closes before every candidate finished (its answer may be cut short).
        """
        body = self._body(request)
        translator = StreamTranslator(model=request.upstream_model, created=int(time.time()))
        async with self._upstream.stream(
            self._url(request.upstream_model, stream=True),
            body,
            self._request_headers(),
            request.timeout_s,
        ) as response:
            async for event in aiter_sse(response.iter_chunks()):
                data = _json.decode(event.data)
                if "error" in data:
                    raise self._stream_error(event.data)
                for chunk in translator.feed(data):
                    yield chunk
        if not translator.finished:  # closed cleanly but cut short
            raise self._error(UnexpectedBody("the event stream ended before a finishReason"))
        usage = translator.usage_chunk()
        if usage is not None:
            yield usage

    def batches(self) -> GeminiBatches | None:
        """The Gemini API's batch mode (AI Studio's key only: Vertex AI's batch prediction
        reads and writes Cloud Storage buckets, which a worker does not have)."""
        if not isinstance(self._auth, ApiKeyAuth):
            return None
        upstream = self._upstream
        headers = {**self._headers, **self._auth.fixed}
        api_root = self._models_url.removesuffix("/models")
        http = BatchHttp(api_root, upstream.client, headers, upstream.proxy, self._error)

        def translate(chat: bytes) -> bytes:
            return self._body(ProviderRequest(chat))

        return GeminiBatches(http, translate, self._config.batch_inline_bytes, self.name)

    def _stream_error(self, data: str) -> ProviderError:
        return google_error(self.name, data.encode(), None, scrub=self._auth.scrub)

    def _error(self, failure: UpstreamReply | Exception) -> ProviderError:
        """Map every upstream failure to a :class:`ProviderError` (the only place that does)."""
        if isinstance(failure, Exception):
            return transport_error(self.name, failure, self._auth.scrub)
        if failure.status == 401:
            self._auth.rejected()
        return google_error(
            self.name, failure.body, failure.status, failure.headers, scrub=self._auth.scrub
        )

    async def aclose(self) -> None:
        """The client belongs to the caller."""
