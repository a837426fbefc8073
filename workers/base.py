"""The ``Provider`` protocol every adapter implements, the call it receives, the
``MessagesProvider`` protocol of adapters that speak the Anthropic Messages API natively, and
the ``Embedder`` protocol of those that also compute embeddings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NamedTuple, Protocol, runtime_checkable

import msgspec

from schemas import ChatCompletionChunk, ChatRequest, decode_chat_request
from schemas.anthropic import MessagesRequest, decode_messages_request
from schemas.api import Api
from schemas.codec import decode_json

__all__ = [
    "Embedder",
    "Event",
    "MessagesProvider",
    "Provider",
    "ProviderRequest",
    "Relayed",
    "ResponsesProvider",
    "Streamed",
]


class Relayed(NamedTuple):
    """A streamed chunk as the upstream sent it (``data``, relayed unchanged: fields our
    contract does not name included) and what it says (``chunk``)."""

    chunk: ChatCompletionChunk
    data: bytes


#: What a chat stream yields: a chunk of our own, or one relayed as the upstream sent it.
Streamed = ChatCompletionChunk | Relayed


class Event(NamedTuple):
    """One named stream event (Anthropic's, or the Responses API's): its name and its data,
    as JSON bytes."""

    name: str
    data: bytes


_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_stream_decoder = msgspec.json.Decoder(bool | None)
_model_decoder = msgspec.json.Decoder(str)
#: The APIs whose calls are always answered whole.
_WHOLE_APIS = frozenset({Api.COUNT_TOKENS, Api.EMBEDDINGS})


class ProviderRequest:
    """One upstream call.

    The body is decoded only as far as its adapter needs, once: its top-level fields
    (:attr:`fields`: what the OpenAI adapter passes on with the upstream model spliced in) or
    the whole request (:attr:`chat`: what the Anthropic translation and the mock read). The
    broker validated it already; a 4 MiB prompt decoded whole here cost 2 ms a call.

    Attributes:
        body: the request exactly as the caller sent it (unknown fields included).
        timeout_s: time left before the caller's deadline.
        request_id: correlation id, forwarded upstream where the provider accepts one.
        api: what the body speaks (chat completions, Anthropic Messages, a token count,
            embeddings).
        upstream_headers: the caller's headers for the upstream (``anthropic-beta`` ...).
    """

    __slots__ = (
        "_chat",
        "_fields",
        "_messages",
        "_upstream_model",
        "api",
        "body",
        "request_id",
        "timeout_s",
        "upstream_headers",
    )

    def __init__(
        self,
        body: bytes,
        chat: ChatRequest | None = None,
        upstream_model: str = "",
        timeout_s: float = 60.0,
        request_id: str = "",
        *,
        api: Api = Api.CHAT,
        upstream_headers: dict[str, str] | None = None,
    ) -> None:
        self.body = body
        self._chat = chat
        self._messages: MessagesRequest | None = None
        self._fields: dict[str, msgspec.Raw] | None = None
        self._upstream_model = upstream_model
        self.timeout_s = timeout_s
        self.request_id = request_id
        self.api = api
        self.upstream_headers = upstream_headers or {}

    @property
    def chat(self) -> ChatRequest:
        """The request, decoded and validated.

        Raises:
            msgspec.MsgspecError: the body is not a valid chat request.
        """
        if self._chat is None:
            self._chat = decode_chat_request(self.body)
        return self._chat

    @property
    def messages(self) -> MessagesRequest:
        """The request of the Messages API (or of a token count), decoded and validated.

        Raises:
            msgspec.MsgspecError: the body is not a valid Messages request.
        """
        if self._messages is None:
            count = self.api is Api.COUNT_TOKENS
            self._messages = decode_messages_request(self.body, count=count)[0]
        return self._messages

    @property
    def fields(self) -> dict[str, msgspec.Raw]:
        """The body's top-level fields, each still raw JSON (do not change it: copy it).

        Raises:
            msgspec.MsgspecError: the body is not a JSON object.
        """
        if self._fields is None:
            self._fields = decode_json(_fields_decoder, self.body)
        return self._fields

    @property
    def stream(self) -> bool:
        """Whether the caller asked for a stream.

        Raises:
            msgspec.MsgspecError: the body or its ``stream`` field is malformed.
        """
        if self.api in _WHOLE_APIS:
            return False
        if self._chat is not None:
            return bool(self._chat.stream)
        raw = self.fields.get("stream")
        return raw is not None and bool(_stream_decoder.decode(raw))

    @property
    def upstream_model(self) -> str:
        """The model name to send upstream: the deployment's, else the caller's.

        Raises:
            msgspec.MsgspecError: no deployment model and no valid ``model`` in the body.
        """
        if not self._upstream_model:
            if self._chat is not None:
                self._upstream_model = self._chat.model
            else:
                raw = self.fields.get("model")
                if raw is None:
                    raise msgspec.ValidationError("Object missing required field `model`")
                self._upstream_model = _model_decoder.decode(raw)
        return self._upstream_model


class Provider(Protocol):
    """An upstream LLM API.

    Implementations raise :class:`workers.errors.ProviderError` for every failure, mapped in
    one place per adapter.
    """

    name: str

    async def complete(self, request: ProviderRequest) -> bytes:
        """Run a whole (non-streamed) completion; return ``chat.completion`` JSON bytes."""
        ...

    def stream(self, request: ProviderRequest) -> AsyncIterator[Streamed]:
        """Stream a completion as OpenAI-shaped chunks (or chunks :class:`Relayed` as the
        upstream sent them), ending with a usage-only chunk (``choices == []``) when the
        upstream reports usage."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections."""
        ...


@runtime_checkable
class MessagesProvider(Protocol):
    """The Anthropic Messages API (whole, streamed, token counts), spoken natively by an
    adapter whose upstream speaks it, or by translation (``workers.messages``)."""

    async def complete_messages(self, request: ProviderRequest) -> bytes:
        """Run a whole request; return the Anthropic ``message`` JSON bytes."""
        ...

    def stream_messages(self, request: ProviderRequest) -> AsyncIterator[Event]:
        """Stream a request as Anthropic events, ``message_start`` to ``message_stop``."""
        ...

    async def count_tokens(self, request: ProviderRequest) -> tuple[bytes, bool]:
        """The token count (``{"input_tokens": n}`` JSON bytes), and whether the upstream
        counted it (``False``: an estimate)."""
        ...


@runtime_checkable
class ResponsesProvider(Protocol):
    """The OpenAI Responses API (whole and streamed), spoken natively by an adapter whose
    upstream speaks it (it says so with ``native_responses``), or by translation
    (``workers.responses``)."""

    async def complete_response(self, request: ProviderRequest) -> bytes:
        """Run a whole request; return the ``response`` object JSON bytes."""
        ...

    def stream_response(self, request: ProviderRequest) -> AsyncIterator[Event]:
        """Stream a request as Responses events, ``response.created`` to
        ``response.completed``."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """An upstream that computes embeddings (OpenAI's ``POST /embeddings``); its workers also
    take calls on ``llm.provider.<name>.embeddings``.

    Implementations raise :class:`workers.errors.ProviderError` for every failure, as
    :class:`Provider` does.
    """

    async def embed(self, request: ProviderRequest) -> bytes:
        """Embed the request's inputs; return the upstream's embeddings list as JSON bytes,
        one vector per input in input order (OpenAI's ``{"object": "list", "data", "model",
        "usage"}``)."""
        ...
