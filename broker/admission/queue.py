"""Who goes next at a full gate: priority classes with aging, weighted fair share within one.

Requests that find no capacity wait as :class:`Ticket` s in a gate's :class:`FairQueue`. The
next one out is chosen in two steps:

1. **Class.** Interactive before default before background before batch lines, with aging:
   a class's rank improves by one for every ``aging_s`` its oldest ticket has waited, so a
   background request that waited ``2 * aging_s`` longer than an interactive one goes first.
   No class starves: under a flood of higher classes, a lower one waits at most
   ``aging_s`` per rank longer than they do.
2. **Tenant.** Within the class, stride scheduling by ``[tenants.<name>] weight``: each tenant
   has a pass that grows by ``1 / weight`` per request served, and the tenant with the lowest
   pass goes next (ties: the longest waiting). A tenant that had nothing queued rejoins at
   the class's current pass, so idling earns no credit; a tenant alone takes everything
   (work-conserving). Tenants of weights 3 and 1 that both keep requests queued are served
   3:1, request by request (the batch scheduler's slots do the same for lines:
   :mod:`broker.batch.fairshare`).

A ticket may wait in several gates' queues at once (every deployment of its model that could
serve it); the first gate to grant it wins, and the others drop it when they meet it.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from typing import Any

from broker.admission.pool import CLASSES

__all__ = ["FairQueue", "Ticket"]

#: Pools a ticket asks permits of: calls in flight, requests per window, tokens per window.
POOLS = 3


class Ticket:
    """One request waiting for capacity.

    Args:
        tenant: who sent it (its label, for metrics, is ``label``).
        weight: the tenant's weight.
        klass: its priority class (0 first).
        amounts: permits it needs of each pool: calls, requests, tokens.
        since: when it started waiting (the gate's clock).
        label: the tenant's metric label.
    """

    __slots__ = ("amounts", "future", "klass", "label", "queues", "since", "tenant", "weight")

    def __init__(
        self,
        tenant: str,
        weight: float,
        klass: int,
        amounts: tuple[int, int, int],
        *,
        since: float,
        label: str = "",
    ) -> None:
        self.tenant = tenant
        self.weight = weight
        self.klass = klass
        self.amounts = amounts
        self.since = since
        self.label = label
        #: resolved with the :class:`~broker.admission.gate.Grant` of the gate that lets it
        #: through (typed loosely: the gate knows tickets, a ticket does not know gates)
        self.future: asyncio.Future[Any] | None = None
        self.queues: list[FairQueue] = []

    @property
    def live(self) -> bool:
        """Still waiting: not granted, timed out or cancelled."""
        return self.future is not None and not self.future.done()

    def close(self) -> None:
        """It stopped waiting: every queue it is in stops counting it."""
        for queue in self.queues:
            queue.forget(self)
        self.queues.clear()


class FairQueue:
    """One gate's waiting tickets.

    Args:
        aging_s: seconds of waiting that raise a ticket's class by one rank.
    """

    def __init__(self, aging_s: float) -> None:
        self._aging_s = aging_s
        self._lanes: list[dict[str, deque[Ticket]]] = [{} for _ in range(CLASSES)]
        self._pass: list[dict[str, float]] = [{} for _ in range(CLASSES)]
        self._vtime = [0.0] * CLASSES
        #: live tickets per class, per (tenant label, class), and permits they ask per pool
        self.by_class = [0] * CLASSES
        self.depth: Counter[tuple[str, int]] = Counter()
        self.queued = [0] * POOLS
        self.live = 0

    def push(self, ticket: Ticket) -> None:
        """Queue ``ticket`` behind its tenant's other tickets of its class."""
        k = ticket.klass
        lane = self._lanes[k].get(ticket.tenant)
        if lane is None:
            lane = self._lanes[k][ticket.tenant] = deque()
        if not lane:  # (re)joining: no credit for the time it had nothing queued
            passes = self._pass[k]
            passes[ticket.tenant] = max(passes.get(ticket.tenant, 0.0), self._vtime[k])
        lane.append(ticket)
        ticket.queues.append(self)
        self._count(ticket, 1)

    def forget(self, ticket: Ticket) -> None:
        """``ticket`` stopped waiting (it stays in its lane until met, but is not counted)."""
        self._count(ticket, -1)
        if not self.by_class[ticket.klass]:
            self._lanes[ticket.klass].clear()  # only dead tickets were left in the class

    def _count(self, ticket: Ticket, step: int) -> None:
        self.live += step
        self.by_class[ticket.klass] += step
        self.depth[ticket.label, ticket.klass] += step
        if not self.depth[ticket.label, ticket.klass]:
            del self.depth[ticket.label, ticket.klass]
        for pool, amount in enumerate(ticket.amounts):
            self.queued[pool] += step * amount

    def ahead(self, klass: int) -> int:
        """Tickets waiting in ``klass`` or a higher class (aging aside)."""
        return sum(self.by_class[: klass + 1])

    def best(self, now: float) -> Ticket | None:
        """The ticket that goes next (without taking it out), or ``None``."""
        chosen, chosen_rank = -1, float("inf")
        for k in range(CLASSES):
            if not self.by_class[k]:
                continue
            oldest = self._oldest(k)
            if oldest is None:
                continue
            rank = k - (now - oldest) / self._aging_s
            if rank < chosen_rank:
                chosen, chosen_rank = k, rank
        if chosen < 0:
            return None
        lanes, passes = self._lanes[chosen], self._pass[chosen]
        tenant = min(lanes, key=lambda t: (passes[t], lanes[t][0].since))
        return lanes[tenant][0]

    def effective_rank(self, ticket: Ticket, now: float) -> float:
        """``ticket``'s class as aging has raised it (lower goes first)."""
        return ticket.klass - (now - ticket.since) / self._aging_s

    def _oldest(self, k: int) -> float | None:
        """When the oldest live ticket of class ``k`` started waiting (dead heads dropped)."""
        lanes = self._lanes[k]
        oldest: float | None = None
        for tenant in list(lanes):
            lane = lanes[tenant]
            while lane and not lane[0].live:
                lane.popleft()
            if not lane:
                del lanes[tenant]
                continue
            if oldest is None or lane[0].since < oldest:
                oldest = lane[0].since
        return oldest

    def pop(self, ticket: Ticket) -> None:
        """Take out ``ticket``, the one :meth:`best` returned, and advance its tenant's pass."""
        k, tenant = ticket.klass, ticket.tenant
        lane = self._lanes[k][tenant]
        lane.popleft()
        if not lane:
            del self._lanes[k][tenant]
        passes = self._pass[k]
        self._vtime[k] = passes[tenant]
        passes[tenant] += 1.0 / ticket.weight

    def snapshot(self) -> dict[str, Any]:
        """Live tickets per class and tenant label (for status and metrics)."""
        return {"by_class": list(self.by_class), "depth": dict(self.depth)}
