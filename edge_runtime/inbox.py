"""One wildcard inbox for every call a process makes (the broker forwarding to workers, the
bridge relaying whole requests).

A forwarded call may be answered by several messages (keepalives while the worker waits for
the upstream, stream chunks, then the end or the answer), so ``nc.request`` (one reply) does
not fit, and a subscription per call costs a SUB and an UNSUB round of protocol each. One
``_INBOX.<id>.*`` subscription routes each message to its call's :class:`Mailbox` by the last
token. A mailbox is a deque and one future: an ``asyncio.Queue`` plus an ``asyncio.timeout``
around each wait cost three times as much per call.
"""

from __future__ import annotations

import asyncio
import collections

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.nuid import NUID

from edge_runtime.process import PENDING_BYTES_LIMIT, PENDING_MSGS_LIMIT

__all__ = ["Inbox", "Mailbox"]


class Mailbox:
    """The messages of one reply subject, in order, for one reader."""

    __slots__ = ("_messages", "_waiter")

    def __init__(self) -> None:
        self._messages: collections.deque[Msg] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, msg: Msg) -> None:
        """Deliver ``msg`` (wakes the reader)."""
        self._messages.append(msg)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self, wait_s: float | None = None) -> Msg:
        """The next message.

        Raises:
            TimeoutError: none came within ``wait_s`` seconds.
        """
        if not self._messages:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = None if wait_s is None else loop.call_later(wait_s, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return self._messages.popleft()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Inbox:
    """Reply subjects with a mailbox each, on one subscription.

    Args:
        nc: the connection calls are made on.
    """

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox()
        self._boxes: dict[str, Mailbox] = {}
        self._nuid = NUID()
        self._subscribed: asyncio.Task[Subscription] | None = None

    async def open(self, box: Mailbox | None = None) -> tuple[str, Mailbox]:
        """A fresh reply subject and the mailbox its messages arrive in (call :meth:`close`):
        ``box`` when given (several subjects may feed one mailbox), else a new one."""
        if self._subscribed is None:  # first call: subscribe once; concurrent ones share it
            self._subscribed = asyncio.ensure_future(
                self._nc.subscribe(
                    f"{self._prefix}.*",
                    cb=self._route,
                    pending_msgs_limit=PENDING_MSGS_LIMIT,
                    pending_bytes_limit=PENDING_BYTES_LIMIT,
                )
            )
        subscribed = self._subscribed
        if not subscribed.done():
            await asyncio.shield(subscribed)
        token = self._nuid.next().decode()
        if box is None:
            box = Mailbox()
        self._boxes[token] = box
        return f"{self._prefix}.{token}", box

    def close(self, subject: str) -> None:
        """Forget a reply subject (late messages for it are dropped)."""
        self._boxes.pop(subject.rpartition(".")[2], None)

    async def _route(self, msg: Msg) -> None:
        box = self._boxes.get(msg.subject.rpartition(".")[2])
        if box is not None:
            box.put_nowait(msg)
