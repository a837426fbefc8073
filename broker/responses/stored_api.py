"""The Responses API's subjects that name a stored response by id: read it (or follow its
events), delete it, cancel it, list its input items.

| subject                          | does                                                 |
|----------------------------------|------------------------------------------------------|
| ``llm.responses.get``            | the stored response (with ``stream``: its events)    |
| ``llm.responses.delete``         | deletes it                                           |
| ``llm.responses.cancel``         | cancels a background response                        |
| ``llm.responses.input_items``    | its input items, an OpenAI list a page at a time     |

A response belongs to the tenant that created it: any other tenant gets a 404 as for an id
that never existed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker.errors import BrokerError, InvalidRequest, ResponseNotFound, ResponsesStoreDown
from broker.responses.background import BackgroundJobs
from broker.responses.follow import Followers
from broker.responses.states import cancelled
from broker.responses.store import ResponseStore, StoreUnavailable
from broker.tenancy.tenants import Caller
from schemas import headers
from schemas.responses import StoredResponse, listed_item

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "StoredApi", "reply"]

log = logging.getLogger("llm_edge.responses")

_encoder = msgspec.json.Encoder()
_any = msgspec.json.Decoder(dict[str, Any])
#: input_items pages: OpenAI's default and largest.
DEFAULT_PAGE, MAX_PAGE = 20, 100


class _Query(msgspec.Struct):
    id: str
    after: str | None = None
    limit: int = DEFAULT_PAGE
    order: str = "desc"
    stream: bool = False
    starting_after: int = -1


_query = msgspec.json.Decoder(_Query)


async def reply(
    nc: Client, msg: Msg, status: int, body: bytes, extra: dict[str, str] | None = None
) -> None:
    """Answer ``msg`` with ``status``, ``body`` and ``extra`` headers (its request id
    echoed)."""
    hdrs = msg.headers or {}
    out = {**(extra or {}), headers.STATUS: str(status)}
    if headers.REQUEST_ID in hdrs:
        out[headers.REQUEST_ID] = hdrs[headers.REQUEST_ID]
    if msg.reply:
        await nc.publish(msg.reply, body, headers=out)


class StoredApi:
    """Answers the subjects that name a stored response.

    Args:
        nc: the connection replies go out on.
        store: the stored responses.
        identify: who the caller of a subject (with these headers) is.
        jobs: background responses (``None``: none here).
        followers: callers following a streamed background response.
    """

    def __init__(
        self,
        nc: Client,
        store: Callable[[], ResponseStore],
        identify: Callable[[str, dict[str, str]], Awaitable[Caller]],
        *,
        jobs: BackgroundJobs | None,
        followers: Followers | None,
    ) -> None:
        self._nc = nc
        self._store = store
        self._identify = identify
        self._jobs = jobs
        self._followers = followers

    async def _answer(
        self,
        msg: Msg,
        work: Callable[[_Query, str], Awaitable[tuple[int, bytes]]],
        extra: dict[str, str] | None = None,
    ) -> None:
        """Identify the caller, read the query, answer with ``work`` (errors as envelopes;
        ``extra``: headers ``work`` adds to a success)."""
        if not msg.reply:
            return
        try:
            caller = await self._identify(msg.subject, msg.headers or {})
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
        await reply(self._nc, msg, status, body, extra if status == 200 else None)

    async def _read(self, query: _Query, tenant: str) -> StoredResponse:
        found = await self._store().read(query.id, tenant)
        if found is None:
            raise ResponseNotFound(f"Response with id '{query.id}' not found.")
        return found[0]

    async def get(self, msg: Msg) -> None:
        """``llm.responses.get``: the stored response; with ``stream``, a streamed background
        response's events after ``starting_after``, live up to its last one. A background
        response charged when it finished (one that ran at its upstream) comes with what it
        cost (``Llm-Cost-Usd``, ``Llm-Service-Tier``)."""
        charged: dict[str, str] = {}

        async def work(query: _Query, tenant: str) -> tuple[int, bytes]:
            stored = await self._read(query, tenant)
            if query.stream:
                if not stored.streamed or self._followers is None or not msg.reply:
                    message = "Only background responses created with stream can be streamed."
                    raise InvalidRequest(message, param="stream")
                self._followers.spawn(msg.reply, msg.headers or {}, query.id, query.starting_after)
                return 0, b""
            charged.update(stored.charged)
            return 200, bytes(stored.response)

        await self._answer(msg, work, charged)

    async def _cancel(self, response_id: str, tenant: str) -> StoredResponse | None:
        """Mark the tenant's response ``cancelled`` unless it is final, and stop its run
        (nothing is halted for a response the tenant does not own). The entry as it is now,
        or ``None`` when the tenant has none."""
        found = await self._stop(response_id, tenant)
        return None if found is None else found[0]

    async def _stop(self, response_id: str, tenant: str) -> tuple[StoredResponse, bool] | None:
        """:meth:`_cancel`, and whether this cancel stopped it (it was not final)."""
        before: list[StoredResponse] = []

        def change(stored: StoredResponse) -> StoredResponse | None:
            before[:] = [stored]  # the entry the write that won was based on
            return cancelled(stored)

        found = await self._store().apply(response_id, tenant, change)
        if found is None:
            return None
        now, written = found
        if written and self._jobs is not None:
            await self._jobs.stop_run(response_id, before[0])
        return now, written

    async def delete(self, msg: Msg) -> None:
        """``llm.responses.delete``: delete it (a background one still running is
        cancelled first), and a streamed one's kept events (those of one that was still
        running but its last, which ends its followers' streams)."""

        async def work(query: _Query, tenant: str) -> tuple[int, bytes]:
            found = await self._stop(query.id, tenant)
            if not await self._store().delete(query.id, tenant):
                raise ResponseNotFound(f"Response with id '{query.id}' not found.")
            if found is not None and found[0].streamed and self._jobs is not None:
                try:
                    await self._jobs.events.forget(query.id, keep_last=found[1])
                except StoreUnavailable as exc:  # deleted all the same: ttl_s drops them
                    log.warning("the events of deleted %s were not dropped: %s", query.id, exc)
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
            now = await self._cancel(query.id, tenant)
            if now is None:
                raise ResponseNotFound(f"Response with id '{query.id}' not found.")
            return 200, bytes(now.response)

        await self._answer(msg, work)

    async def list_input_items(self, msg: Msg) -> None:
        """``llm.responses.input_items``: its input items, an OpenAI list (``order``
        ``desc`` by default, a page of ``limit`` after the item ``after``)."""

        async def work(query: _Query, tenant: str) -> tuple[int, bytes]:
            items = list((await self._read(query, tenant)).input_items)
            return 200, _encoder.encode(_page(items, query))

        await self._answer(msg, work)


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
    page = [listed_item(item) for item in items[: query.limit]]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(items) > len(page),
    }
