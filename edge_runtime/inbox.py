"""One wildcard inbox for every call a process makes (the broker forwarding to workers, the
bridge relaying whole requests).

A forwarded call may be answered by several messages (keepalives while the worker waits for
the upstream, stream chunks, then the end or the answer), so ``nc.request`` (one reply) does
not fit, and a subscription per call costs a SUB and an UNSUB round of protocol each. One
``_INBOX.<id>.*`` subscription routes each message to its call's queue by the last token.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.nuid import NUID

from edge_runtime.process import PENDING_MSGS_LIMIT

__all__ = ["Inbox"]


class Inbox:
    """Reply subjects with a queue each, on one subscription.

    Args:
        nc: the connection calls are made on.
    """

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox()
        self._queues: dict[str, asyncio.Queue[Msg]] = {}
        self._nuid = NUID()
        self._subscribed: asyncio.Task[Subscription] | None = None

    async def open(self, queue: asyncio.Queue[Msg] | None = None) -> tuple[str, asyncio.Queue[Msg]]:
        """A fresh reply subject and the queue its messages arrive in (call :meth:`close`):
        ``queue`` when given (several subjects may feed one queue), else a new one."""
        if self._subscribed is None:  # first call: subscribe once; concurrent ones share it
            self._subscribed = asyncio.ensure_future(
                self._nc.subscribe(
                    f"{self._prefix}.*", cb=self._route, pending_msgs_limit=PENDING_MSGS_LIMIT
                )
            )
        subscribed = self._subscribed
        if not subscribed.done():
            await asyncio.shield(subscribed)
        token = self._nuid.next().decode()
        if queue is None:
            queue = asyncio.Queue()
        self._queues[token] = queue
        return f"{self._prefix}.{token}", queue

    def close(self, subject: str) -> None:
        """Forget a reply subject (late messages for it are dropped)."""
        self._queues.pop(subject.rpartition(".")[2], None)

    async def _route(self, msg: Msg) -> None:
        queue = self._queues.get(msg.subject.rpartition(".")[2])
        if queue is not None:
            queue.put_nowait(msg)
