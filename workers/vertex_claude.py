"""Claude on Vertex AI: Anthropic's Messages API behind Vertex AI's ``rawPredict`` /
``streamRawPredict``, authorized like Gemini on Vertex AI (a service account's token).

The body is the Messages API's (:mod:`workers.anthropic_translate`) without ``model`` (it is
in the URL) and with ``anthropic_version: vertex-2023-10-16``; answers and stream events are
the Messages API's. Errors come in two shapes: Google's (``{"error": {"status": ...}}``, e.g.
a quota) and Anthropic's (``{"type": "error", "error": {"type": ...}}``, from the model).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from schemas import ChatCompletionChunk
from workers.anthropic import anthropic_error_kind
from workers.anthropic_translate import StreamTranslator, completion_from_anthropic
from workers.base import ProviderRequest
from workers.chat_to_messages import to_anthropic_request
from workers.config import ProviderConfig
from workers.errors import ErrorKind, ProviderError, UnexpectedBody, transport_error
from workers.gemini import GeminiAuth, google_error
from workers.h1 import UpstreamClient
from workers.openai import parse_retry_after
from workers.sse import aiter_sse
from workers.upstream_http import UpstreamReply
from workers.upstream_post import UpstreamPoster

__all__ = ["VERTEX_ANTHROPIC_VERSION", "VertexClaude"]

#: The ``anthropic_version`` Vertex AI takes in the body.
VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"

_encoder = msgspec.json.Encoder()
_json = msgspec.json.Decoder(dict[str, Any])

#: What reading a stream's events may raise besides a transport failure.
_UNREADABLE = (msgspec.MsgspecError, TypeError, AttributeError)


class VertexClaude:
    """Chat completions served by Claude on Vertex AI.

    Args:
        config: the provider's settings.
        client: a pooled session.
        models_url: the URL up to ``.../publishers/anthropic/models``.
        auth: the service account's tokens.
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
        self._models_url = models_url
        self._auth = auth
        self._headers = {"content-type": "application/json", **config.headers}
        self._upstream = UpstreamPoster(config, client, proxy, self._error, unreadable=_UNREADABLE)

    def _url(self, model: str, *, stream: bool) -> str:
        action = "streamRawPredict" if stream else "rawPredict"
        return f"{self._models_url}/{urllib.parse.quote(model, safe='@')}:{action}"

    def _body(self, request: ProviderRequest, *, stream: bool) -> bytes:
        try:
            body = to_anthropic_request(request.chat, request.upstream_model, stream=stream)
        except msgspec.MsgspecError as exc:
            raise ProviderError(self.name, ErrorKind.BAD_REQUEST, str(exc)) from exc
        del body["model"]
        body["anthropic_version"] = VERTEX_ANTHROPIC_VERSION
        return _encoder.encode(body)

    async def _request_headers(self) -> dict[str, str]:
        return {**self._headers, **await self._auth.headers()}

    async def complete(self, request: ProviderRequest) -> bytes:
        """POST ``:rawPredict``; return an OpenAI ``chat.completion``."""
        reply = await self._upstream.whole(
            self._url(request.upstream_model, stream=False),
            self._body(request, stream=False),
            self._request_headers(),
            request.timeout_s,
        )
        try:
            completion = completion_from_anthropic(_json.decode(reply.body), int(time.time()))
        except (msgspec.MsgspecError, ValueError, TypeError, AttributeError) as exc:
            raise self._error(exc) from exc
        return _encoder.encode(completion)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        """POST ``:streamRawPredict``; translate each Messages event into OpenAI chunks.

        Raises:
            ProviderError: ``invalid_response`` for a body that is not an event stream, or one
                that closes without ``message_stop``.
        """
        body = self._body(request, stream=True)
        translator = StreamTranslator(created=int(time.time()))
        async with self._upstream.stream(
            self._url(request.upstream_model, stream=True),
            body,
            self._request_headers(),
            request.timeout_s,
        ) as response:
            async for event in aiter_sse(response.iter_chunks()):
                data = _json.decode(event.data)
                if data.get("type") == "error":
                    raise self._anthropic_error(data, None)
                for chunk in translator.feed(data):
                    yield chunk
                if data.get("type") == "message_stop":
                    return
        raise self._error(UnexpectedBody("the event stream ended without `message_stop`"))

    def _anthropic_error(self, data: dict[str, Any], reply: UpstreamReply | None) -> ProviderError:
        error = data.get("error") or {}
        status = reply.status if reply is not None else None
        return ProviderError(
            self.name,
            anthropic_error_kind(error.get("type"), status),
            self._auth.scrub(str(error.get("message", error))),
            upstream_status=status,
            retry_after=parse_retry_after(reply.headers) if reply is not None else None,
        )

    def _error(self, failure: UpstreamReply | Exception) -> ProviderError:
        """Map every upstream failure to a :class:`ProviderError` (the only place that does)."""
        if isinstance(failure, Exception):
            return transport_error(self.name, failure, self._auth.scrub)
        if failure.status == 401:
            self._auth.rejected()
        try:
            data = _json.decode(failure.body)
        except msgspec.MsgspecError:
            data = {}
        if data.get("type") == "error":
            return self._anthropic_error(data, failure)
        return google_error(
            self.name, failure.body, failure.status, failure.headers, scrub=self._auth.scrub
        )

    async def aclose(self) -> None:
        """The client belongs to the caller."""
