"""Background responses (``background: true``): durable jobs on a JetStream work queue.

Creating one stores it ``queued`` and publishes its id on ``llm.responses.job``
(:data:`~schemas.jetstream.RESPONSE_JOBS_STREAM`, deduplicated by id); every broker pulls
from the one durable consumer and runs what it gets (:mod:`broker.responses.runner`). A
cancel is heard by every broker (``llm.responses.halt``), and passed to the upstream's own
cancel when the response runs there (:mod:`broker.responses.upstream`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext, api

from broker.responses.charges import UpstreamCharges
from broker.responses.events import ResponseEvents
from broker.responses.pipeline_run import Handle
from broker.responses.runner import Job, JobRunner
from broker.responses.settings import ResponsesSettings
from broker.responses.states import status
from broker.responses.store import ResponseStore, StoreUnavailable
from broker.responses.upstream import UpstreamRuns
from broker.tenancy.meter import Meter
from broker.tenancy.tenants import KeyRing
from edge_runtime.jetstream import ensure_stream
from schemas import subjects
from schemas.jetstream import RESPONSE_JOBS_STREAM
from schemas.responses import ResponseStatus, StoredResponse

__all__ = ["PUBLISH_S", "BackgroundJobs"]

log = logging.getLogger("llm_edge.responses")

#: The longest publishing a job may take.
PUBLISH_S = 5.0

_encoder = msgspec.json.Encoder()


class BackgroundJobs:
    """Queues background responses and runs those this broker pulls.

    Args:
        nc: the broker's connection.
        store: the stored responses.
        handle: the pipeline's entry point.
        cancel: the pipeline's cancel (request id, owner).
        meter: prices and charges what ran at an upstream (its final answer).
        keys: the tenants jobs run as.
        settings: ``[responses]``.
        replicas: of the work-queue stream.
    """

    def __init__(
        self,
        nc: Client,
        store: ResponseStore,
        handle: Handle,
        cancel: Callable[[str, str], None],
        *,
        meter: Meter,
        keys: KeyRing,
        settings: ResponsesSettings,
        replicas: int = 1,
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=PUBLISH_S)
        self._settings = settings
        self._replicas = replicas
        self._upstream = UpstreamRuns(nc, poll_s=settings.poll_s, poll_max_s=settings.poll_max_s)
        #: the kept events of streamed background responses
        self.events = ResponseEvents(nc)
        self._runner = JobRunner(
            nc,
            self._js,
            store,
            events=self.events,
            upstream=self._upstream,
            handle=handle,
            cancel=cancel,
            charges=UpstreamCharges(meter, keys),
            keys=keys,
            settings=settings,
        )

    async def open(self) -> None:
        """Create the work queue (or bind to it); jobs can be queued from now on."""
        config = api.StreamConfig(
            name=RESPONSE_JOBS_STREAM,
            subjects=[subjects.RESPONSES_JOB],
            retention=api.RetentionPolicy.WORK_QUEUE,
            num_replicas=self._replicas,
            max_age=self._settings.ttl_s,
        )
        await ensure_stream(self._js, config)
        settings = self._settings
        await self.events.open(
            ttl_s=settings.ttl_s, max_bytes=settings.max_bytes, replicas=self._replicas
        )

    async def start(self) -> None:
        """Pull and run jobs, and hear cancels."""
        await self._runner.start()

    async def stop(self, grace_s: float = 1.0) -> None:
        """Stop pulling; runs in flight are left to finish (bounded), the rest redelivered."""
        await self._runner.stop(grace_s)

    async def submit(self, response_id: str, tenant: str) -> None:
        """Queue a stored response's job (once: JetStream drops a repeat of its id).

        Raises:
            StoreUnavailable: JetStream did not take it.
        """
        body = _encoder.encode(Job(response_id, tenant))
        try:
            await self._js.publish(
                subjects.RESPONSES_JOB, body, headers={"Nats-Msg-Id": response_id}
            )
        except (TimeoutError, NatsError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def halt(self, response_id: str) -> None:
        """Tell every broker to stop ``response_id``'s run."""
        await self._nc.publish(subjects.RESPONSES_HALT, response_id.encode())

    async def stop_run(self, response_id: str, before: StoredResponse) -> None:
        """Stop the run of a response just marked ``cancelled`` (``before``: as it was):
        halted wherever it runs, cancelled at its upstream, and a streamed one cancelled
        while queued (which no run will ever take) ends its followers' streams."""
        await self.halt(response_id)
        await self.cancel_upstream(before)
        if before.streamed and status(before) == ResponseStatus.QUEUED:
            try:
                await self.events.cancelled_queued(response_id)
            except StoreUnavailable as exc:
                log.warning("the stream of cancelled %s was not ended: %s", response_id, exc)

    async def cancel_upstream(self, stored: StoredResponse) -> None:
        """Cancel ``stored`` at its upstream, when it runs there (bounded)."""
        if stored.upstream_id and stored.provider and status(stored) not in ResponseStatus.FINAL:
            await self._upstream.cancel(stored.provider, stored.upstream_id)
