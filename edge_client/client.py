"""A typed client for the broker's NATS API.

    async with await EdgeClient.connect("nats://127.0.0.1:4222") as client:
        reply = await client.chat({"model": "gpt-4o-mini", "messages": [...]})
        print(reply.choices[0].message.content)

Every call has a deadline (``deadline_s``): it is sent as ``Llm-Timeout-Ms`` and bounds the
call's retries. A call that finds no broker (NATS no-responders), loses its reply, or is
answered 503 is retried within its deadline after a backoff (a ``Retry-After`` is honoured),
and every try carries the same ``X-Request-Id``. Whole calls are marked ``Llm-Idempotent: 1``:
every try is answered from one upstream call, on whichever broker it lands (the broker's
:mod:`~broker.repeats`, the workers' claims). A stream is retried so only before its first
message; closing it early cancels it upstream (:class:`~edge_client.stream_handle.Stream`).
Failures raise the exceptions of :mod:`edge_client.errors`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.nuid import NUID

from edge_client.batches import Batches
from edge_client.chat import ChatStreamError, keepalive_ms, stream_messages
from edge_client.errors import (
    APIError,
    BadRequestError,
    DeadlineError,
    StreamError,
    UnavailableError,
    from_reply,
)
from edge_client.request import DEFAULT_RETRY, Attempts, RetryPolicy
from edge_client.stream_handle import Ending, Stream
from schemas import ChatCompletion, ChatCompletionChunk, ChatRequest, headers, subjects
from schemas.chat import Model, ModelList

__all__ = ["DEFAULT_DEADLINE_S", "EdgeClient", "MessageEvent"]

#: A call's time budget when neither the call nor the client names one.
#: A call's time budget unless it names one: the openai SDK's (minutes to a reasoning
#: model's first token are normal; keepalives tell such a call from a lost one).
DEFAULT_DEADLINE_S = 600.0

_completion = msgspec.json.Decoder(ChatCompletion)
_chunk = msgspec.json.Decoder(ChatCompletionChunk)
_models = msgspec.json.Decoder(ModelList)
_any = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()
_nuid = NUID()

Body = ChatRequest | Mapping[str, Any] | bytes


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """One event of a named-event stream (Anthropic Messages, OpenAI Responses): its SSE name
    and its JSON body."""

    event: str
    data: dict[str, Any]


class EdgeClient:
    """Chat, Messages, Responses, embeddings, models and batches over a NATS connection.

    Args:
        nc: a connected client (the caller's; :meth:`close` leaves it open).
        api_key: the tenant's key, sent as ``Authorization: Bearer <key>``.
        tenant: publish on the tenant's own subjects (``llm.tenant.<tenant>.chat``) instead;
            the NATS server's permissions then say who the caller is.
        namespace: the cache namespace of every call (a call may name its own).
        deadline_s: every call's time budget unless the call names one.
        retry: how calls are retried within their deadline.
    """

    def __init__(
        self,
        nc: Client,
        *,
        api_key: str | None = None,
        tenant: str | None = None,
        namespace: str | None = None,
        deadline_s: float = DEFAULT_DEADLINE_S,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.nc = nc
        self._api_key, self._tenant, self._namespace = api_key, tenant, namespace
        self._deadline_s, self._retry = deadline_s, retry
        self._owned = False
        self.batches = Batches(self)

    @classmethod
    async def connect(cls, servers: str | list[str], **options: Any) -> EdgeClient:
        """Open a NATS connection of the client's own (closed by :meth:`close`)."""
        client = cls(await nats.connect(servers, name="edge-client"), **options)
        client._owned = True
        return client

    async def close(self) -> None:
        """Close the connection if the client opened it."""
        if self._owned and not self.nc.is_closed:
            await self.nc.drain()

    async def __aenter__(self) -> EdgeClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- chat ----------------------------------------------------------------------------

    async def chat(self, request: Body, **call: Any) -> ChatCompletion:
        """A whole chat completion.

        Args:
            request: a :class:`~schemas.ChatRequest`, its dict, or its JSON.
            **call: per-call options: ``deadline_s``, ``cache_control`` (``no-cache``,
                ``no-store``, ``max-age=N``), ``namespace``, ``request_id``, ``traceparent``.

        Raises:
            edge_client.errors.APIError: the broker refused or failed the request.
        """
        reply = await self.call(self._subject("chat"), _body(request, stream=False), **call)
        return _completion.decode(reply.data)

    def stream(self, request: Body, **call: Any) -> Stream[ChatCompletionChunk]:
        """A streamed chat completion as typed chunks.

        A stream that fails before its first chunk (no broker, a lost reply, a 503) is
        retried within the deadline under the same request id, as :meth:`call` is; once a
        chunk was delivered it is never retried. Closing it early (leaving its ``async with``
        block, :meth:`~edge_client.stream_handle.Stream.aclose`) cancels it upstream.

        Raises:
            edge_client.errors.APIError: before or during the stream.
            edge_client.errors.StreamError: a message was lost or out of order.
        """
        hdrs = self.headers(**call)
        body = _body(request, stream=True)
        ending = Ending()
        chunks = self._chunks(self._stream(self._subject("chat"), body, hdrs), ending)
        return Stream(chunks, hdrs[headers.REQUEST_ID], ending)

    @staticmethod
    async def _chunks(
        messages: AsyncGenerator[Msg, None], ending: Ending
    ) -> AsyncGenerator[ChatCompletionChunk]:
        expected = 0
        async with contextlib.aclosing(messages):
            async for msg in messages:
                hdrs = msg.headers or {}
                if int(hdrs.get(headers.SEQ, expected)) != expected:
                    raise StreamError(f"stream message {expected} missing")
                expected += 1
                kind = hdrs.get(headers.STREAM)
                if kind == "chunk":
                    yield _chunk.decode(msg.data)
                elif kind == "end":
                    ending.read(hdrs)

    async def messages(self, request: Mapping[str, Any] | bytes, **call: Any) -> dict[str, Any]:
        """An Anthropic Messages API ``message`` (``llm.messages``)."""
        body = request if isinstance(request, bytes) else _encoder.encode(dict(request))
        reply = await self.call(self._subject("messages"), body, **call)
        return _any.decode(reply.data)

    async def embeddings(self, request: Mapping[str, Any] | bytes, **call: Any) -> dict[str, Any]:
        """An OpenAI embeddings ``list`` (``llm.embeddings``): each input is cached on its
        own, so inputs embedded before are not sent upstream again."""
        body = request if isinstance(request, bytes) else _encoder.encode(dict(request))
        reply = await self.call(self._subject("embeddings"), body, **call)
        return _any.decode(reply.data)

    async def responses(self, request: Mapping[str, Any] | bytes, **call: Any) -> dict[str, Any]:
        """An OpenAI Responses API ``response`` (``llm.responses``): stored unless the
        request says ``store: false``; with ``background: true`` the queued response, read
        later with :meth:`response`."""
        body = request if isinstance(request, bytes) else _encoder.encode(dict(request))
        reply = await self.call(self._subject("responses"), body, **call)
        return _any.decode(reply.data)

    def stream_responses(self, request: Mapping[str, Any], **call: Any) -> Stream[MessageEvent]:
        """A Responses API stream: one :class:`MessageEvent` per event, ``response.created``
        to ``response.completed`` (retried and cancelled as :meth:`stream` is)."""
        hdrs = self.headers(**call)
        body = _encoder.encode({**request, "stream": True})
        ending = Ending()
        events = self._events(self._stream(self._subject("responses"), body, hdrs), ending)
        return Stream(events, hdrs[headers.REQUEST_ID], ending)

    async def response(self, response_id: str, **call: Any) -> dict[str, Any]:
        """A stored response (``llm.responses.get``): a background one's current status."""
        body = _encoder.encode({"id": response_id})
        return _any.decode((await self.call(subjects.RESPONSES_GET, body, **call)).data)

    async def delete_response(self, response_id: str, **call: Any) -> dict[str, Any]:
        """Delete a stored response (``llm.responses.delete``; a running background one is
        cancelled first): OpenAI's ``{"id", "object": "response", "deleted": true}``."""
        body = _encoder.encode({"id": response_id})
        return _any.decode((await self.call(subjects.RESPONSES_DELETE, body, **call)).data)

    async def cancel_response(self, response_id: str, **call: Any) -> dict[str, Any]:
        """Cancel a background response (``llm.responses.cancel``): the response, now
        ``cancelled`` (a 400 for one that did not run in the background)."""
        body = _encoder.encode({"id": response_id})
        return _any.decode((await self.call(subjects.RESPONSES_CANCEL, body, **call)).data)

    async def response_input_items(
        self,
        response_id: str,
        *,
        after: str | None = None,
        limit: int | None = None,
        order: str | None = None,
        **call: Any,
    ) -> dict[str, Any]:
        """A stored response's input items (``llm.responses.input_items``), an OpenAI list
        (``data``, ``first_id``, ``last_id``, ``has_more``): page on with ``after``."""
        query: dict[str, Any] = {"id": response_id}
        for name, value in (("after", after), ("limit", limit), ("order", order)):
            if value is not None:
                query[name] = value
        body = _encoder.encode(query)
        return _any.decode((await self.call(subjects.RESPONSES_INPUT_ITEMS, body, **call)).data)

    def stream_response(
        self, response_id: str, *, starting_after: int = -1, **call: Any
    ) -> Stream[MessageEvent]:
        """A streamed background response's events (``background`` and ``stream``) after
        ``starting_after``, live up to its last one (``llm.responses.get`` with ``stream``):
        to resume a stream that was cut off, pass the last ``sequence_number`` received."""
        hdrs = self.headers(**call)
        query = {"id": response_id, "stream": True, "starting_after": starting_after}
        ending = Ending()
        messages = self._stream(subjects.RESPONSES_GET, _encoder.encode(query), hdrs)
        return Stream(self._events(messages, ending), hdrs[headers.REQUEST_ID], ending)

    def stream_messages(self, request: Mapping[str, Any], **call: Any) -> Stream[MessageEvent]:
        """An Anthropic Messages stream: one :class:`MessageEvent` per Anthropic event
        (retried and cancelled as :meth:`stream` is)."""
        hdrs = self.headers(**call)
        body = _encoder.encode({**request, "stream": True})
        ending = Ending()
        events = self._events(self._stream(self._subject("messages"), body, hdrs), ending)
        return Stream(events, hdrs[headers.REQUEST_ID], ending)

    @staticmethod
    async def _events(
        messages: AsyncGenerator[Msg, None], ending: Ending
    ) -> AsyncGenerator[MessageEvent]:
        async with contextlib.aclosing(messages):
            async for msg in messages:
                hdrs = msg.headers or {}
                kind = hdrs.get(headers.STREAM)
                if kind == "chunk" and msg.data:
                    yield MessageEvent(hdrs.get(headers.EVENT, ""), _any.decode(msg.data))
                elif kind == "end":
                    ending.read(hdrs)

    async def models(self, **call: Any) -> list[Model]:
        """The models the brokers serve (names and aliases)."""
        return _models.decode((await self.call(subjects.MODELS, b"", **call)).data).data

    # -- the transport -------------------------------------------------------------------

    def headers(
        self,
        *,
        deadline_s: float | None = None,
        cache_control: str | None = None,
        namespace: str | None = None,
        request_id: str | None = None,
        traceparent: str | None = None,
    ) -> dict[str, str]:
        """A call's request headers (``Llm-Timeout-Ms`` is set again at every try)."""
        hdrs = {headers.REQUEST_ID: request_id or _nuid.next().decode()}
        timeout = deadline_s if deadline_s is not None else self._deadline_s
        hdrs[headers.TIMEOUT_MS] = str(int(timeout * 1000))
        optional = {
            headers.AUTHORIZATION: f"Bearer {self._api_key}" if self._api_key else None,
            headers.CACHE_CONTROL: cache_control,
            headers.CACHE_NAMESPACE: namespace or self._namespace,
            headers.TRACEPARENT: traceparent,
        }
        hdrs.update({k: v for k, v in optional.items() if v})
        return hdrs

    async def call(self, subject: str, body: bytes, **call: Any) -> Msg:
        """Request/reply with retries within the deadline; a failed reply raises.

        An attempt is sent again only when it is lost: nobody serves the subject, a 503, or
        no message at all (neither the answer nor a keepalive of the broker working on it)
        for ``attempt_timeout_s``. A slow answer (minutes to a reasoning model's first
        token) is waited for, and a lost attempt is left running: the retry, under the same
        request id, is answered from its upstream call.

        Returns:
            The successful reply (``Llm-Status`` under 400).
        """
        hdrs = self.headers(**call)
        self._check_size(body, hdrs)
        if self._retry.attempts > 1:  # every attempt is answered from one upstream call
            hdrs[headers.IDEMPOTENT] = "1"
        attempts = self._attempts(hdrs)
        request_id = attempts.request_id
        while True:
            failure: APIError
            messages = self._send(subject, body, hdrs, attempts.next(), cancel_when_lost=False)
            try:
                async with contextlib.aclosing(messages):
                    reply = await anext(messages)
            except ChatStreamError:  # NATS no-responders
                failure = UnavailableError(
                    503, f"nobody serves {subject}", code="no_broker", request_id=request_id
                )
            except TimeoutError:
                failure = DeadlineError(
                    504, "no reply in time", code="deadline_exceeded", request_id=request_id
                )
            else:
                reply_headers = dict(reply.headers or {})
                status = int(reply_headers.get(headers.STATUS, "200"))
                if status < 400:
                    return reply
                failure = from_reply(status, reply.data, reply_headers)
                if status != 503:
                    raise failure
            await _back_off(attempts, failure)

    async def _stream(
        self, subject: str, body: bytes, hdrs: dict[str, str]
    ) -> AsyncGenerator[Msg, None]:
        """Every message of a stream; a failure raises. Attempts that fail before the first
        message of the stream are retried within the deadline."""
        self._check_size(body, hdrs)
        if self._retry.attempts > 1:  # every attempt is answered from one upstream call
            hdrs[headers.IDEMPOTENT] = "1"
        attempts = self._attempts(hdrs)
        request_id = attempts.request_id
        shared = hdrs.get(headers.IDEMPOTENT) == "1"  # a lost attempt is left for the retry
        while True:
            messages = self._send(subject, body, hdrs, attempts.next(), cancel_when_lost=not shared)
            started = False
            failure: APIError
            async with contextlib.aclosing(messages):
                try:
                    async for msg in messages:
                        kind = (msg.headers or {}).get(headers.STREAM)
                        if kind not in {"chunk", "end"}:
                            status = int((msg.headers or {}).get(headers.STATUS, "500"))
                            failure = from_reply(status, msg.data, dict(msg.headers or {}))
                            if started or status != 503:
                                raise failure
                            break
                        started = True
                        yield msg
                    else:
                        return
                except ChatStreamError as exc:  # nobody serves the subject
                    failure = from_reply(exc.status, exc.body, hdrs)
                except TimeoutError as exc:
                    if started:
                        raise DeadlineError(
                            504,
                            "the stream did not finish in time",
                            code="deadline_exceeded",
                            request_id=request_id,
                        ) from exc
                    failure = DeadlineError(
                        504, "no reply in time", code="deadline_exceeded", request_id=request_id
                    )
            await _back_off(attempts, failure)

    def _attempts(self, hdrs: dict[str, str]) -> Attempts:
        """The account of a call's attempts; each asks for keepalives a quarter as often as
        the policy's silence bound."""
        hdrs[headers.KEEPALIVE_MS] = str(keepalive_ms(self._retry.attempt_timeout_s))
        return Attempts(self._retry, hdrs, budget_s=int(hdrs[headers.TIMEOUT_MS]) / 1000)

    def _send(
        self,
        subject: str,
        body: bytes,
        hdrs: dict[str, str],
        remaining_s: float,
        *,
        cancel_when_lost: bool,
    ) -> AsyncGenerator[Msg, None]:
        """One attempt: its messages, keepalives left out (see :func:`stream_messages`)."""
        return stream_messages(
            self.nc,
            body,
            subject=subject,
            request_headers=hdrs,
            deadline_s=remaining_s,
            first_s=self._retry.attempt_timeout_s,
            cancel_when_lost=cancel_when_lost,
        )

    def _check_size(self, body: bytes, hdrs: dict[str, str]) -> None:
        """Refuse, before publishing, a request the server would not take (a publish over
        its ``max_payload`` is an error of the connection, not an answer).

        Raises:
            BadRequestError: 413 ``request_too_large``, naming the server's limit.
        """
        limit = self.nc.max_payload - headers.HEADER_ROOM
        if len(body) > limit:
            raise BadRequestError(
                413,
                f"request body is {len(body)} bytes; the NATS server takes {limit} "
                f"(its max_payload, {self.nc.max_payload}, less {headers.HEADER_ROOM} for "
                "headers)",
                code="request_too_large",
                request_id=hdrs.get(headers.REQUEST_ID),
            )

    def _subject(self, api: str) -> str:
        if self._tenant:
            return subjects.tenant_subject(self._tenant, api)
        return _SUBJECTS.get(api, subjects.MESSAGES)


#: The subject of each API for a client without a tenant of its own.
_SUBJECTS = {
    "chat": subjects.CHAT,
    "embeddings": subjects.EMBEDDINGS,
    "responses": subjects.RESPONSES,
}


def _body(request: Body, *, stream: bool) -> bytes:
    """The request's JSON with ``stream`` set as the method requires."""
    if isinstance(request, bytes):
        request = _any.decode(request)
    if isinstance(request, ChatRequest):
        request = msgspec.to_builtins(request)
    assert isinstance(request, Mapping)
    fields = {**request, "stream": stream}
    if not stream:
        fields.pop("stream_options", None)
    return _encoder.encode(fields)


async def _back_off(attempts: Attempts, failure: APIError) -> None:
    """Wait before the next attempt, or raise ``failure`` when none may follow."""
    retry_after = None if failure.retry_after is None else str(failure.retry_after)
    if not await attempts.back_off(retry_after):
        raise failure
