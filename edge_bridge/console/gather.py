"""Scatter-gather over NATS: one request, every responder's reply within a short window."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout

__all__ = ["GATHER_WINDOW_S", "gather"]

#: How long a scatter-gather waits for replies. Brokers answer status in well under 10 ms on
#: one host; the window leaves room for a NATS cluster hop or two.
GATHER_WINDOW_S = 0.3


async def gather(
    nc: Client,
    subject: str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    window_s: float = GATHER_WINDOW_S,
    expect: int = 0,
) -> list[Msg]:
    """Publish once and collect every reply until ``window_s`` passes.

    Args:
        nc: the connection.
        subject: a subject every service listens on (no queue group).
        body: the request.
        headers: request headers.
        window_s: how long to wait for replies.
        expect: return as soon as this many replies are in (0: wait the whole window); a
            service that went away then costs the window, a steady mesh costs one round trip.

    Returns:
        The replies, in arrival order.
    """
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    replies: list[Msg] = []
    try:
        await nc.publish(subject, body, reply=inbox, headers=headers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window_s
        while not expect or len(replies) < expect:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                replies.append(await sub.next_msg(timeout=left))
            except (NatsTimeout, TimeoutError):
                break
    finally:
        await sub.unsubscribe()
    return replies
