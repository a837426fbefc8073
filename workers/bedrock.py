"""AWS Bedrock upstream (``kind = "bedrock"``): Converse and ConverseStream, SigV4-signed.

The model is whatever Bedrock takes as a ``modelId``: a model id
(``anthropic.claude-3-5-haiku-20241022-v1:0``, ``amazon.nova-pro-v1:0``), a cross-region
inference profile (``us.anthropic.claude-sonnet-4-20250514-v1:0``) or an ARN; it travels
percent-encoded in the path, as the AWS SDKs send it. Translation lives in
:mod:`workers.bedrock_translate`, signing in :mod:`workers.aws_sigv4`, the binary event
stream in :mod:`workers.aws_eventstream`, credentials in :mod:`workers.aws_credentials`.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec

from schemas import ChatCompletionChunk
from workers.aws_credentials import AwsCredentialChain, profile_region
from workers.aws_eventstream import EventMessage, EventStreamDecoder, EventStreamError
from workers.aws_sigv4 import sign_post
from workers.base import ProviderRequest
from workers.bedrock_translate import (
    StreamTranslator,
    completion_from_converse,
    completion_id,
    to_converse_request,
)
from workers.config import ProviderConfig
from workers.errors import (
    ErrorKind,
    ProviderError,
    UnexpectedBody,
    kind_for_status,
    transport_error,
)
from workers.h1 import Response, UpstreamClient
from workers.openai import parse_retry_after
from workers.upstream_http import UpstreamReply, expect_content_type, proxy_for
from workers.upstream_post import UpstreamPoster

__all__ = ["SIGNING_NAME", "BedrockProvider", "bedrock_provider"]

#: The service name Bedrock's runtime API is signed for.
SIGNING_NAME = "bedrock"
EVENT_STREAM = "application/vnd.amazon.eventstream"
#: What reading a stream may raise besides a transport failure (a frame that fails its
#: checksum, an event that does not decode or translate).
_UNREADABLE = (EventStreamError, msgspec.MsgspecError, TypeError, AttributeError, ValueError)

_encoder = msgspec.json.Encoder()
_json = msgspec.json.Decoder(dict[str, Any])

#: Bedrock error type (``x-amzn-ErrorType``, or a stream's ``:exception-type``) -> our kind;
#: the HTTP status decides for the others.
_ERROR_TYPES = {
    "ThrottlingException": ErrorKind.RATE_LIMITED,
    "ServiceQuotaExceededException": ErrorKind.RATE_LIMITED,
    "ModelNotReadyException": ErrorKind.UNAVAILABLE,
    "ValidationException": ErrorKind.BAD_REQUEST,
    "ResourceNotFoundException": ErrorKind.BAD_REQUEST,
    "AccessDeniedException": ErrorKind.AUTHENTICATION,
    "UnrecognizedClientException": ErrorKind.AUTHENTICATION,
    "InvalidSignatureException": ErrorKind.AUTHENTICATION,
    "IncompleteSignatureException": ErrorKind.AUTHENTICATION,
    "MissingAuthenticationTokenException": ErrorKind.AUTHENTICATION,
    "ExpiredTokenException": ErrorKind.AUTHENTICATION,
    "ModelTimeoutException": ErrorKind.TIMEOUT,
    "ModelErrorException": ErrorKind.UNAVAILABLE,
    "ModelStreamErrorException": ErrorKind.UNAVAILABLE,
    "InternalServerException": ErrorKind.UNAVAILABLE,
    "ServiceUnavailableException": ErrorKind.UNAVAILABLE,
}


def bedrock_error_kind(error_type: str, status: int | None) -> ErrorKind:
    """Our kind for a Bedrock error type (``ThrottlingException``, ``throttlingException``
    or ``ThrottlingException:http://...``), else for its status."""
    name = error_type.partition(":")[0]
    kind = _ERROR_TYPES.get(name[:1].upper() + name[1:])
    if kind is not None:
        return kind
    return kind_for_status(status) if status else ErrorKind.UNAVAILABLE


class BedrockProvider:
    """Chat completions served by Bedrock's Converse API.

    Args:
        config: the provider's settings.
        client: a pooled session.
        region: the AWS region signed for.
        base_url: the runtime endpoint (``https://bedrock-runtime.<region>.amazonaws.com``).
        credentials: where each call's credentials come from.
        proxy: the proxy for ``base_url``, if any.
    """

    def __init__(
        self,
        config: ProviderConfig,
        client: UpstreamClient,
        *,
        region: str,
        base_url: str,
        credentials: AwsCredentialChain,
        proxy: str | None = None,
    ) -> None:
        self.name = config.name
        self._config = config
        self._region = region
        self._base_url = base_url
        self._credentials = credentials
        self._upstream = UpstreamPoster(config, client, proxy, self._error, unreadable=_UNREADABLE)
        self._secrets: tuple[str, ...] = ()

    def _url(self, model: str, *, stream: bool) -> str:
        action = "converse-stream" if stream else "converse"
        return f"{self._base_url}/model/{urllib.parse.quote(model, safe='')}/{action}"

    def _body(self, request: ProviderRequest) -> bytes:
        try:
            return _encoder.encode(to_converse_request(request.chat))
        except (ValueError, msgspec.MsgspecError) as exc:
            raise ProviderError(self.name, ErrorKind.BAD_REQUEST, str(exc)) from exc

    async def _signed(self, url: str, body: bytes, *, stream: bool) -> dict[str, str]:
        credentials = await self._credentials.get()
        self._secrets = tuple(s for s in (credentials.secret_key, credentials.token) if s)
        outgoing = {
            "content-type": "application/json",
            "accept": EVENT_STREAM if stream else "application/json",
            **self._config.headers,
        }
        outgoing.update(
            sign_post(url, body, outgoing, credentials, region=self._region, service=SIGNING_NAME)
        )
        return outgoing  # the trace headers added after signing are not part of the signature

    async def complete(self, request: ProviderRequest) -> bytes:
        """POST ``/model/{modelId}/converse``; return an OpenAI ``chat.completion``."""
        url = self._url(request.upstream_model, stream=False)
        body = self._body(request)
        reply = await self._upstream.whole(
            url, body, self._signed(url, body, stream=False), request.timeout_s
        )
        try:
            completion = completion_from_converse(
                _json.decode(reply.body),
                request.upstream_model,
                int(time.time()),
                reply.headers.get("x-amzn-requestid") or "",
            )
        except (msgspec.MsgspecError, ValueError, TypeError, AttributeError) as exc:
            raise self._error(exc) from exc
        return _encoder.encode(completion)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        """POST ``/model/{modelId}/converse-stream``; translate each event into OpenAI chunks.

        Raises:
            ProviderError: ``invalid_response`` for a body that is not an event stream, a
                frame that fails its checksum, or a stream that closes before
                ``messageStop`` (its answer may be cut short).
        """
        url = self._url(request.upstream_model, stream=True)
        body = self._body(request)
        async with self._upstream.stream(
            url,
            body,
            self._signed(url, body, stream=True),
            request.timeout_s,
            expect=_expect_event_stream,
        ) as response:
            translator = StreamTranslator(
                completion_id(response.headers.get("x-amzn-requestid") or ""),
                request.upstream_model,
                int(time.time()),
            )
            decoder = EventStreamDecoder()
            async for piece in response.iter_chunks():
                for message in decoder.feed(piece):
                    for chunk in self._translate(translator, message):
                        yield chunk
        if not translator.stopped:  # closed cleanly but cut short
            raise self._error(UnexpectedBody("the event stream ended before messageStop"))

    def _translate(
        self, translator: StreamTranslator, message: EventMessage
    ) -> list[ChatCompletionChunk]:
        kind = message.headers.get(":message-type")
        if kind == "event":
            event_type = str(message.headers.get(":event-type", ""))
            return translator.feed(event_type, _json.decode(message.payload))
        if kind == "exception":
            error_type = str(message.headers.get(":exception-type", ""))
            text = _message_of(message.payload)
        else:  # "error": the service's own, named in headers
            error_type = str(message.headers.get(":error-code", ""))
            text = str(message.headers.get(":error-message", ""))
        raise ProviderError(
            self.name, bedrock_error_kind(error_type, None), self._scrub(f"{error_type}: {text}")
        )

    def _error(self, failure: UpstreamReply | Exception) -> ProviderError:
        """Map every upstream failure to a :class:`ProviderError` (the only place that does)."""
        if isinstance(failure, Exception):
            if isinstance(failure, EventStreamError):
                failure = UnexpectedBody(f"a broken event stream: {failure}")
            return transport_error(self.name, failure, self._scrub)
        error_type = failure.headers.get("x-amzn-errortype") or ""
        if not error_type:
            try:
                error_type = str(_json.decode(failure.body).get("__type") or "")
            except msgspec.MsgspecError:
                error_type = ""
        error_type = error_type.partition(":")[0].rpartition("#")[2]
        text = _message_of(failure.body) or failure.text[:300] or failure.reason
        return ProviderError(
            self.name,
            bedrock_error_kind(error_type, failure.status),
            self._scrub(f"{error_type}: {text}" if error_type else text),
            upstream_status=failure.status,
            retry_after=parse_retry_after(failure.headers),
        )

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def aclose(self) -> None:
        """The client belongs to the caller."""


def _message_of(payload: bytes) -> str:
    """Bedrock's ``{"message": ...}`` (``Message`` from some services), or ``""``."""
    try:
        body = _json.decode(payload)
    except msgspec.MsgspecError:
        return ""
    return str(body.get("message") or body.get("Message") or "")


async def _expect_event_stream(response: Response) -> None:
    """Refuse a streamed answer that is not an AWS event stream (an HTML page, JSON)."""
    await expect_content_type(response, EVENT_STREAM, EVENT_STREAM)


def bedrock_provider(
    config: ProviderConfig, environ: Mapping[str, str], client: UpstreamClient
) -> BedrockProvider:
    """The adapter for a ``bedrock`` provider.

    The region is the provider's ``region``, else ``AWS_REGION``, ``AWS_DEFAULT_REGION``,
    then the profile's configured region (read once, here).

    Raises:
        ValueError: no region anywhere.
    """
    profile = config.profile or environ.get("AWS_PROFILE", "")
    region = (
        config.region
        or environ.get("AWS_REGION")
        or environ.get("AWS_DEFAULT_REGION")
        or profile_region(profile, environ)
    )
    if not region:
        raise ValueError(
            f"provider {config.name}: no AWS region (set region, AWS_REGION or the profile's)"
        )
    base_url = config.base_url or f"https://bedrock-runtime.{region}.amazonaws.com"
    credentials = AwsCredentialChain(config.name, config.profile, environ)
    return BedrockProvider(
        config,
        client,
        region=region,
        base_url=base_url,
        credentials=credentials,
        proxy=proxy_for(base_url, environ),
    )
