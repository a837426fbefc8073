"""A streamed background response's events (``background: true, stream: true``), kept in the
JetStream stream :data:`~schemas.jetstream.RESPONSE_EVENTS_STREAM` while it runs and for as
long as stored responses (``[responses] ttl_s`` within ``max_bytes``).

Creating one records its ``response.created`` (queued, sequence 0) at once; the broker that
runs it records every later event (:class:`RecordingSink`), numbered on from 1 and each
published with a message id of (response id, sequence number), so a run repeated after its
broker died writes nothing twice. A caller follows them (:meth:`ResponseEvents.follow`) from
the start (the ``POST`` that created it) or after a sequence number (``GET
/v1/responses/{id}?stream=true&starting_after=N``), live until the last event.

A run repeated because its worker died mid-stream calls the upstream again, whose events may
differ from those already kept: they are kept from the first sequence number not yet kept,
so such a stream may splice two runs (the stored response is the second run's).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from broker.errors import DeadlineExceeded
from broker.replies.sinks import ReplySink
from broker.request import Piece, Reply
from broker.responses.store import StoreUnavailable
from edge_runtime.jetstream import ensure_stream
from schemas import StreamEnd, error_body, headers, subjects
from schemas.jetstream import RESPONSE_EVENTS_STREAM
from schemas.response_events import FINAL_EVENTS

__all__ = ["CANCELLED", "FOLLOW_IDLE_S", "RecordingSink", "ResponseEvents", "error_event"]

#: The longest a follower waits for the next event before it ends the stream with an error.
FOLLOW_IDLE_S = 600.0
#: The longest recording one event may take.
PUBLISH_S = 5.0
#: Events after which a stream ends (``error``: the run failed).
_LAST = FINAL_EVENTS | {"error"}
#: What a cancelled response's stream ends with (an ``error`` event with this message).
CANCELLED = "the response was cancelled"

_encode = msgspec.json.Encoder().encode
_any = msgspec.json.Decoder(dict[str, Any])

#: Sends one event to a follower: (sequence number, event name, data).
Send = Callable[[int, str, bytes], Awaitable[None]]


def error_event(seq: int, code: object, message: object) -> dict[str, Any]:
    """An ``error`` event (OpenAI's ``ResponseErrorEvent``), numbered ``seq``."""
    return {
        "type": "error",
        "code": code,
        "message": message,
        "param": None,
        "sequence_number": seq,
    }


class ResponseEvents:
    """The kept events of streamed background responses.

    Args:
        nc: the broker's connection.
    """

    def __init__(self, nc: Client) -> None:
        self._js: JetStreamContext = nc.jetstream(timeout=PUBLISH_S)

    async def open(self, *, ttl_s: float, max_bytes: int, replicas: int) -> None:
        """Create the stream (or bind to it)."""
        config = api.StreamConfig(
            name=RESPONSE_EVENTS_STREAM,
            subjects=[f"{subjects.RESPONSES_EVENTS}.>"],
            retention=api.RetentionPolicy.LIMITS,
            num_replicas=replicas,
            max_age=ttl_s,
            max_bytes=max_bytes,
        )
        await ensure_stream(self._js, config)

    async def record(self, response_id: str, seq: int, event: str, data: bytes) -> None:
        """Keep one event (a repeat of its sequence number is dropped).

        Raises:
            StoreUnavailable: JetStream did not take it.
        """
        hdrs = {headers.EVENT: event, headers.SEQ: str(seq), "Nats-Msg-Id": f"{response_id}:{seq}"}
        try:
            await self._js.publish(subjects.response_events(response_id), data, headers=hdrs)
        except (TimeoutError, NatsError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def cancelled_queued(self, response_id: str) -> None:
        """End the events of a response cancelled while it was queued: no run records any
        (a run starts only from ``queued``), so its followers would wait for
        :data:`FOLLOW_IDLE_S`; they get an ``error`` event after ``response.created``.

        Raises:
            StoreUnavailable: JetStream did not take it.
        """
        event = error_event(1, "cancelled", CANCELLED)
        await self.record(response_id, 1, "error", _encode(event))

    async def failed(self, response_id: str, code: str, message: str) -> None:
        """End the events of a response whose run failed outside its stream (no run records
        more, so its followers would wait for :data:`FOLLOW_IDLE_S`): an ``error`` event after
        the last one kept, unless they ended already.

        Raises:
            StoreUnavailable: JetStream did not answer or take it.
        """
        try:
            last = await self._js.get_last_msg(
                RESPONSE_EVENTS_STREAM, subjects.response_events(response_id)
            )
        except NotFoundError:  # none kept (gone with the stream's age): the first after 0
            kept: dict[str, str] = {}
        except (TimeoutError, NatsError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        else:
            kept = last.headers or {}
        if kept.get(headers.EVENT, "") in _LAST:
            return
        seq = int(kept.get(headers.SEQ, "0")) + 1
        await self.record(response_id, seq, "error", _encode(error_event(seq, code, message)))

    async def forget(self, response_id: str, *, keep_last: bool = False) -> None:
        """Drop the kept events of a deleted response (a JetStream purge of its subject);
        with ``keep_last``, all but the last: a response deleted while it ran ends its
        followers' streams with its last event (the ``cancelled`` error its cancel recorded,
        or the one its halted run records after), which ``ttl_s`` then drops.

        Raises:
            StoreUnavailable: JetStream did not purge them.
        """
        subject = subjects.response_events(response_id)
        try:
            await self._js.purge_stream(
                RESPONSE_EVENTS_STREAM, subject=subject, keep=1 if keep_last else None
            )
        except (TimeoutError, NatsError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def follow(self, response_id: str, starting_after: int, send: Send) -> bool:
        """Send every event after ``starting_after``, live, up to the last one.

        Returns:
            ``False`` when no event came for :data:`FOLLOW_IDLE_S`.
        """
        sub = await self._js.subscribe(
            subjects.response_events(response_id),
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.ALL,
        )
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=FOLLOW_IDLE_S)
                except (TimeoutError, NatsError):
                    return False
                hdrs = msg.headers or {}
                seq, event = int(hdrs.get(headers.SEQ, "-1")), hdrs.get(headers.EVENT, "")
                if seq > starting_after:
                    await send(seq, event, msg.data)
                if event in _LAST:
                    return True
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def relay(
        self, sink: ReplySink, response_id: str, starting_after: int, request_id: str = ""
    ) -> None:
        """:meth:`follow` to a caller as a stream (``chunk`` messages, then ``end``, or an
        error message when no event came in time)."""
        meta = {headers.REQUEST_ID: request_id} if request_id else {}

        async def send(_seq: int, event: str, data: bytes) -> None:
            await sink.chunk(Piece(data, event), meta)

        if await self.follow(response_id, starting_after, send):
            await sink.end(StreamEnd(), meta)
            return
        error = DeadlineExceeded("no event of the response came in time")
        await sink.error(Reply(error.status, error.envelope()), meta, streaming=True)


class RecordingSink:
    """A :class:`~broker.replies.sinks.ReplySink` that keeps a background run's events under
    its response id and hands the run's outcome over (:attr:`reply`).

    Every event gets its sequence number (from 1: the queued ``response.created`` is 0, so
    the upstream's own is left out); a response object in one gets our id.
    """

    def __init__(self, events: ResponseEvents, response_id: str) -> None:
        self._events = events
        self._id = response_id
        self._seq = 0
        self.reply: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

    async def _record(self, event: str, data: dict[str, Any]) -> bytes:
        self._seq += 1
        data["sequence_number"] = self._seq
        encoded = _encode(data)
        await self._events.record(self._id, self._seq, event, encoded)
        return encoded

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        """Not a stream (a failure before it began): the outcome."""
        await self.error(reply, meta, streaming=True)

    async def chunk(self, piece: Piece, meta: dict[str, str]) -> None:
        """Keep the event; the last one's response is the outcome."""
        if piece.event == "response.created" or self.reply.done():
            return
        data = _any.decode(piece.data)
        response = data.get("response")
        if isinstance(response, dict):
            response.update(id=self._id, background=True)
        await self._record(piece.event, data)
        if piece.event in FINAL_EVENTS and isinstance(response, dict):
            kept = {headers.PROVIDER: meta.get(headers.PROVIDER, "")}
            self.reply.set_result(Reply(200, _encode(response), kept))

    async def end(self, end: StreamEnd, meta: dict[str, str]) -> None:
        """A stream that ended without its last event failed."""
        if not self.reply.done():
            message = "the stream ended before the response did"
            await self.error(Reply(502, error_body(502, "invalid_response", message)), meta)

    async def error(self, reply: Reply, meta: dict[str, str], *, streaming: bool = True) -> None:
        """Keep an ``error`` event; the failure is the outcome."""
        if self.reply.done():
            return
        try:
            error = _any.decode(reply.body).get("error") or {}
        except msgspec.MsgspecError:
            error = {}
        event = error_event(0, error.get("code"), error.get("message"))
        with contextlib.suppress(StoreUnavailable):  # the outcome is stored all the same
            await self._record("error", event)
        self.reply.set_result(reply)
