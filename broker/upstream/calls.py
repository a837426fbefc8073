"""One request's calls to the providers: resilience around forwarding, as one decision.

The pipeline asks for a whole answer (always a :class:`~broker.request.Reply`, failures as
error replies) or an opened stream (its first event has arrived, so failures before it were
retried and failed over); the reply names who answered (``Llm-Model``, ``Llm-Deployment``),
how many attempts it took, and why another model answered (``Llm-Fallback``: the request was
too long for its model, or refused for its content: :mod:`broker.upstream.fallback`). An
opened stream tells the deployment's breaker how it ended when it ends, and gives its
deployment's permit back then.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from broker import metrics
from broker.admission.gate import Permit
from broker.errors import BrokerError
from broker.request import Call, Prepared, Reply, error_reply
from broker.tenancy.usage import usage_of
from broker.upstream.deployments import Deployment
from broker.upstream.fallback import Fallbacks, Route
from broker.upstream.forward import StreamEvent
from broker.upstream.resilience import Resilient, Run, attempt_headers
from edge_runtime.tracing import span
from schemas import StreamEnd, headers

__all__ = ["Forward", "OpenedStream", "Upstream"]

T = TypeVar("T")
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
        fallbacks: context-window and content-policy fallbacks (``None``: none, as for
            embeddings).
    """

    def __init__(
        self, resilient: Resilient, forward: Forward, fallbacks: Fallbacks | None = None
    ) -> None:
        self.resilient = resilient
        self._forward = forward
        self._fallbacks = fallbacks

    async def whole(self, prepared: Call) -> Reply:
        """The answer of the first deployment that gives one, or the last failure's reply;
        once more on a fallback model when the first is refused (too long, content)."""
        fallbacks = self._fallbacks
        try:
            route = Route(prepared.model) if fallbacks is None else fallbacks.route(prepared)
        except BrokerError as exc:
            return error_reply(exc)
        try:
            reply = await self._whole_on(prepared, route)
        except BrokerError as exc:
            again = None if fallbacks is None else fallbacks.after_failure(prepared, route, exc)
            if again is None:
                return error_reply(exc)
            return await self._whole_again(prepared, again)
        again = None if fallbacks is None else fallbacks.after_answer(prepared, route, reply)
        if again is None:
            return reply
        final = await self._whole_again(prepared, again)
        final.refused = reply  # billed by its provider: charged with the fallback's answer
        final.upstream_s += reply.upstream_s
        return final

    async def _whole_again(self, prepared: Call, route: Route) -> Reply:
        try:
            return await self._whole_on(prepared, route)
        except BrokerError as exc:
            return error_reply(exc)

    async def _whole_on(self, prepared: Call, route: Route) -> Reply:
        """The answer of ``route``'s deployments (then its model's fallbacks).

        Raises:
            BrokerError: every attempt failed.
        """

        async def attempt(deployment: Deployment, deadline: float) -> Reply:
            return await self._forward.whole(prepared, deployment, deadline)

        with span("route"):
            run = await self._run(prepared, route, attempt)
        reply = run.result
        reply.headers.update(_answered_by(prepared, route, run))
        reply.upstream_s = run.upstream_s
        if run.permit.counts_tokens:  # a token limit: count what the call really used
            usage = usage_of(reply.body)
            if usage is not None:
                run.permit.settle_tokens(usage.total_tokens)
        return reply

    async def _run(
        self,
        prepared: Call,
        route: Route,
        attempt: Callable[[Deployment, float], Awaitable[T]],
        *,
        judge_later: bool = False,
    ) -> Run[T]:
        fits = route.fits if route.need is not None else None
        return await self.resilient.run(
            prepared, attempt, judge_later=judge_later, model=route.model, fits=fits
        )

    async def open_stream(self, prepared: Prepared) -> OpenedStream:
        """A stream whose first event has arrived, the rest of its events, the headers naming
        who answered, and the deployment; opened once more on a fallback model when the first
        model refuses it before its first event (too long, content).

        Raises:
            BrokerError: every attempt failed before a first event.
        """
        fallbacks = self._fallbacks
        route = Route(prepared.model) if fallbacks is None else fallbacks.route(prepared)
        try:
            return await self._open_on(prepared, route)
        except BrokerError as exc:
            again = None if fallbacks is None else fallbacks.after_failure(prepared, route, exc)
            if again is None:
                raise
        return await self._open_on(prepared, again)

    async def _open_on(self, prepared: Prepared, route: Route) -> OpenedStream:

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

        run = await self._run(prepared, route, attempt, judge_later=True)
        first, events, first_s = run.result
        deployment = run.deployment
        if isinstance(first, StreamEnd):  # nothing more to come: it ended well
            self.resilient.judge(deployment, None, first_s)
            run.permit.release()
            rest = events
        else:
            rest = self._judged(events, deployment, first_s, run.permit)
        return first, rest, _answered_by(prepared, route, run), deployment

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


def _answered_by(prepared: Call, route: Route, run: Run[Any]) -> dict[str, str]:
    """The headers naming who answered; a fallback's reason is counted here."""
    named = attempt_headers(run.deployment, run.attempts)
    named[headers.MODEL] = (run.model or route.model).name
    if route.reason is not None:
        named[headers.FALLBACK] = route.reason.value
        metrics.FALLBACKS.labels(route.reason.value, prepared.model.name).inc()
    return named
