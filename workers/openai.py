"""OpenAI, Azure OpenAI and OpenAI-compatible upstreams (vLLM, Ollama, Groq, Together ...).

One adapter serves them all: they differ only in URL, key header and extra headers. Azure
addresses a deployment by URL (``/openai/deployments/<deployment>/...?api-version=``) and takes
the key in an ``api-key`` header; the deployment name is the configured upstream model. Chat
completions go to ``/chat/completions``, embeddings to ``/embeddings``. OpenAI itself
(``kind = "openai"``) also takes the Responses API at ``/responses``, passed through as the
caller sent it (the model mapped; a stored conversation's previous response named by the
upstream's own id); other kinds serve it translated to chat (``workers.responses``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import quote

import msgspec

from schemas import ChatCompletion, ChatCompletionChunk
from schemas.embeddings import count_inputs, decode_embedding_list
from schemas.response_events import FINAL_EVENTS
from schemas.responses import HISTORY_FIELD, History, replayed_input
from workers.base import Event, ProviderRequest, Relayed
from workers.batch_openai import OpenAIBatches
from workers.batches import BatchHttp
from workers.config import ProviderConfig, ProviderKind
from workers.errors import (
    ErrorKind,
    ProviderError,
    UnexpectedBody,
    kind_for_status,
    transport_error,
)
from workers.h1 import UpstreamClient
from workers.sse import aiter_sse
from workers.upstream_http import UpstreamReply
from workers.upstream_post import UpstreamPoster

__all__ = ["OpenAIProvider", "parse_retry_after"]

_completion_decoder = msgspec.json.Decoder(ChatCompletion)
_history_decoder = msgspec.json.Decoder(History)
_object_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_input_decoder = msgspec.json.Decoder(str | list[dict[str, Any]] | None)
_chunk_decoder = msgspec.json.Decoder(ChatCompletionChunk)
_error_decoder = msgspec.json.Decoder(dict[str, Any])


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (delta-seconds form).

    ``headers`` must look names up case-insensitively, as response headers do.
    """
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue
    return None


_encode = msgspec.json.Encoder().encode
_TRUE = msgspec.Raw(b"true")
_INCLUDE_USAGE = msgspec.Raw(b'{"include_usage":true}')


class OpenAIProvider:
    """Chat completions against an OpenAI-shaped API.

    Args:
        config: the provider's settings.
        client: a pooled session, shared by every call of this worker.
        api_key: the key, read from the worker's environment by the caller; never logged.
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
        self._upstream = UpstreamPoster(config, client, proxy, self._error)
        self._base_url = config.base_url
        self._api_key = api_key
        self._azure = config.kind is ProviderKind.AZURE
        #: Whether the upstream takes the Responses API itself (OpenAI's does).
        self.native_responses = config.kind is ProviderKind.OPENAI
        self._headers = {"content-type": "application/json", **config.headers}
        if api_key:
            if self._azure:
                self._headers["api-key"] = api_key
            else:
                self._headers["authorization"] = f"Bearer {api_key}"

    def _url(self, model: str, operation: str = "chat/completions") -> str:
        if self._azure:
            return (
                f"{self._config.base_url}/openai/deployments/{model}/{operation}"
                f"?api-version={self._config.api_version}"
            )
        return f"{self._config.base_url}/{operation}"

    def _payload(self, request: ProviderRequest, *, stream: bool) -> bytes:
        """The caller's body with the upstream model, unknown fields kept.

        Only the top level is decoded: every field stays the caller's raw JSON and is copied
        as it is (a 4 MiB prompt decoded into Python objects and encoded again took 11 % of
        the miss path's CPU).
        """
        body = dict(request.fields)
        body["model"] = msgspec.Raw(_encode(request.upstream_model))
        if stream:
            body["stream"] = _TRUE
            body["stream_options"] = _INCLUDE_USAGE  # we count tokens either way
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return _encode(body)

    def _responses_payload(self, request: ProviderRequest) -> bytes:
        """A Responses body as the caller sent it, with the upstream model.

        The broker's conversation field becomes the upstream's own ``previous_response_id``
        when this provider served the previous response; otherwise (a conversation begun on
        another deployment) its earlier turns go before the input, since this upstream does
        not know that id. A whole background request stays ``background: true`` (the
        upstream runs it and answers at once with its queued response); a streamed one is
        streamed as any other (the broker records its events).
        """
        body = dict(request.fields)
        body["model"] = msgspec.Raw(_encode(request.upstream_model))
        history = body.pop(HISTORY_FIELD, None)
        if history is not None and "previous_response_id" in body:
            earlier = _history_decoder.decode(history)
            if earlier.upstream_id and earlier.provider in ("", self.name):
                body["previous_response_id"] = msgspec.Raw(_encode(earlier.upstream_id))
            else:
                del body["previous_response_id"]
                given = _input_decoder.decode(body["input"]) if "input" in body else None
                body["input"] = msgspec.Raw(_encode(replayed_input(earlier.items, given)))
        if body.get("background") != _TRUE or request.stream:
            body.pop("background", None)
        return _encode(body)

    async def _request_headers(self, request: ProviderRequest) -> dict[str, str]:
        outgoing = dict(self._headers)
        if request.request_id:
            outgoing["x-client-request-id"] = request.request_id
        return outgoing

    async def complete(self, request: ProviderRequest) -> bytes:
        """POST ``/chat/completions``; return the upstream ``chat.completion`` bytes."""
        return await self._post(request, "chat/completions", _completion_decoder.decode)

    async def complete_response(self, request: ProviderRequest) -> bytes:
        """POST ``/responses``; return the upstream's ``response`` object bytes."""
        return await self._post(
            request, "responses", _object_decoder.decode, self._responses_payload(request)
        )

    async def stream_response(self, request: ProviderRequest) -> AsyncIterator[Event]:
        """POST ``/responses`` with ``stream: true``; yield each event as the upstream sent
        it, up to the one that ends the response (``response.completed`` ...) or an
        ``error`` event.

        Raises:
            ProviderError: as for :meth:`stream`; ``invalid_response`` for a stream that
                closes before its last event.
        """
        async with self._upstream.stream(
            self._url(request.upstream_model, "responses"),
            self._responses_payload(request),
            self._request_headers(request),
            request.timeout_s,
        ) as response:
            async for event in aiter_sse(response.iter_chunks()):
                yield Event(event.event, event.data.encode())
                if event.event in FINAL_EVENTS or event.event == "error":
                    return
        raise self._error(UnexpectedBody("the event stream ended before the response did"))

    async def retrieve_response(self, response_id: str) -> bytes:
        """GET ``/responses/{id}``: a background response the upstream runs, as it is now.

        Raises:
            ProviderError: the call failed (a 404 for an id the upstream does not know).
        """
        return await self._call_response("GET", response_id, "")

    async def cancel_response(self, response_id: str) -> bytes:
        """POST ``/responses/{id}/cancel``: stop a background response the upstream runs.

        Raises:
            ProviderError: the call failed.
        """
        return await self._call_response("POST", response_id, "/cancel")

    async def _call_response(self, method: str, response_id: str, suffix: str) -> bytes:
        url = f"{self._url('', 'responses')}/{quote(response_id, safe='')}{suffix}"
        reply = await self._upstream.whole(
            url,
            b"" if method == "GET" else b"{}",
            self._plain_headers(),
            self._config.timeout_s,
            method=method,
        )
        try:
            _object_decoder.decode(reply.body)
        except msgspec.MsgspecError as exc:
            raise self._error(exc) from exc
        return reply.body

    async def _plain_headers(self) -> dict[str, str]:
        return dict(self._headers)

    async def embed(self, request: ProviderRequest) -> bytes:
        """POST ``/embeddings``; return the upstream's embeddings list bytes (its vectors as
        it wrote them: floats, or base64 when the caller asked for it).

        Raises:
            ProviderError: as for :meth:`complete`; ``invalid_response`` for an answer that
                is not one vector per input.
            msgspec.ValidationError: the body has no valid ``input``.
        """
        inputs = count_inputs(request.fields.get("input"))
        return await self._post(
            request, "embeddings", lambda body: decode_embedding_list(body, inputs)
        )

    async def _post(
        self,
        request: ProviderRequest,
        operation: str,
        check: Callable[[bytes], object],
        payload: bytes | None = None,
    ) -> bytes:
        """One whole call (``payload``: the body, else the caller's with the upstream model):
        the answer's bytes once ``check`` accepts them.

        Raises:
            ProviderError: the call failed, or its answer is not what ``check`` reads.
        """
        reply = await self._upstream.whole(
            self._url(request.upstream_model, operation),
            payload or self._payload(request, stream=False),
            self._request_headers(request),
            request.timeout_s,
        )
        try:
            check(reply.body)
        except msgspec.MsgspecError as exc:
            raise self._error(exc) from exc
        return reply.body

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Relayed]:
        """POST with ``stream: true``; yield each SSE ``data:`` chunk until ``[DONE]``, as the
        upstream sent it (a compatible server's own delta fields, such as
        ``reasoning_content``, reach the caller).

        Leaving the iteration early (a cancelled request) closes the upstream connection.

        Raises:
            ProviderError: ``invalid_response`` for a body that is not an event stream, or one
                that closes without ``data: [DONE]`` (its answer may be cut short).
        """
        async with self._upstream.stream(
            self._url(request.upstream_model),
            self._payload(request, stream=True),
            self._request_headers(request),
            request.timeout_s,
        ) as response:
            async for event in aiter_sse(response.iter_chunks()):
                if event.data == "[DONE]":
                    return
                yield Relayed(self._chunk(event.data), event.data.encode())
        # closed cleanly but cut short: the answer so far may be partial
        raise self._error(UnexpectedBody("the event stream ended without `data: [DONE]`"))

    def _chunk(self, data: str) -> ChatCompletionChunk:
        try:
            return _chunk_decoder.decode(data)
        except msgspec.ValidationError as exc:
            error = _error_decoder.decode(data).get("error") if data.startswith("{") else None
            if isinstance(error, dict):  # an error event inside the stream
                raise ProviderError(
                    self.name, ErrorKind.UNAVAILABLE, self._scrub(str(error.get("message", error)))
                ) from exc
            raise self._error(exc) from exc
        except msgspec.MsgspecError as exc:
            raise self._error(exc) from exc

    def _error(self, failure: UpstreamReply | Exception) -> ProviderError:
        """Map every upstream failure to a :class:`ProviderError` (the only place that does)."""
        if isinstance(failure, Exception):
            return transport_error(self.name, failure, self._scrub)
        kind = _CODED.get(_upstream_code(failure), kind_for_status(failure.status))
        return ProviderError(
            self.name,
            kind if failure.status < 500 else kind_for_status(failure.status),
            self._scrub(_upstream_message(failure)),
            upstream_status=failure.status,
            retry_after=parse_retry_after(failure.headers),
        )

    def _scrub(self, text: str) -> str:
        """Remove our key from anything the upstream echoes back."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def batches(self) -> OpenAIBatches | None:
        """OpenAI's own Batch API (``None`` for Azure and OpenAI-compatible servers)."""
        if self._config.kind is not ProviderKind.OPENAI:
            return None
        upstream = self._upstream
        http = BatchHttp(
            self._base_url, upstream.client, self._headers, upstream.proxy, self._error
        )
        return OpenAIBatches(http)

    async def aclose(self) -> None:
        """The client belongs to the caller; nothing of our own to release."""


#: OpenAI's and Azure's error codes for the refusals the broker falls back on.
_CODED = {
    "context_length_exceeded": ErrorKind.CONTEXT_LENGTH,
    "content_policy_violation": ErrorKind.CONTENT_POLICY,
    "content_filter": ErrorKind.CONTENT_POLICY,
}


def _upstream_code(response: UpstreamReply) -> str:
    """OpenAI's ``{"error": {"code"}}`` (``""`` when there is none)."""
    try:
        error = _error_decoder.decode(response.body).get("error")
    except msgspec.MsgspecError:
        return ""
    return str(error.get("code") or "") if isinstance(error, dict) else ""


def _upstream_message(response: UpstreamReply) -> str:
    """OpenAI's ``{"error": {"message"}}``, or the start of whatever body came back."""
    try:
        body = _error_decoder.decode(response.body)
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except msgspec.MsgspecError:
        pass
    return response.text[:300] or response.reason
