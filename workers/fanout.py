"""One streamed call, several callers: the attempts of an idempotent stream share its messages.

A producer that lost a stream before its first chunk (its broker died, its reply was lost)
sends the request again under the same request id. The worker running the first attempt
(:mod:`workers.once` says how the retry finds it) hands every message the stream has sent so
far to the retry's reply subject, in order and with their ``Llm-Seq``, then sends the
messages to come to every reply subject that joined. The upstream is called once.

Memory: the messages sent so far are kept while the stream runs, up to ``max_log_bytes``
(past that, nobody can join it any more: a late retry runs its own call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["Fanout", "Message", "Publish"]

#: (status, body, extra reply headers) of one message of the stream.
Message = tuple[int, bytes, dict[str, str]]
#: Publishes one message to one reply subject.
Publish = Callable[[str, int, bytes, dict[str, str]], Awaitable[None]]


class Fanout:
    """The reply subjects of one stream and the messages sent to them so far.

    Args:
        publish: sends one message to one reply subject.
        reply: the first attempt's reply subject.
        max_log_bytes: the most the kept messages may take; ``0`` keeps none.
    """

    def __init__(self, publish: Publish, reply: str, *, max_log_bytes: int) -> None:
        self._publish = publish
        self.replies = [reply]
        self._log: list[Message] | None = []
        self._logged = 0
        self._max_log_bytes = max_log_bytes
        #: a join replays the log and takes its place between two messages, never amid one
        self._lock = asyncio.Lock()

    @property
    def log(self) -> list[Message] | None:
        """Every message sent so far, or ``None`` once they outgrew ``max_log_bytes``."""
        return self._log

    async def send(self, status: int, body: bytes, extra: dict[str, str]) -> None:
        """Send one message to every reply subject that joined, and keep it for the next."""
        async with self._lock:
            for reply in self.replies:
                await self._publish(reply, status, body, extra)
            if self._log is not None:  # kept once it was sent (a message too large is not)
                self._logged += len(body)
                if self._logged > self._max_log_bytes:
                    self._log = None
                else:
                    self._log.append((status, body, extra))

    async def join(self, reply: str) -> bool:
        """Send ``reply`` every message so far, then the ones to come; ``False`` when the
        messages so far were not kept (too large)."""
        async with self._lock:
            if self._log is None:
                return False
            for status, body, extra in self._log:
                await self._publish(reply, status, body, extra)
            self.replies.append(reply)
            return True

    def leave(self, reply: str) -> bool:
        """``reply``'s caller left; whether anybody still listens."""
        if reply in self.replies:
            self.replies.remove(reply)
        return bool(self.replies)
