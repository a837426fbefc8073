"""Slow is not lost: a caller that asks for it (``Llm-Keepalive-Ms``) gets an empty
``Llm-Stream: keepalive`` message on its reply subject at that interval until its answer
begins, so it can tell a call that is merely slow (a reasoning model thinking for minutes)
from one whose broker or reply was lost, and send it again only then.

One ticker per broker process looks at every waiting caller (no task per request), as the
workers do for the broker. A keepalive is sent only by a broker that is working on the
request: a dead broker sends none, and its caller's silence timer runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from nats.aio.client import Client

from broker.replies.sinks import ReplySink
from broker.request import Piece, Reply
from schemas import StreamEnd, headers

__all__ = ["MAX_KEEPALIVE_S", "MIN_KEEPALIVE_S", "Heartbeats", "keepalive_s"]

#: How often the ticker looks at the waiting callers.
TICK_S = 0.25
#: The shortest and longest interval a caller may ask for.
MIN_KEEPALIVE_S = TICK_S
MAX_KEEPALIVE_S = 60.0


def keepalive_s(hdrs: dict[str, str]) -> float | None:
    """The interval a request asks for (``Llm-Keepalive-Ms``), within bounds; ``None`` when
    it asks for none (or names no number)."""
    raw = hdrs.get(headers.KEEPALIVE_MS)
    if raw is None:
        return None
    try:
        every = float(raw) / 1000
    except ValueError:
        return None
    if not every > 0:  # also NaN
        return None
    return min(max(every, MIN_KEEPALIVE_S), MAX_KEEPALIVE_S)


class Heartbeats:
    """The callers waiting for their answer's first message, and their keepalives.

    Args:
        nc: where keepalives are published.
        clock: the event loop's clock.
    """

    def __init__(self, nc: Client, clock: Callable[[], float]) -> None:
        self._nc = nc
        self._clock = clock
        #: reply subject -> (interval, when the last message went there, request id)
        self._waiting: dict[str, tuple[float, float, str]] = {}
        self._ticker: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def start(self) -> None:
        """Start the ticker (call on the service's loop)."""
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="heartbeats")

    async def stop(self) -> None:
        """Stop the ticker."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    def watch(self, sink: ReplySink, reply_to: str, every_s: float, request_id: str) -> ReplySink:
        """Keep ``reply_to`` alive every ``every_s`` until the answer's first message goes
        through the returned sink (or :meth:`forget`)."""
        self._waiting[reply_to] = (every_s, self._clock(), request_id)
        return _Answering(sink, lambda: self.forget(reply_to))

    def forget(self, reply_to: str) -> None:
        """No more keepalives to ``reply_to`` (answered, cancelled, or given up)."""
        self._waiting.pop(reply_to, None)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = self._clock()
            for reply, (every, last, request_id) in list(self._waiting.items()):
                if now - last < every or reply not in self._waiting:
                    continue
                self._waiting[reply] = (every, now, request_id)
                hdrs = {headers.STREAM: "keepalive", headers.REQUEST_ID: request_id}
                with contextlib.suppress(Exception):  # reconnecting: the next tick tries again
                    await self._nc.publish(reply, b"", headers=hdrs)


class _Answering:
    """A sink that stops its caller's keepalives once the answer begins."""

    def __init__(self, sink: ReplySink, answered: Callable[[], None]) -> None:
        self._sink = sink
        self._answered = answered

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        self._answered()
        await self._sink.whole(reply, meta)

    async def chunk(self, piece: Piece, meta: dict[str, str]) -> None:
        self._answered()
        await self._sink.chunk(piece, meta)

    async def end(self, end: StreamEnd, meta: dict[str, str]) -> None:
        self._answered()
        await self._sink.end(end, meta)

    async def error(self, reply: Reply, meta: dict[str, str], *, streaming: bool) -> None:
        self._answered()
        await self._sink.error(reply, meta, streaming=streaming)
