"""Callers following a streamed background response: the ``POST`` that created it, and every
``llm.responses.get`` with ``stream`` (from ``starting_after``). Each is served in a task of
its own, so the subject's callback takes the next request at once; the tasks are tracked, and
a stopping broker ends them (:meth:`Followers.stop`): each caller gets a 503 naming how to go
on (follow again after the last sequence number it got, from another broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client

from broker.errors import BrokerError, BrokerStopping, ResponsesStoreDown
from broker.replies.sinks import NatsSink, ReplySink
from broker.request import Reply
from broker.responses.events import ResponseEvents
from schemas import headers

__all__ = ["STOP_S", "Followers"]

log = logging.getLogger("llm_edge.responses")

#: The longest a stopping broker waits for its followers to end (each tells its caller so).
STOP_S = 2.0


class Followers:
    """The follower tasks of one broker.

    Args:
        nc: the connection replies go out on.
        events: the kept events.
    """

    def __init__(self, nc: Client, events: ResponseEvents) -> None:
        self._nc = nc
        self._events = events
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def tasks(self) -> frozenset[asyncio.Task[None]]:
        """The followers now serving a caller."""
        return frozenset(self._tasks)

    def spawn(
        self, reply_to: str, hdrs: dict[str, str], response_id: str, starting_after: int
    ) -> asyncio.Task[None] | None:
        """Follow ``response_id`` after ``starting_after`` to ``reply_to``, in a task of its
        own (``None``: the broker is stopping, and the caller was told so)."""
        sink = NatsSink(self._nc, reply_to)
        request_id = hdrs.get(headers.REQUEST_ID, "")
        meta = {headers.REQUEST_ID: request_id} if request_id else {}
        follow = (
            self._stopped(sink, meta)
            if self._stopping
            else self._follow(sink, meta, response_id, starting_after)
        )
        task = asyncio.create_task(follow, name=f"follow-{response_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _follow(
        self, sink: ReplySink, meta: dict[str, str], response_id: str, starting_after: int
    ) -> None:
        request_id = meta.get(headers.REQUEST_ID, "")
        try:
            await self._events.relay(sink, response_id, starting_after, request_id)
        except asyncio.CancelledError:
            if self._stopping:
                await self._stopped(sink, meta)
            raise
        except Exception:  # JetStream failed it: the caller is told, not left waiting
            log.warning("following %s failed", response_id, exc_info=True)
            error = ResponsesStoreDown(
                "the response's events could not be read; follow it again with "
                "starting_after set to the last sequence_number received",
                retry_after=2,
            )
            await self._tell(sink, meta, error)

    async def _stopped(self, sink: ReplySink, meta: dict[str, str]) -> None:
        """Tell the caller this broker stopped following (bounded, best effort)."""
        error = BrokerStopping(
            "the broker is stopping; follow the response again with starting_after set to "
            "the last sequence_number received",
            retry_after=1,
        )
        await self._tell(sink, meta, error)

    async def _tell(self, sink: ReplySink, meta: dict[str, str], error: BrokerError) -> None:
        """End the caller's stream with ``error`` (bounded, best effort)."""
        reply = Reply(error.status, error.envelope(), error.extra_headers)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STOP_S / 2):
                await sink.error(reply, meta, streaming=True)

    async def stop(self) -> None:
        """End every follower (each caller is told so); bounded by :data:`STOP_S`."""
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_S)
