"""Which tenant's lines a runner pulls next: weighted fair shares, priorities within a tenant.

Every broker's runner holds ``concurrency`` line slots. A tenant with queued lines is owed
``concurrency * weight / (sum of the weights of tenants with work)`` of them; a free slot goes
to the tenant furthest below its share (fewest running lines per unit of weight), so a small
batch starts as soon as a slot frees instead of waiting behind a flood, and a tenant alone
uses every slot (work-conserving). Within a tenant, ``high`` lines go before ``normal``
before ``low``. Every broker applies the same rule to the same per-tenant queues, so the
shares hold across brokers.

Slots rather than a round robin of fetches: lines of one model take about the same time, so
a share of slots is a share of throughput, and the share is restored the moment a line ends
(a round robin of fetch sizes lets a tenant that fetched a full window keep it until every
line of the window is done).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from schemas import headers
from schemas.jetstream import queue_of

__all__ = ["Queue", "SlotShares"]

#: ``(tenant, priority)``: one work-queue subject family and its consumer.
Queue = tuple[str, str]


class SlotShares:
    """Fair shares of a runner's line slots among tenants.

    Args:
        capacity: the runner's line slots.
        weight: a tenant's weight (``[tenants.<name>] weight``).
    """

    def __init__(self, capacity: int, weight: Callable[[str], float]) -> None:
        self._capacity = capacity
        self._weight = weight
        self.running: Counter[str] = Counter()
        #: lines queued per queue, from the work queue's subject index (in flight included)
        self._queued: dict[Queue, int] = {}
        self._served = 0
        self._last: dict[str, int] = {}

    def refresh(self, subjects: Mapping[str, int]) -> dict[str, int]:
        """Take the queue's subject index (``{subject: lines}``); returns lines per tenant."""
        queued: Counter[Queue] = Counter()
        for subject, count in subjects.items():
            parts = queue_of(subject)
            if parts is not None:
                queued[parts[0], parts[1]] += count
        self._queued = dict(queued)
        depth: Counter[str] = Counter()
        for (tenant, _), count in queued.items():
            depth[tenant] += count
        return dict(depth)

    def drained(self, queue: Queue) -> None:
        """A fetch found nothing (the rest is in flight): skip it until the next refresh."""
        self._queued.pop(queue, None)

    def share(self, tenant: str, active: Iterable[str]) -> float:
        """Slots owed to ``tenant`` while the ``active`` tenants have work."""
        total = sum(self._weight(t) for t in set(active) | {tenant})
        return self._capacity * self._weight(tenant) / total

    def next(self, free: int) -> tuple[Queue, int] | None:
        """The queue to pull from and how many lines (at most ``free``), or ``None``."""
        waiting = {tenant for tenant, _ in self._queued}
        if not waiting or free <= 0:
            return None
        active = waiting | {t for t, n in self.running.items() if n > 0}
        tenant = min(
            waiting,
            key=lambda t: (self.running[t] / self._weight(t), self._last.get(t, -1)),
        )
        priority = next(p for p in headers.PRIORITIES if (tenant, p) in self._queued)
        owed = int(self.share(tenant, active)) - self.running[tenant]
        self._served += 1
        self._last[tenant] = self._served
        return (tenant, priority), max(1, min(free, owed))

    def started(self, tenant: str, lines: int = 1) -> None:
        """Lines of ``tenant`` took slots."""
        self.running[tenant] += lines

    def finished(self, tenant: str) -> None:
        """A line of ``tenant`` gave its slot back."""
        self.running[tenant] -= 1
