"""The Responses API's own subjects: creating a response (stored, continuing a conversation,
or run in the background) and reading, deleting, cancelling and listing stored ones.

| subject                          | does                                                 |
|----------------------------------|------------------------------------------------------|
| ``llm.responses`` (and tenant)   | :meth:`ResponsesApi.create`: the pipeline answers it |
| ``llm.responses.get``            | the stored response                                  |
| ``llm.responses.delete``         | deletes it                                           |
| ``llm.responses.cancel``         | cancels a background response                        |
| ``llm.responses.input_items``    | its input items, an OpenAI list a page at a time     |

Who the caller is decides what it sees: a response belongs to the tenant that created it, and
any other tenant gets a 404 as for an id that never existed. The caller is identified here
once and handed to the pipeline (which then does not identify it again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker.errors import (
    BrokerError,
    InvalidRequest,
    ResponseNotFound,
    ResponsesStoreDown,
)
from broker.pipeline import ChatPipeline
from broker.replies.sinks import NatsSink, ReplySink
from broker.responses.background import BackgroundJobs
from broker.responses.sink import StoringSink
from broker.responses.store import ResponseStore, StoreUnavailable
from broker.tenancy.tenants import Caller, KeyRing, KeysNeeded
from schemas import headers, subjects
from schemas.api import Api
from schemas.responses import (
    HISTORY_FIELD,
    ResponseStatus,
    StoredResponse,
    input_items,
    new_id,
    response_object,
)

__all__ = ["ResponsesApi"]

_encoder = msgspec.json.Encoder()
_any = msgspec.json.Decoder(dict[str, Any])
#: Headers a background response runs with (the rest belong to its creating call).
_JOB_HEADERS = (
    headers.CACHE_CONTROL,
    headers.CACHE_NAMESPACE,
    headers.PRIORITY,
    headers.TIMEOUT_MS,
    headers.TRACEPARENT,
    *headers.UPSTREAM_HEADERS,
)
#: input_items pages: OpenAI's default and largest.
DEFAULT_PAGE, MAX_PAGE = 20, 100


class _Shape(msgspec.Struct):
    """What this wing reads of a request (the pipeline validates the rest)."""

    model: str = ""
    input: str | list[dict[str, Any]] | None = None
    stream: bool | None = None
    background: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    history: msgspec.Raw | None = msgspec.field(name=HISTORY_FIELD, default=None)


class _Query(msgspec.Struct):
    id: str
    after: str | None = None
    limit: int = DEFAULT_PAGE
    order: str = "desc"
    stream: bool = False
    starting_after: int = -1


_shape = msgspec.json.Decoder(_Shape)
_query = msgspec.json.Decoder(_Query)


class ResponsesApi:
    """Answers the Responses API's subjects.

    Args:
        nc: the connection replies go out on.
        pipeline: answers the requests.
        keys: identifies callers.
        store: the stored responses (``None``: JetStream has none; nothing is stored).
        jobs: runs background responses (``None``: refused).
        subject_caller: the tenant a tenant-bound subject names (or a 401).
    """

    def __init__(
        self,
        nc: Client,
        pipeline: ChatPipeline,
        keys: KeyRing,
        store: ResponseStore | None,
        *,
        jobs: BackgroundJobs | None,
        subject_caller: Callable[[str], Caller],
    ) -> None:
        self._nc = nc
        self._pipeline = pipeline
        self._keys = keys
        self._store = store
        self._jobs = jobs
        self._subject_caller = subject_caller
        #: callers following a streamed background response
        self._following: set[asyncio.Task[None]] = set()

    def subjects(self) -> dict[str, Callable[[Msg], Awaitable[None]]]:
        """The queue subjects this wing answers, with their callbacks."""
        return {
            subjects.RESPONSES: self.create,
            subjects.TENANT_RESPONSES: self.create,
            subjects.RESPONSES_GET: self.get,
            subjects.RESPONSES_DELETE: self.delete,
            subjects.RESPONSES_CANCEL: self.cancel,
            subjects.RESPONSES_INPUT_ITEMS: self.list_input_items,
        }

    async def _caller(self, subject: str, hdrs: dict[str, str]) -> Caller:
        if subjects.tenant_of(subject):
            return self._subject_caller(subject)
        authorization = hdrs.get(headers.AUTHORIZATION)
        try:
            return self._keys.identify(authorization)
        except KeysNeeded:
            return await self._keys.identify_fetching(authorization)

    def _stored(self) -> ResponseStore:
        if self._store is None:
            raise ResponsesStoreDown("stored responses need JetStream, which this broker lacks")
        return self._store

    async def create(self, msg: Msg) -> None:
        """``llm.responses``: a response, stored unless ``store: false``; continuing
        ``previous_response_id``'s conversation; queued when ``background: true``."""
        if not msg.reply:
            return
        hdrs = msg.headers or {}
        sink: ReplySink = NatsSink(self._nc, msg.reply)
        try:
            caller = await self._caller(msg.subject, hdrs)
            shape = _shape.decode(msg.data)
        except msgspec.MsgspecError:  # the pipeline says what is wrong with it
            await self._pipeline.handle(msg.data, hdrs, sink, reply_to=msg.reply, api=Api.RESPONSES)
            return
        except BrokerError as exc:
            await self._pipeline.refuse(exc, hdrs, sink)
            return
        try:
            data, record = await self._conversation(msg.data, shape, caller.tenant.name)
            if shape.background:
                await self._queue(msg, data, shape, record, caller)
                return
        except BrokerError as exc:
            await self._pipeline.refuse(exc, hdrs, sink)
            return
        if shape.store is not False and self._store is not None:
            sink = StoringSink(sink, self._store, record)
        await self._pipeline.handle(data, hdrs, sink, caller, reply_to=msg.reply, api=Api.RESPONSES)

    async def _conversation(
        self, data: bytes, shape: _Shape, tenant: str
    ) -> tuple[bytes, StoredResponse]:
        """The body the pipeline answers (a continued conversation's earlier turns added) and
        the entry its response is stored in."""
        history: list[dict[str, Any]] = []
        upstream_id = provider = ""
        previous = shape.previous_response_id
        if previous:
            try:
                found = await self._stored().read(previous, tenant)
            except StoreUnavailable as exc:
                raise ResponsesStoreDown(str(exc), retry_after=2) from None
            if found is None:
                raise ResponseNotFound(
                    f"Previous response with id '{previous}' not found.",
                    param="previous_response_id",
                )
            earlier = found[0]
            response = _any.decode(earlier.response)
            history = [*earlier.history, *earlier.input_items, *response.get("output", [])]
            upstream_id = earlier.upstream_id or str(response.get("id", ""))
            provider = earlier.provider
        if history or shape.history is not None:  # a caller's own history field is dropped
            body = _any.decode(data)
            body.pop(HISTORY_FIELD, None)
            if history:
                body[HISTORY_FIELD] = {
                    "items": history,
                    "upstream_id": upstream_id,
                    "provider": provider,
                }
            data = _encoder.encode(body)
        record = StoredResponse(tenant, b"null", input_items(shape.input), history)
        return data, record

    async def _queue(
        self, msg: Msg, data: bytes, shape: _Shape, record: StoredResponse, caller: Caller
    ) -> None:
        """Accept a background response: checked, stored as ``queued``, its job published;
        the queued response is the reply."""
        hdrs = msg.headers or {}
        if self._jobs is None:
            raise InvalidRequest("background responses are off here", param="background")
        if shape.store is False:
            raise InvalidRequest("a background response must be stored", param="store")
        self._pipeline.check(data, hdrs, caller, Api.RESPONSES)
        response_id = new_id("resp")
        fields = _any.decode(data)
        queued = response_object(
            fields,
            response_id=response_id,
            model=shape.model,
            status=ResponseStatus.QUEUED,
            output=[],
            created_at=time.time(),
        )
        body = _encoder.encode(queued)
        kept = {name: hdrs[name] for name in _JOB_HEADERS if name in hdrs}
        streamed = bool(shape.stream)
        job = msgspec.structs.replace(
            record, response=body, body=data, headers=kept, streamed=streamed
        )
        try:
            await self._stored().put(response_id, job)
            if streamed:  # its first event, so a caller has its id before the run begins
                created = {"type": "response.created", "sequence_number": 0, "response": queued}
                await self._jobs.events.record(
                    response_id, 0, "response.created", _encoder.encode(created)
                )
            await self._jobs.submit(response_id, caller.tenant.name)
        except StoreUnavailable as exc:
            raise ResponsesStoreDown(str(exc), retry_after=2) from None
        if streamed:
            self._spawn_follow(msg, response_id, -1)
            return
        await self._reply(msg, 200, body)

    def _spawn_follow(self, msg: Msg, response_id: str, starting_after: int) -> None:
        """Follow in a task of its own: the subject's callback takes the next request now."""
        if self._jobs is None or not msg.reply:
            return
        request_id = (msg.headers or {}).get(headers.REQUEST_ID, "")
        sink = NatsSink(self._nc, msg.reply)
        follow = self._jobs.events.relay(sink, response_id, starting_after, request_id)
        task = asyncio.create_task(follow)
        self._following.add(task)
        task.add_done_callback(self._following.discard)

    async def _reply(self, msg: Msg, status: int, body: bytes) -> None:
        hdrs = msg.headers or {}
        out = {headers.STATUS: str(status)}
        if headers.REQUEST_ID in hdrs:
            out[headers.REQUEST_ID] = hdrs[headers.REQUEST_ID]
        await self._nc.publish(msg.reply, body, headers=out)

    async def _answer(
        self, msg: Msg, work: Callable[[_Query, str], Awaitable[tuple[int, bytes]]]
    ) -> None:
        """Identify the caller, read the query, answer with ``work`` (errors as envelopes)."""
        if not msg.reply:
            return
        try:
            caller = await self._caller(msg.subject, msg.headers or {})
            try:
                query = _query.decode(msg.data)
            except msgspec.MsgspecError as exc:
                raise InvalidRequest(f"bad query: {exc}") from None
            status, body = await work(query, caller.tenant.name)
            if not status:  # answered as a stream
                return
        except StoreUnavailable as exc:
            error = ResponsesStoreDown(str(exc), retry_after=2)
            status, body = error.status, error.envelope()
        except BrokerError as exc:
            status, body = exc.status, exc.envelope()
        await self._reply(msg, status, body)

    async def _read(self, query: _Query, tenant: str) -> StoredResponse:
        found = await self._stored().read(query.id, tenant)
        if found is None:
            raise ResponseNotFound(f"Response with id '{query.id}' not found.")
        return found[0]

    async def get(self, msg: Msg) -> None:
        """``llm.responses.get``: the stored response; with ``stream``, a streamed background
        response's events after ``starting_after``, live up to its last one."""
        following: list[str] = []

        async def work(query: _Query, tenant: str) -> tuple[int, bytes]:
            stored = await self._read(query, tenant)
            if query.stream:
                if not stored.streamed or self._jobs is None:
                    message = "Only background responses created with stream can be streamed."
                    raise InvalidRequest(message, param="stream")
                following.append(query.id)
                return 0, b""
            return 200, bytes(stored.response)

        await self._answer(msg, work)
        if following:
            query = _query.decode(msg.data)
            self._spawn_follow(msg, query.id, query.starting_after)

    async def delete(self, msg: Msg) -> None:
        """``llm.responses.delete``: delete it (a background one still running is
        cancelled first)."""

        async def work(query: _Query, tenant: str) -> tuple[int, bytes]:
            if self._jobs is not None:
                await self._jobs.halt(query.id)
                found = await self._stored().read(query.id, tenant)
                if found is not None:
                    await self._jobs.cancel_upstream(found[0])
            if not await self._stored().delete(query.id, tenant):
                raise ResponseNotFound(f"Response with id '{query.id}' not found.")
            return 200, _encoder.encode({"id": query.id, "object": "response", "deleted": True})

        await self._answer(msg, work)

    async def cancel(self, msg: Msg) -> None:
        """``llm.responses.cancel``: a background response not finished yet is
        ``cancelled`` (its run stops wherever it is, at its upstream too when it runs there);
        a finished one is left as it is."""

        async def work(query: _Query, tenant: str) -> tuple[int, bytes]:
            stored = await self._read(query, tenant)
            if not _any.decode(stored.response).get("background"):
                raise InvalidRequest("Only background responses can be cancelled.", param="id")
            now = await self._stored().update(query.id, tenant, cancelled)
            if now is None:
                raise ResponseNotFound(f"Response with id '{query.id}' not found.")
            if self._jobs is not None:
                await self._jobs.halt(query.id)
                await self._jobs.cancel_upstream(stored)
            return 200, bytes(now.response)

        await self._answer(msg, work)

    async def list_input_items(self, msg: Msg) -> None:
        """``llm.responses.input_items``: its input items, an OpenAI list (``order``
        ``desc`` by default, a page of ``limit`` after the item ``after``)."""

        async def work(query: _Query, tenant: str) -> tuple[int, bytes]:
            items = list((await self._read(query, tenant)).input_items)
            return 200, _encoder.encode(_page(items, query))

        await self._answer(msg, work)


def cancelled(stored: StoredResponse) -> StoredResponse | None:
    """``stored`` marked ``cancelled``, or ``None`` when it finished already."""
    response = _any.decode(stored.response)
    if response.get("status") in ResponseStatus.FINAL:
        return None
    response["status"] = ResponseStatus.CANCELLED
    return msgspec.structs.replace(stored, response=_encoder.encode(response))


def _page(items: list[dict[str, Any]], query: _Query) -> dict[str, Any]:
    """One page of an OpenAI list.

    Raises:
        InvalidRequest: a bad ``order`` or ``limit``.
    """
    if query.order not in ("asc", "desc"):
        raise InvalidRequest("order must be asc or desc", param="order")
    if not 1 <= query.limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}", param="limit")
    if query.order == "desc":
        items.reverse()
    if query.after is not None:
        ids = [item.get("id") for item in items]
        items = items[ids.index(query.after) + 1 :] if query.after in ids else []
    page = items[: query.limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(items) > len(page),
    }
