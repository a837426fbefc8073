"""Keeps a response as it goes to its caller (``store``): the whole answer, or the last event
of a stream (which carries the whole response), is stored before it is relayed, so the
caller that has its answer can already read it back or continue the conversation. The
provider that served it is kept with it (a conversation continued on another upstream sends
that one its earlier turns, not an id it does not know)."""

from __future__ import annotations

import logging

import msgspec

from broker.replies.sinks import ReplySink
from broker.request import Piece, Reply
from broker.responses.store import EntryTooLarge, ResponseStore, StoreUnavailable
from schemas import StreamEnd, headers
from schemas.response_events import FINAL_EVENTS
from schemas.responses import StoredResponse

__all__ = ["StoringSink"]

log = logging.getLogger("llm_edge.responses")


class _Id(msgspec.Struct):
    id: str


class _Final(msgspec.Struct):
    response: msgspec.Raw


_id = msgspec.json.Decoder(_Id)
_final = msgspec.json.Decoder(_Final)


class StoringSink:
    """A :class:`~broker.replies.sinks.ReplySink` that stores the response it relays.

    Args:
        inner: where the answer goes.
        store: the stored responses.
        record: the entry to store (its ``response`` is filled in with the answer).
    """

    def __init__(self, inner: ReplySink, store: ResponseStore, record: StoredResponse) -> None:
        self._inner = inner
        self._store = store
        self._record = record

    async def _keep(self, response: bytes, meta: dict[str, str]) -> None:
        try:
            response_id = _id.decode(response).id
            provider = meta.get(headers.PROVIDER, "")
            stored = msgspec.structs.replace(self._record, response=response, provider=provider)
            await self._store.put(response_id, stored)
        except (
            msgspec.MsgspecError,
            EntryTooLarge,
            StoreUnavailable,
        ) as exc:  # answered all the same
            log.warning("a response could not be stored: %s", exc)

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        """Store a successful answer, then relay it."""
        if reply.status == 200:
            await self._keep(reply.body, {**meta, **reply.headers})
        await self._inner.whole(reply, meta)

    async def chunk(self, piece: Piece, meta: dict[str, str]) -> None:
        """Store the response the last event carries, then relay the event."""
        if piece.event in FINAL_EVENTS:
            try:
                response = bytes(_final.decode(piece.data).response)
            except msgspec.MsgspecError:
                response = b""
            if response:
                await self._keep(response, meta)
        await self._inner.chunk(piece, meta)

    async def end(self, end: StreamEnd, meta: dict[str, str]) -> None:
        """Relayed."""
        await self._inner.end(end, meta)

    async def error(self, reply: Reply, meta: dict[str, str], *, streaming: bool) -> None:
        """Relayed (a failed response is not stored)."""
        await self._inner.error(reply, meta, streaming=streaming)
