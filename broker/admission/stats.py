"""Deployment statistics shared by every broker: routing sees the mesh's traffic.

Once every ``stats_s`` each broker publishes a :class:`~schemas.admission.MeshReport` on
``llm.admission.stats`` (every broker subscribes, no queue group): per deployment its moving
average latency and the calls it ended since its last report (how much that average
weighs), failures, calls in flight, whether its breaker is open, a pause the provider asked
for, and limits the provider named. A report is a few hundred bytes a second per broker, and
nothing on the request path waits for one.

What peers report feeds this broker's :class:`~broker.upstream.router.Router` (it is its
:class:`~broker.upstream.router.PeerView`): ``least_latency`` and ``least_busy`` rank by the
mesh's numbers, and a deployment whose breaker is open on a peer (or most of whose calls there
failed in its last report) goes last. Pauses and
learned limits reach this broker's gates, so a 429 seen by one broker holds every broker
back until the provider's reset. Reports older than ``stats_stale_s`` are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from broker.admission.admit import Admission
from broker.admission.settings import AdmissionSettings
from broker.upstream.breaker import BreakerState
from broker.upstream.deployments import Deployment
from broker.upstream.router import Router
from schemas import subjects
from schemas.admission import DeploymentReport, MeshReport

__all__ = ["MeshStats"]

log = logging.getLogger("llm_edge.broker")

#: Failures in one peer's report (with half its calls or more failing) that rank a
#: deployment last before its breaker opens there.
FAILING_MIN_ERRORS = 3
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(MeshReport)


class MeshStats:
    """This broker's statistics for the mesh, and the mesh's for this broker.

    Args:
        nc: the broker's connection.
        router: this broker's breakers and statistics (its peers view is set here).
        admission: gates that hear of pauses and limits.
        deployments: every configured deployment, by name.
        broker_id: this broker's name in reports.
        settings: intervals.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        nc: Client,
        router: Router,
        admission: Admission,
        deployments: Mapping[str, Deployment],
        *,
        broker_id: str,
        settings: AdmissionSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nc = nc
        self._router = router
        self._admission = admission
        self._deployments = deployments
        self.broker_id = broker_id
        self._settings = settings
        self._clock = clock
        self._peers: dict[str, tuple[float, dict[str, DeploymentReport]]] = {}
        self._counted: dict[str, tuple[int, int]] = {}
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        #: set whenever a peer's report arrives (tests wait on it)
        self.heard = asyncio.Event()
        router.peers = self

    async def start(self) -> None:
        """Listen to the peers and start reporting."""
        self._sub = await self._nc.subscribe(subjects.ADMISSION_STATS, cb=self._on_report)
        self._task = asyncio.create_task(self._report_loop(), name="admission-stats")

    async def stop(self) -> None:
        """Stop reporting and listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.stats_s)
            report = self.report()
            if not report.deployments:
                continue
            try:
                await self._nc.publish(subjects.ADMISSION_STATS, _encoder.encode(report))
            except Exception as exc:  # reconnecting: the next report says it again
                log.debug("could not publish deployment statistics: %s", exc)

    def report(self) -> MeshReport:
        """This broker's report now (and what it ended since the last one, as its weight)."""
        rows = []
        for name, deployment in self._deployments.items():
            stats = self._router.stats(deployment)
            before = self._counted.get(name, (0, 0))
            answered, errors = stats.answered - before[0], stats.errors - before[1]
            self._counted[name] = (stats.answered, stats.errors)
            stats.recent = answered
            paused = self._admission.paused_for(name)
            rpm, tpm = self._admission.learned.get(name, (None, None))
            opened = stats.breaker.state is BreakerState.OPEN
            if stats.ewma_s is None and not (answered or stats.in_flight or opened or paused):
                continue
            rows.append(
                DeploymentReport(
                    name=name,
                    latency_s=stats.ewma_s,
                    age_s=round(max(0.0, self._clock() - stats.measured_at), 3)
                    if stats.ewma_s is not None
                    else 0.0,
                    answered=answered,
                    errors=errors,
                    in_flight=stats.in_flight,
                    open=opened,
                    paused_s=round(paused, 3),
                    rpm=rpm,
                    tpm=tpm,
                )
            )
        return MeshReport(broker=self.broker_id, deployments=rows)

    async def _on_report(self, msg: Msg) -> None:
        try:
            report = _decoder.decode(msg.data)
        except msgspec.MsgspecError:
            return
        if report.broker == self.broker_id:
            return
        self._peers[report.broker] = (self._clock(), {d.name: d for d in report.deployments})
        for row in report.deployments:
            deployment = self._deployments.get(row.name)
            if deployment is not None and (row.paused_s > 0 or row.rpm or row.tpm):
                self._admission.adopt(deployment, row.rpm, row.tpm, row.paused_s)
        self.heard.set()

    def _fresh(self, deployment: str) -> list[tuple[float, DeploymentReport]]:
        """Every live peer's row for ``deployment``, with how long ago it was heard."""
        now = self._clock()
        rows = []
        for peer, (heard, by_name) in list(self._peers.items()):
            if now - heard > self._settings.stats_stale_s:
                del self._peers[peer]
                continue
            row = by_name.get(deployment)
            if row is not None:
                rows.append((now - heard, row))
        return rows

    # the router's view of the peers

    def latencies(self, deployment: str) -> list[tuple[float, int, float]]:
        """``(moving average, calls ended lately, seconds since it last moved)`` per peer
        that measured it."""
        return [
            (row.latency_s, row.answered, row.age_s + ago)
            for ago, row in self._fresh(deployment)
            if row.latency_s is not None
        ]

    def in_flight(self, deployment: str) -> int:
        """Calls in flight on the peers."""
        return sum(row.in_flight for _, row in self._fresh(deployment))

    def failing(self, deployment: str) -> bool:
        """Whether some peer's breaker is open for it, or most of a peer's last calls to it
        failed (at least :data:`FAILING_MIN_ERRORS`)."""
        return any(
            row.open or (row.errors >= FAILING_MIN_ERRORS and 2 * row.errors >= row.answered)
            for _, row in self._fresh(deployment)
        )

    def peers(self) -> int:
        """Peers heard from lately."""
        now = self._clock()
        return sum(
            1 for heard, _ in self._peers.values() if now - heard <= self._settings.stats_stale_s
        )
