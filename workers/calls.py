"""One provider call in the API its caller spoke: the whole answer, a stream's messages, and
the reply a failure gets.

Chat completions are the provider's own calls; the Anthropic Messages API and its token counts
go to the provider's :class:`~workers.base.MessagesProvider` side (native, or translated:
:mod:`workers.messages`); the OpenAI Responses API to its
:class:`~workers.base.ResponsesProvider` side (native, or :mod:`workers.responses`);
embeddings to its :class:`~workers.base.Embedder` side. Answers and
errors are in the caller's API's shapes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import msgspec

from schemas import StreamEnd, error_body, headers
from schemas.api import Api
from schemas.errors import anthropic_error
from workers.base import Embedder, Provider, ProviderRequest, Relayed
from workers.errors import ErrorKind, ProviderError, ReplyTooLarge, refined
from workers.messages import messages_api
from workers.responses import responses_api
from workers.split import split_chunk

__all__ = ["ApiCalls", "failure"]

log = logging.getLogger("llm_edge.worker")

_encoder = msgspec.json.Encoder()
#: The APIs whose errors are OpenAI envelopes (the others' are Anthropic errors).
_OPENAI_APIS = frozenset({Api.CHAT, Api.EMBEDDINGS, Api.RESPONSES})


def failure(
    exc: BaseException, provider: str, timeout: float, api: Api = Api.CHAT
) -> tuple[int, bytes, dict[str, str]]:
    """Status, envelope and headers for a failed call (the worker's one error mapping): an
    OpenAI envelope (chat completions, embeddings, responses), or for the Messages API an Anthropic
    error (with the upstream's own error type when it named one)."""
    kind: str | None = None
    extra: dict[str, str] = {}
    if isinstance(exc, ProviderError):
        exc = refined(exc)
        extra[headers.ERROR_CODE] = exc.kind.value
        if exc.retryable:
            extra[headers.RETRYABLE] = "1"
        if exc.retry_after is not None:
            extra[headers.RETRY_AFTER] = f"{exc.retry_after:g}"
        status, code, message, kind = exc.status, exc.kind.value, exc.message, exc.upstream_type
    elif isinstance(exc, ReplyTooLarge):  # the same answer would be as large anywhere: final
        status, code, message = 502, exc.code, str(exc)
    elif isinstance(exc, TimeoutError):
        status, code = 504, "deadline_exceeded"
        message = f"{provider} did not answer within {timeout:.1f}s"
        extra[headers.RETRYABLE] = "1"
    elif isinstance(exc, msgspec.MsgspecError):
        status, code, message = 400, "invalid_request", str(exc)
    else:
        log.error("provider %s failed unexpectedly", provider, exc_info=exc)
        status, code, message = 500, "internal_error", "provider worker failed"
    if api in _OPENAI_APIS:
        return status, error_body(status, code, message), extra
    return status, anthropic_error(status, message, kind), extra


class ApiCalls:
    """A provider's calls, by API.

    Args:
        provider: the adapter.
    """

    def __init__(self, provider: Provider) -> None:
        self._provider = provider
        self._messages = messages_api(provider)
        self._responses = responses_api(provider)
        self._embedder = provider if isinstance(provider, Embedder) else None

    async def whole(self, request: ProviderRequest) -> tuple[bytes, dict[str, str]]:
        """One whole call in the request's API: the answer and what it says of itself."""
        if request.api is Api.MESSAGES:
            return await self._messages.complete_messages(request), {}
        if request.api is Api.RESPONSES:
            return await self._responses.complete_response(request), {}
        if request.api is Api.COUNT_TOKENS:
            body, counted = await self._messages.count_tokens(request)
            return body, {headers.TOKEN_COUNT: "upstream" if counted else "estimate"}
        if request.api is Api.EMBEDDINGS:
            if self._embedder is None:  # its worker does not take them: never sent here
                raise ProviderError(
                    self._provider.name,
                    ErrorKind.BAD_REQUEST,
                    f"provider `{self._provider.name}` does not compute embeddings",
                )
            return await self._embedder.embed(request), {}
        return await self._provider.complete(request), {}

    async def pieces(
        self, request: ProviderRequest, end: StreamEnd
    ) -> AsyncIterator[tuple[bytes, dict[str, str]]]:
        """The stream's messages (body, headers) in the request's API; ``end`` takes the
        totals of a chat stream. A chunk goes as the upstream sent it unless it is cut (one
        huge event: several messages, :mod:`workers.split`)."""
        if request.api is Api.RESPONSES:
            async for event in self._responses.stream_response(request):
                yield event.data, {headers.EVENT: event.name}
            return
        if request.api is not Api.CHAT:
            async for event in self._messages.stream_messages(request):
                yield event.data, {headers.EVENT: event.name}
            return
        async for item in self._provider.stream(request):
            chunk, raw = (item.chunk, item.data) if isinstance(item, Relayed) else (item, None)
            if chunk.usage is not None:
                end.usage = chunk.usage
            for choice in chunk.choices:
                end.finish_reason = choice.finish_reason or end.finish_reason
            pieces = split_chunk(chunk)
            if raw is not None and pieces[0] is chunk:
                yield raw, {}
                continue
            for piece in pieces:
                yield _encoder.encode(piece), {}
