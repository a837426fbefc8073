"""One request's calls to the providers: resilience around forwarding, as one decision.

The pipeline asks for a whole answer (always a :class:`~broker.request.Reply`, failures as
error replies) or an opened stream (its first event has arrived, so failures before it were
retried and failed over); the reply names who answered and how many attempts it took. An
opened stream tells the deployment's breaker how it ended when it ends, and gives its
deployment's permit back then.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Protocol

from broker.admission.gate import Permit
from broker.errors import BrokerError
from broker.request import Call, Prepared, Reply, error_reply
from broker.tenancy.usage import usage_of
from broker.upstream.deployments import Deployment
from broker.upstream.forward import StreamEvent
from broker.upstream.resilience import Resilient, attempt_headers
from edge_runtime.tracing import span
from schemas import StreamEnd

__all__ = ["Forward", "OpenedStream", "Upstream"]

OpenedStream = tuple[StreamEvent, AsyncGenerator[StreamEvent, None], dict[str, str], Deployment]


class Forward(Protocol):
    """How one attempt reaches a deployment (:class:`~broker.upstream.forward.Forwarder`
    over NATS; tests pass an in-memory one)."""

    async def whole(self, prepared: Call, deployment: Deployment, deadline: float) -> Reply:
        """A 200 reply, or a :class:`BrokerError`."""
        ...

    def stream(
        self, prepared: Prepared, deployment: Deployment, deadline: float
    ) -> AsyncGenerator[StreamEvent, None]:
        """Chunks, then the end record; a :class:`BrokerError` on failure."""
        ...


class Upstream:
    """Calls providers for requests.

    Args:
        resilient: retries, failover, breakers.
        forward: one attempt at one deployment.
    """

    def __init__(self, resilient: Resilient, forward: Forward) -> None:
        self.resilient = resilient
        self._forward = forward

    async def whole(self, prepared: Call) -> Reply:
        """The answer of the first deployment that gives one, or the last failure's reply."""

        async def attempt(deployment: Deployment, deadline: float) -> Reply:
            return await self._forward.whole(prepared, deployment, deadline)

        try:
            with span("route"):
                run = await self.resilient.run(prepared, attempt)
        except BrokerError as exc:
            return error_reply(exc)
        reply = run.result
        reply.headers.update(attempt_headers(run.deployment, run.attempts))
        reply.upstream_s = run.upstream_s
        if run.permit.counts_tokens:  # a token limit: count what the call really used
            usage = usage_of(reply.body)
            if usage is not None:
                run.permit.settle_tokens(usage.total_tokens)
        return reply

    async def open_stream(self, prepared: Prepared) -> OpenedStream:
        """A stream whose first event has arrived, the rest of its events, the headers naming
        who answered, and the deployment.

        Raises:
            BrokerError: every attempt failed before a first event.
        """

        async def attempt(
            deployment: Deployment, deadline: float
        ) -> tuple[StreamEvent, AsyncGenerator[StreamEvent, None], float]:
            started = self.resilient.now()
            events = self._forward.stream(prepared, deployment, deadline)
            try:
                first = await anext(events)
            except BaseException:
                await events.aclose()
                raise
            return first, events, self.resilient.now() - started

        run = await self.resilient.run(prepared, attempt, judge_later=True)
        (first, events, first_s), deployment, attempts = run.result, run.deployment, run.attempts
        if isinstance(first, StreamEnd):  # nothing more to come: it ended well
            self.resilient.judge(deployment, None, first_s)
            run.permit.release()
            rest = events
        else:
            rest = self._judged(events, deployment, first_s, run.permit)
        return first, rest, attempt_headers(deployment, attempts), deployment

    async def _judged(
        self,
        events: AsyncGenerator[StreamEvent, None],
        deployment: Deployment,
        first_s: float,
        permit: Permit,
    ) -> AsyncGenerator[StreamEvent, None]:
        """``events``, telling the deployment's breaker how the stream ended: its end record
        is a success, an error after chunks a failure, a caller that left no verdict; its
        permit goes back whichever way it ends."""
        judged = False
        try:
            async with contextlib.aclosing(events):
                try:
                    async for event in events:
                        if isinstance(event, StreamEnd):
                            judged = True
                            self.resilient.judge(deployment, None, first_s)
                            if event.usage is not None:
                                permit.settle_tokens(event.usage.total_tokens)
                        yield event
                except BaseException as exc:
                    if not judged:
                        self.resilient.judge(deployment, exc, first_s)
                    raise
        finally:
            permit.release()
