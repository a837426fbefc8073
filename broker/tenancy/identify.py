"""Identifying a caller whose JWT needs a key the broker does not hold yet, off the callback.

A subscription's callbacks run one after another (nats-py): a callback that waited for the
issuer's key set would hold up every other request on that broker. So the request is handed
to a task of its own, which fetches the keys (bounded by ``jwks_timeout_s``) and then goes on
as that caller; chat and embeddings pipelines both use it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from broker.errors import BrokerError
from broker.replies.sinks import ReplySink
from broker.tenancy.tenants import Caller, KeyRing
from schemas import headers

__all__ = ["identify_later"]

log = logging.getLogger("llm_edge.broker")

Refuse = Callable[[BrokerError, dict[str, str], ReplySink], Awaitable[None]]


def identify_later(
    keys: KeyRing,
    hdrs: dict[str, str],
    sink: ReplySink,
    *,
    refuse: Refuse,
    proceed: Callable[[Caller], Awaitable[None]],
    tasks: set[asyncio.Task[None]],
) -> None:
    """Fetch the keys the request's token needs, then ``proceed`` as its caller; a token that
    still fails, or a bug, is refused (``refuse``). ``tasks`` holds the task until it ends."""

    async def identified() -> None:
        try:
            caller = await keys.identify_fetching(hdrs.get(headers.AUTHORIZATION))
        except BrokerError as exc:
            await refuse(exc, hdrs, sink)
            return
        except Exception:  # a bug still answers
            log.exception("a request's token could not be checked")
            await refuse(BrokerError("internal broker error"), hdrs, sink)
            return
        await proceed(caller)

    task = asyncio.create_task(identified())
    tasks.add(task)
    task.add_done_callback(tasks.discard)
