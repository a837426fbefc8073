"""The subscribe/serve loop a worker-side request service shares: one subject in the
workers' queue group, each request answered in its own bounded task, a bounded stop.

:class:`~workers.batch_service.BatchService` and
:class:`~workers.response_service.ResponseService` subclass it and write only ``_answer``.
"""

from __future__ import annotations

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from edge_runtime.process import STOP_STEP_S, InFlight, settle
from schemas import subjects

__all__ = ["QueueService"]


class QueueService:
    """Serves one subject in the workers' queue group, ``max_calls`` requests at a time.

    Args:
        nc: connected NATS client.
        subject: the subject served.
        max_calls: requests answered at once; more wait for a slot.
    """

    def __init__(self, nc: Client, subject: str, max_calls: int) -> None:
        self._nc = nc
        self.subject = subject
        self._inflight = InFlight(max_calls)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Subscribe in the workers' queue group."""
        self._sub = await self._nc.subscribe(
            self.subject, queue=subjects.WORKER_QUEUE, cb=self._on_msg
        )

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop taking calls; let running ones finish (bounded)."""
        if self._sub is not None:
            await settle(self._sub.drain(), STOP_STEP_S)  # type: ignore[no-untyped-call]
        await self._inflight.drain(drain_timeout)

    async def _on_msg(self, msg: Msg) -> None:
        await self._inflight.spawn(self._answer(msg))

    async def _answer(self, msg: Msg) -> None:
        """Answer one request (on ``msg.reply``); a subclass writes it."""
        raise NotImplementedError
