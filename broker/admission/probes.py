"""Active health probes: an idle deployment is asked a one-token question now and then.

A deployment no request has used for its probe interval (on this broker, nor on any peer
that reported) gets a probe: ``{"messages": [{"role": "user", "content": "ping"}],
"max_tokens": 1}`` through its provider's workers, like a request, holding a permit of its
limits when it has some (a probe never waits: a full deployment is not idle). The answer
feeds the deployment's breaker and latency like a call's: failed probes open the breaker of
a deployment that broke while idle, so the first request after goes straight to another
deployment; a probe is the half-open call of an open breaker, so a deployment that
recovered is closed again before a request has to find out. Through the shared statistics
the whole mesh learns both.

A probe costs one small upstream call per interval per idle deployment (brokers skip it
when a peer's traffic shows the deployment is in use). Probes are off by default
(``[admission] probe_s = 0``), and a priced deployment (a provider that charges) is probed
only when its own ``probe_s`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping

import msgspec

from broker.admission.admit import NO_LIMIT, Admission
from broker.admission.classes import Priority
from broker.admission.gate import Permit
from broker.admission.queue import Ticket
from broker.admission.settings import AdmissionSettings
from broker.cache.directives import CacheDirectives
from broker.errors import BrokerError, UpstreamFailed
from broker.request import Prepared
from broker.upstream.breaker import BreakerState
from broker.upstream.calls import Forward
from broker.upstream.deployments import Deployment, ModelConfig
from broker.upstream.router import Router
from schemas import decode_chat_request

__all__ = ["Prober", "probe_interval"]

log = logging.getLogger("llm_edge.broker")

#: The most a probe may take.
PROBE_TIMEOUT_S = 10.0
#: The shortest wait between two looks at the deployments.
MIN_TICK_S = 0.05


def probe_interval(deployment: Deployment, settings: AdmissionSettings) -> float:
    """Seconds between probes of ``deployment`` (0: never)."""
    if deployment.probe_s is not None:
        return deployment.probe_s
    return 0.0 if deployment.priced else settings.probe_s


class Prober:
    """Probes this broker's idle deployments.

    Args:
        forward: how an attempt reaches a deployment's workers.
        router: breakers and statistics (a probe's verdict goes there).
        admission: the deployments' limits (a probe holds a permit).
        deployments: every configured deployment.
        settings: the default interval.
        busy_elsewhere: whether peers used a deployment lately (the shared statistics).
        new_id: request ids.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        forward: Forward,
        router: Router,
        admission: Admission,
        deployments: Iterable[Deployment],
        settings: AdmissionSettings,
        *,
        busy_elsewhere: Callable[[str], bool] = lambda name: False,
        new_id: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._forward = forward
        self._router = router
        self._admission = admission
        self._intervals = {
            d.name: (d, i) for d in deployments if (i := probe_interval(d, settings)) > 0
        }
        self._busy_elsewhere = busy_elsewhere
        self._new_id = new_id
        self._clock = clock
        self._last: dict[str, float] = {}
        self._running: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._probes: set[asyncio.Task[None]] = set()
        #: probes ended, and a condition notified at each (tests wait on it)
        self.probed = 0
        self.ended = asyncio.Condition()

    @property
    def intervals(self) -> Mapping[str, float]:
        """Probe interval per probed deployment."""
        return {name: interval for name, (_, interval) in self._intervals.items()}

    def start(self) -> None:
        """Start probing (nothing to do when no deployment is probed)."""
        if self._intervals:
            self._task = asyncio.create_task(self._loop(), name="admission-probes")

    async def stop(self) -> None:
        """Stop probing (probes in flight are cancelled)."""
        for task in (self._task, *self._probes):
            if task is not None:
                task.cancel()
        for task in (self._task, *self._probes):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _loop(self) -> None:
        tick = max(MIN_TICK_S, min(i for _, i in self._intervals.values()) / 4)
        while True:
            await asyncio.sleep(tick)
            now = self._clock()
            for name, (deployment, interval) in self._intervals.items():
                if name in self._running or not self._idle(deployment, interval, now):
                    continue
                self._running.add(name)
                task = asyncio.create_task(self._probe(deployment), name=f"probe-{name}")
                self._probes.add(task)
                task.add_done_callback(self._probes.discard)

    def _idle(self, deployment: Deployment, interval: float, now: float) -> bool:
        stats = self._router.stats(deployment)
        last = max(stats.last_call, self._last.get(deployment.name, float("-inf")))
        return (
            now - last >= interval
            and not stats.in_flight
            and stats.breaker.state is not BreakerState.OPEN
            and not self._busy_elsewhere(deployment.name)
        )

    async def _probe(self, deployment: Deployment) -> None:
        """One probe; its verdict to the breaker and the statistics."""
        try:
            self._last[deployment.name] = self._clock()
            stats = self._router.stats(deployment)
            permit = self._permit(deployment)
            if permit is None:
                return
            if not stats.breaker.allow():  # a half-open probe slot is taken already
                permit.release()
                return
            started = self._clock()
            try:
                ok = await self._ask(deployment)
            finally:
                permit.release()
            elapsed = self._clock() - started
            if ok is None:
                stats.breaker.abandon()
            else:
                stats.breaker.record(ok, elapsed)
                stats.answered += 1
                stats.errors += not ok
                if ok:
                    stats.observe_latency(elapsed, self._clock())
        finally:
            self._running.discard(deployment.name)
            self.probed += 1
            async with self.ended:
                self.ended.notify_all()

    def _permit(self, deployment: Deployment) -> Permit | None:
        if self._admission.gate(deployment) is None:
            return NO_LIMIT
        ticket = Ticket("", 1.0, Priority.BATCH, (1, 1, 2), since=self._clock())
        return self._admission.deployment(deployment, ticket)

    async def _ask(self, deployment: Deployment) -> bool | None:
        """Whether the deployment answered (``None``: no verdict, e.g. rate limited)."""
        prepared = self._prepared(deployment)
        try:
            await self._forward.whole(prepared, deployment, prepared.deadline)
        except UpstreamFailed as exc:
            if exc.status == 429:
                return None  # alive, and busy: no word on its health
            return exc.status < 500  # a 4xx is an answer (the probe's own fault)
        except BrokerError as exc:
            log.debug("probe of %s failed: %s", deployment.name, exc)
            return False
        return True

    def _prepared(self, deployment: Deployment) -> Prepared:
        body = msgspec.json.encode(
            {
                "model": deployment.model,
                "messages": [{"role": "user", "content": "ping"}],
                "max_tokens": 1,
            }
        )
        return Prepared(
            data=body,
            request=decode_chat_request(body),
            model=ModelConfig(name=deployment.model, deployments=(deployment,)),
            request_id=f"probe-{self._new_id()}",
            deadline=self._clock() + PROBE_TIMEOUT_S,
            key=None,
            directives=CacheDirectives(),
            priority=Priority.BATCH,
        )
