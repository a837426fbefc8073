"""Roles that share a process answer each other without a NATS round trip.

``llm-edge up`` runs the broker, the workers and the bridge in one process. Each still has
its NATS connection and subscriptions (producers on other processes and hosts reach them as
always), but a request one of them publishes to a queue subject that a role in this process
serves (``llm.chat``, ``llm.messages`` and its ``.count_tokens``, ``llm.embeddings``,
``llm.provider.<name>...``) is handed to that role's callback directly, and its replies to an
inbox that a role in this process listens on come back the same way. Everything else
(cancellations, JetStream, admin, discovery, subjects nobody here serves) goes to the server
as usual.

Measured on the miss path of ``llm-edge up`` (bridge, broker, worker): a NATS hop costs each
side a publish, a socket write and a parse; two hops per miss were most of the broker's CPU.

:class:`LocalClient` is a view of a ``nats.aio.client.Client``: the methods the roles use
(``publish``, ``request``, ``subscribe``) go local first; everything else is the client's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeout

from schemas import subjects

__all__ = ["LocalClient", "LocalRoutes", "local_view"]

log = logging.getLogger("llm_edge")

Callback = Callable[[Msg], Awaitable[None]]
#: Queue subjects a role in this process may serve directly (requests, not broadcasts).
SHORTCUT_SUBJECTS = (
    subjects.CHAT,
    subjects.MESSAGES,
    subjects.COUNT_TOKENS,
    subjects.EMBEDDINGS,
)
SHORTCUT_PREFIXES = (subjects.PROVIDER_PREFIX + ".",)


def _shortcut(subject: str, queue: str) -> bool:
    return bool(queue) and (subject in SHORTCUT_SUBJECTS or subject.startswith(SHORTCUT_PREFIXES))


class LocalRoutes:
    """Who in this process serves which queue subject, and which inboxes wait here."""

    def __init__(self) -> None:
        self._servers: dict[str, list[Callback]] = {}
        self._turns = itertools.count()
        self._inboxes: dict[str, Callback] = {}  # exact subject, or "prefix.*" wildcards

    def serve(self, subject: str, cb: Callback) -> None:
        """Register a queue subscriber of this process."""
        self._servers.setdefault(subject, []).append(cb)

    def unserve(self, subject: str, cb: Callback) -> None:
        """Forget it (a draining or stopped role takes no more local requests)."""
        servers = self._servers.get(subject, [])
        if cb in servers:
            servers.remove(cb)

    def server(self, subject: str) -> Callback | None:
        """A local subscriber of ``subject`` (round robin), or ``None``."""
        servers = self._servers.get(subject)
        if not servers:
            return None
        return servers[next(self._turns) % len(servers)]

    def listen(self, inbox: str, deliver: Callback) -> None:
        """Deliver messages for ``inbox`` (or ``prefix.*``) to ``deliver``."""
        self._inboxes[inbox] = deliver

    def forget(self, inbox: str) -> None:
        """Stop delivering for ``inbox``."""
        self._inboxes.pop(inbox, None)

    def listener(self, subject: str) -> Callback | None:
        """Who waits here for a message on ``subject``, or ``None``."""
        found = self._inboxes.get(subject)
        if found is None and "." in subject:
            found = self._inboxes.get(subject.rpartition(".")[0] + ".*")
        return found


class _LocalSubscription:
    """A NATS subscription that also receives this process's local deliveries."""

    def __init__(
        self,
        real: Subscription,
        routes: LocalRoutes,
        subject: str,
        *,
        served: Callback | None = None,
        queue: asyncio.Queue[Msg] | None = None,
    ) -> None:
        self._real = real
        self._routes = routes
        self._subject = subject
        self._served = served
        self.queue = queue

    def _leave(self) -> None:
        if self._served is not None:
            self._routes.unserve(self._subject, self._served)
        else:
            self._routes.forget(self._subject)

    async def next_msg(self, timeout: float | None = 1.0) -> Msg:  # noqa: ASYNC109  (nats-py API)
        """The next message, local or from the server."""
        if self.queue is None:
            return await self._real.next_msg(timeout=timeout)
        try:
            async with asyncio.timeout(timeout):
                return await self.queue.get()
        except TimeoutError:
            raise NatsTimeout from None

    async def unsubscribe(self, limit: int = 0) -> None:
        """Leave locally and on the server."""
        self._leave()
        await self._real.unsubscribe(limit)

    async def drain(self) -> None:
        """Leave locally at once; the server side drains as usual."""
        self._leave()
        await self._real.drain()  # type: ignore[no-untyped-call]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class LocalClient:
    """A view of ``nc`` that serves requests between roles of this process directly.

    Args:
        nc: the role's own connection (everything not local goes through it).
        routes: shared by every role of the process.
    """

    def __init__(self, nc: Client, routes: LocalRoutes) -> None:
        self._nc = nc
        self._routes = routes
        self._inbox_prefix = nc.new_inbox().rpartition(".")[0] + "."

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nc, name)

    async def subscribe(
        self, subject: str, queue: str = "", cb: Callback | None = None, **options: Any
    ) -> _LocalSubscription:
        """Subscribe on the server and, for served queue subjects and inboxes, here too."""
        routes = self._routes
        if cb is None:  # an inbox read with next_msg: local and server messages, one queue
            waiting: asyncio.Queue[Msg] = asyncio.Queue()

            async def put(msg: Msg) -> None:
                waiting.put_nowait(msg)

            real = await self._nc.subscribe(subject, queue=queue, cb=put, **options)
            routes.listen(subject, put)
            return _LocalSubscription(real, routes, subject, queue=waiting)
        real = await self._nc.subscribe(subject, queue=queue, cb=cb, **options)
        if _shortcut(subject, queue):
            routes.serve(subject, cb)
            return _LocalSubscription(real, routes, subject, served=cb)
        if not queue and subject.endswith(".*") and subject.startswith(self._inbox_prefix):
            routes.listen(subject, cb)  # a wildcard reply inbox (the broker's forwards)
            return _LocalSubscription(real, routes, subject)
        return cast(_LocalSubscription, real)

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Hand the message to a role of this process that serves or awaits it, else to NATS."""
        target = self._routes.server(subject) or self._routes.listener(subject)
        if target is None:
            await self._nc.publish(subject, payload, reply=reply, headers=headers)
            return
        msg = Msg(
            _client=self._nc,
            subject=subject,
            reply=reply,
            data=payload,
            headers=dict(headers) if headers else None,
        )
        try:
            await target(msg)
        except Exception:  # a subscriber's failure is its own, as it would be over NATS
            log.exception("local delivery on %s failed", subject)

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float = 0.5,  # noqa: ASYNC109  (the signature of nats-py's request)
        headers: dict[str, str] | None = None,
    ) -> Msg:
        """Request/reply, served here when a role of this process serves ``subject``."""
        if self._routes.server(subject) is None:
            return await self._nc.request(subject, payload, timeout=timeout, headers=headers)
        inbox = self._nc.new_inbox()
        answer: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

        async def deliver(msg: Msg) -> None:
            if not answer.done():
                answer.set_result(msg)

        self._routes.listen(inbox, deliver)
        try:
            await self.publish(subject, payload, reply=inbox, headers=headers)
            async with asyncio.timeout(timeout):
                return await answer
        except TimeoutError:
            raise NatsTimeout from None
        finally:
            self._routes.forget(inbox)


def local_view(nc: Client, routes: LocalRoutes | None) -> Client:
    """``nc`` itself, or its local-first view when the process has shared routes.

    The view is typed as the client it stands for: it has every attribute of ``nc`` and the
    same signatures for the methods it overrides.
    """
    return nc if routes is None else cast(Client, LocalClient(nc, routes))
