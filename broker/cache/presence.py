"""Which keys the NATS KV L2 may hold, known in the broker: a miss skips the L2 round trip.

A read of a key the bucket does not hold is a JetStream round trip that finds nothing: at
one connection it was about a tenth of a miss's added latency. :class:`Presence` keeps a Bloom
filter of the keys written to the bucket, fed by a headers-only ordered consumer (the last
message of every key first, then every write by any broker) and by this broker's own writes at
once. :meth:`Presence.absent` is ``True`` only when the key is certainly not there:

- until the consumer has caught up with the bucket (at start, after a rebuild), nothing is
  certain: every read goes to the server, as before;
- a purged or expired key stays "maybe": its read goes to the server and misses, as before;
- another broker's write reaches the filter a few milliseconds after the server stored it: a
  read in that window misses, as a read racing the write did before;
- filled by too many writes since it was built, the filter is rebuilt from a fresh snapshot.

The filter is 2 MiB (2^24 bits, 3 bits a key): at 200,000 keys one absent key in 20,000 still
reads the server, at 3 million one in seven (then it is rebuilt).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

__all__ = ["BITS", "REBUILD_AFTER", "Presence"]

log = logging.getLogger("llm_edge.broker")

#: Bits of the filter (a power of two).
BITS = 1 << 24
#: Keys added before the filter is rebuilt from the bucket's live keys.
REBUILD_AFTER = 3_000_000
#: How long a failed start waits before the next try.
RETRY_S = 30.0
_MASK = BITS - 1


class Presence:
    """A Bloom filter of the keys of one KV bucket, kept current by a consumer.

    Args:
        js: JetStream of the broker's connection.
        stream: the bucket's stream (``KV_<bucket>``).
        subject_prefix: ``$KV.<bucket>.``; keys are what follows it.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        subject_prefix: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._js = js
        self._stream = stream
        self._prefix = subject_prefix
        self._clock = clock
        self._bits = bytearray(BITS >> 3)
        self._added = 0
        self._ready = False
        self._sub: JetStreamContext.PushSubscription | None = None
        self._starting: asyncio.Task[None] | None = None
        self._next_try = 0.0
        self._closed = False

    @property
    def ready(self) -> bool:
        """Whether the filter has caught up with the bucket (``absent`` can say yes)."""
        return self._ready

    def absent(self, key: str) -> bool:
        """Whether the bucket certainly does not hold ``key`` (a subject key)."""
        if not self._ready:
            self._maybe_start()
            return False
        bits, h = self._bits, hash(key)
        for position in (h & _MASK, (h >> 24) & _MASK, (h >> 40) & _MASK):
            if not bits[position >> 3] & (1 << (position & 7)):
                return True
        return False

    def add(self, key: str) -> None:
        """Note that ``key`` (a subject key) is, or is about to be, in the bucket (its write
        is counted when the consumer delivers it, like every broker's)."""
        bits, h = self._bits, hash(key)
        for position in (h & _MASK, (h >> 24) & _MASK, (h >> 40) & _MASK):
            bits[position >> 3] |= 1 << (position & 7)

    async def start(self) -> None:
        """Subscribe: the last message of every key, then every write (headers only)."""
        self._next_try = self._clock() + RETRY_S
        try:
            info = await self._js.stream_info(self._stream)
            self._sub = await self._js.subscribe(
                self._prefix + ">",
                stream=self._stream,
                cb=self._seen,
                ordered_consumer=True,
                headers_only=True,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            )
        except Exception as exc:  # JetStream unavailable: every read goes to the server
            log.warning("L2 presence filter unavailable (%s); retrying in %.0fs", exc, RETRY_S)
            return
        if info.state.messages == 0:
            self._ready = True

    async def stop(self) -> None:
        """Unsubscribe."""
        self._closed = True
        self._ready = False
        if self._starting is not None:
            self._starting.cancel()
        await self._unsubscribe()

    async def _rebuild(self) -> None:
        await self._unsubscribe()
        self._bits = bytearray(BITS >> 3)
        self._added = 0
        await self.start()

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _maybe_start(self) -> None:
        if self._closed or self._sub is not None or self._clock() < self._next_try:
            return
        if self._starting is None or self._starting.done():
            self._starting = asyncio.ensure_future(self.start())

    async def _seen(self, msg: Msg) -> None:
        self.add(msg.subject[len(self._prefix) :])
        self._added += 1  # each write of the bucket once, whichever broker made it
        if not self._ready:
            if msg.metadata.num_pending == 0:
                self._ready = True  # caught up: what is not in the filter is not in the bucket
        elif self._added > REBUILD_AFTER:
            self._ready = False
            self._starting = asyncio.ensure_future(self._rebuild())
