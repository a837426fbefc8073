"""What a service's health probes are answered: live and ready, with a reason.

- **live** while the process's event loop turns: a task of the loop marks every
  :data:`TICK_S`; a loop stuck for :data:`STUCK_S` (a blocking call, a deadlock) is not live,
  and the orchestrator restarts the process.
- **ready** while every connection the service watches is connected, its subscriptions are
  still registered on it, and a round trip to its server (PING/PONG) came back at the last
  tick: after a reconnect, nats-py sends the subscriptions again before that round trip, so
  a PONG says the server has them. A service not started yet, stopping (draining), or cut off
  from NATS is not ready, and its pod is taken out of rotation until it is.

The answers are read from the metrics port's HTTP thread (:mod:`edge_runtime.metrics_port`),
so they are plain attributes the loop writes and the thread reads; the state of a connection
is read live too, so a lost connection shows at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.subscription import Subscription

__all__ = ["HEALTH", "Health", "Verdict"]

#: How often the loop marks that it turns and checks its connections.
TICK_S = 1.0
#: A loop that has not marked for this long is stuck: not live.
STUCK_S = 10.0
#: How long the round trip to the server may take.
PONG_TIMEOUT_S = 2


@dataclass(frozen=True, slots=True)
class Verdict:
    """A probe's answer."""

    ok: bool
    reason: str


@dataclass(slots=True)
class _Watched:
    name: str
    nc: Client
    subscriptions: Callable[[], Sequence[Subscription]]
    answered: bool = False  # the last round trip came back


def _registered(nc: Client, sub: Subscription) -> bool:
    """Whether the connection still holds ``sub`` (it resends those after a reconnect)."""
    return nc._subs.get(sub._id) is sub


class Health:
    """One process's health (see the module's docstring).

    Args:
        clock: a monotonic clock.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._watched: list[_Watched] = []
        self._marked: float | None = None
        self._task: asyncio.Task[None] | None = None

    def watch(
        self, name: str, nc: Client, subscriptions: Callable[[], Sequence[Subscription]]
    ) -> None:
        """Be ready only while ``nc`` serves ``subscriptions()`` (call from the service's loop,
        once it has subscribed); starts the loop's marker on the first call."""
        self._watched.append(_Watched(name, nc, subscriptions))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._mark(), name="health")

    async def stop(self) -> None:
        """Forget the connections (the service is stopping: not ready) and stop marking."""
        self._watched = []
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._marked = None

    def live(self) -> Verdict:
        """Live unless the loop has stopped turning (a process still starting is live)."""
        if self._marked is None:
            return Verdict(True, "starting")
        stuck = self._clock() - self._marked
        if stuck > STUCK_S:
            return Verdict(False, f"the event loop has not turned for {stuck:.0f} s")
        return Verdict(True, "the event loop turns")

    def ready(self) -> Verdict:
        """Ready when live and every watched connection serves its subscriptions."""
        live = self.live()
        if not live.ok:
            return live
        if not self._watched or self._marked is None:
            return Verdict(False, "not serving (starting or stopping)")
        for watched in list(self._watched):
            problem = self._problem(watched)
            if problem is not None:
                return Verdict(False, f"{watched.name}: {problem}")
            if not watched.answered:
                return Verdict(False, f"{watched.name}: the NATS server did not answer a PING")
        return Verdict(True, "connected and subscribed")

    def _problem(self, watched: _Watched) -> str | None:
        nc = watched.nc
        if nc.is_closed:
            return "the NATS connection is closed"
        if nc.is_draining:
            return "draining"
        if not nc.is_connected:
            return "not connected to NATS (reconnecting)"
        subs = watched.subscriptions()
        if not subs:
            return "no subscriptions"
        lost = [sub.subject for sub in subs if not _registered(nc, sub)]
        if lost:
            return f"subscriptions gone: {', '.join(lost)}"
        return None

    async def _mark(self) -> None:
        while True:
            self._marked = self._clock()
            for watched in list(self._watched):
                watched.answered = await self._round_trip(watched)
            self._marked = self._clock()
            await asyncio.sleep(TICK_S)

    async def _round_trip(self, watched: _Watched) -> bool:
        if self._problem(watched) is not None:
            return False
        try:
            await watched.nc.flush(timeout=PONG_TIMEOUT_S)
        except Exception:
            return False
        return True


#: The process's health, as ``prometheus_client.REGISTRY`` is its metrics.
HEALTH = Health()
