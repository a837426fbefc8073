"""A pipeline's requests in flight, chat's and embeddings' alike.

:class:`Running` holds what both pipelines keep about the requests they work on: the bound on
their tasks (the broker's slots plus ``admission.max_queued``; beyond it the subscription
callback waits), the cancel registry (a cancel must name the request's own reply subject,
which only its caller knows), the keepalives given back when a request is over, and the one
place that turns whatever a request's work raises into a logged, counted 500 envelope instead
of a silent timeout (:meth:`Running.guarded`), inside the request's span
(:meth:`Running.traced`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from opentelemetry.trace import SpanKind

from broker import metrics
from broker.errors import BrokerError
from broker.record import RequestRecord
from broker.replies.heartbeat import Heartbeats, keepalive_s
from broker.replies.sinks import ReplySink
from broker.request import Call, error_reply
from edge_runtime.process import InFlight
from edge_runtime.tracing import span

__all__ = ["INTERNAL", "Running", "Work"]

log = logging.getLogger("llm_edge.broker")

#: What a caller is answered when the broker has a bug.
INTERNAL = BrokerError("internal broker error")

C = TypeVar("C", bound=Call)
#: A request's work: it answers the request through the sink.
Work = Callable[[C, ReplySink], Awaitable[None]]


class Running(Generic[C]):
    """The requests one pipeline is working on.

    Args:
        size: how many may be in flight at once (tasks).
        record: request counter (a failed request counts as a 500).
        heartbeats: keepalives to callers that ask for them while they wait (none without).
        meta: the reply metadata of a request with a cache status (its failure's envelope).
        span_name: the name of a request's span (``llm.chat``, ``llm.embeddings``).
        what: what its requests are called in the log (``request``, ``embeddings request``).
    """

    def __init__(
        self,
        *,
        size: int,
        record: RequestRecord,
        heartbeats: Heartbeats | None,
        meta: Callable[[C, str], dict[str, str]],
        span_name: str,
        what: str,
    ) -> None:
        self._inflight = InFlight(size)
        self._record = record
        self._heartbeats = heartbeats
        self._meta = meta
        self._span_name = span_name
        self._what = what
        #: (the caller's reply subject, request id) -> the request's task
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    def cancel(self, request_id: str, reply_to: str | None) -> None:
        """Cancel a request in flight when the cancel names its own reply subject (a cancel
        naming another subject, or none, is ignored)."""
        task = self._tasks.get((reply_to or "", request_id)) if reply_to else None
        if task is not None:
            task.cancel()
            if self._heartbeats is not None and reply_to:
                self._heartbeats.forget(reply_to)

    async def drain(self, grace_s: float) -> None:
        """Wait for requests in flight (bounded)."""
        await self._inflight.drain(grace_s)

    def watched(
        self, sink: ReplySink, hdrs: dict[str, str], reply_to: str, request_id: str
    ) -> ReplySink:
        """``sink``, kept alive while its caller waits when the caller asks for keepalives
        (``Llm-Keepalive-Ms``); slow is not lost."""
        if not reply_to or self._heartbeats is None:
            return sink
        every = keepalive_s(hdrs)
        if every is None:
            return sink
        return self._heartbeats.watch(sink, reply_to, every, request_id)

    async def spawn(self, work: Coroutine[Any, Any, None], reply_to: str) -> None:
        """Run ``work`` as a task once there is room (waiting here holds the callback). An
        interactive request (with a ``reply_to``) gives its keepalives back when it is over,
        whether or not an answer went out; a batch line has none."""
        try:
            task = await self._inflight.spawn(work)
        except BaseException:  # cancelled while it waited for a task: the work never runs
            work.close()
            self._given_back(reply_to)
            raise
        if reply_to:
            # a callback, not a finally: it runs even for a task cancelled before its first step
            task.add_done_callback(lambda _: self._given_back(reply_to))

    def _given_back(self, reply_to: str) -> None:
        if self._heartbeats is not None and reply_to:
            self._heartbeats.forget(reply_to)

    async def cancellable(self, call: C, sink: ReplySink, work: Work[C]) -> None:
        """Run ``work`` guarded, where its caller's cancel reaches it (while it waits too)."""
        task = asyncio.current_task()
        key = (call.owner, call.request_id)
        if task is not None and call.owner:
            self._tasks[key] = task
        try:
            await self.guarded(call, sink, work)
        except asyncio.CancelledError:
            pass  # the caller cancelled (llm.cancel): nobody is waiting for an answer
        finally:
            self._tasks.pop(key, None)

    async def guarded(self, call: C, sink: ReplySink, work: Work[C]) -> None:
        """Run a request's work; whatever it raises, its caller gets an answer."""
        try:
            await work(call, sink)
        except Exception:
            log.exception("%s %s failed", self._what, call.request_id)
            self._record.count(call, "", 500)
            with contextlib.suppress(Exception):
                meta = self._meta(call, "MISS")
                await sink.error(error_reply(INTERNAL), meta, streaming=call.stream)

    async def traced(self, call: C, sink: ReplySink, work: Work[C]) -> None:
        """Run the work of a request the cache could not answer: counted in flight, guarded,
        in its span."""
        metrics.IN_FLIGHT.inc()
        parent = {"traceparent": call.trace} if call.trace else None
        try:
            with span(
                self._span_name,
                parent=parent,
                kind=SpanKind.CONSUMER,
                attributes={"llm.model": call.model.name, "llm.tenant": call.tenant.name},
            ):
                await self.guarded(call, sink, work)
        finally:
            metrics.IN_FLIGHT.dec()
