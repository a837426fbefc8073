"""The Responses API's own subjects: creating a response (stored, continuing a conversation,
or accepted to run in the background) here, and reading, deleting, cancelling and listing
stored ones (:mod:`broker.responses.stored_api`).

| subject                          | does                                                 |
|----------------------------------|------------------------------------------------------|
| ``llm.responses`` (and tenant)   | :meth:`ResponsesApi.create`: the pipeline answers it |
| ``llm.responses.get`` ...        | :class:`~broker.responses.stored_api.StoredApi`      |

Who the caller is decides what it sees: a response belongs to the tenant that created it, and
any other tenant gets a 404 as for an id that never existed. The caller is identified here
once and handed to the pipeline (which then does not identify it again).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker.errors import (
    BrokerError,
    InvalidRequest,
    RequestTooLarge,
    ResponseNotFound,
    ResponsesStoreDown,
)
from broker.pipeline import ChatPipeline
from broker.replies.sinks import NatsSink, ReplySink
from broker.responses.background import BackgroundJobs
from broker.responses.charges import key_fields
from broker.responses.follow import Followers
from broker.responses.sink import StoringSink
from broker.responses.store import EntryTooLarge, ResponseStore, StoreUnavailable
from broker.responses.stored_api import StoredApi, reply
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


class _Shape(msgspec.Struct):
    """What this wing reads of a request (the pipeline validates the rest)."""

    model: str = ""
    input: str | list[dict[str, Any]] | None = None
    stream: bool | None = None
    background: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    history: msgspec.Raw = msgspec.field(name=HISTORY_FIELD, default_factory=msgspec.Raw)


_shape = msgspec.json.Decoder(_Shape)


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
        self.followers = None if jobs is None else Followers(nc, jobs.events)
        self._by_id = StoredApi(nc, self._stored, self._caller, jobs=jobs, followers=self.followers)

    def subjects(self) -> dict[str, Callable[[Msg], Awaitable[None]]]:
        """The queue subjects this wing answers, with their callbacks."""
        return {
            subjects.RESPONSES: self.create,
            subjects.TENANT_RESPONSES: self.create,
            subjects.RESPONSES_GET: self._by_id.get,
            subjects.RESPONSES_DELETE: self._by_id.delete,
            subjects.RESPONSES_CANCEL: self._by_id.cancel,
            subjects.RESPONSES_INPUT_ITEMS: self._by_id.list_input_items,
        }

    async def stop(self) -> None:
        """End the callers' follows of streamed background responses (each is told so)."""
        if self.followers is not None:
            await self.followers.stop()

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
        if history or shape.history:  # a caller's own history field is dropped
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
        # admitted now as a foreground request is (402/429 at once), its run not counted again
        counted = await self._pipeline.accept(data, hdrs, caller, Api.RESPONSES)
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
            record,
            response=body,
            body=data,
            headers=kept,
            streamed=streamed,
            counted=counted,
            **key_fields(caller),
        )
        try:
            await self._stored().put(response_id, job)
            if streamed:  # its first event, so a caller has its id before the run begins
                created = {"type": "response.created", "sequence_number": 0, "response": queued}
                await self._jobs.events.record(
                    response_id, 0, "response.created", _encoder.encode(created)
                )
            await self._jobs.submit(response_id, caller.tenant.name)
        except EntryTooLarge as exc:  # it keeps the body and the input items: about twice it
            message = f"{exc}, over the transport limit: a background request must be smaller"
            raise RequestTooLarge(message) from None
        except StoreUnavailable as exc:
            raise ResponsesStoreDown(str(exc), retry_after=2) from None
        if streamed and self.followers is not None and msg.reply:
            self.followers.spawn(msg.reply, hdrs, response_id, -1)
            return
        await reply(self._nc, msg, 200, body)
