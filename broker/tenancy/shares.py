"""Fair shedding of interactive requests when a broker is saturated.

Below ``[broker] max_in_flight`` every request is taken (a lone tenant may use everything).
Once the broker is full, each tenant with requests in flight is owed
``max_in_flight * weight / (sum of their weights)`` of the slots: a request of a tenant under
its share waits for the next free slot, one of a tenant at or over its share is refused at
once with 503 and ``Retry-After``. The noisy tenant is shed first, the quiet one keeps being
served, and nobody's request waits behind a queue the broker cannot drain.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from broker import metrics
from broker.errors import Overloaded
from broker.tenancy.tenants import TenantConfig

__all__ = ["InteractiveShares"]

#: ``Retry-After`` on a shed request: a slot frees as soon as one provider call ends.
SHED_RETRY_AFTER_S = 1.0


class InteractiveShares:
    """Per-tenant accounting of a broker's interactive in-flight slots.

    Args:
        capacity: ``[broker] max_in_flight``.
        in_flight: requests the broker is working on now (all tenants).
        label: the metric label of a tenant (its configured name, or empty).
    """

    def __init__(
        self,
        capacity: int,
        in_flight: Callable[[], int],
        label: Callable[[TenantConfig], str] = lambda tenant: tenant.name,
    ) -> None:
        self._capacity = capacity
        self._in_flight = in_flight
        self._label = label
        self.running: Counter[str] = Counter()
        self._weights: dict[str, float] = {}

    def share(self, tenant: TenantConfig) -> float:
        """Slots owed to ``tenant`` among the tenants with requests in flight."""
        weights = {t: self._weights[t] for t, n in self.running.items() if n > 0}
        weights[tenant.name] = tenant.weight
        return self._capacity * tenant.weight / sum(weights.values())

    def take(self, tenant: TenantConfig) -> None:
        """Count a request of ``tenant`` in, or refuse it.

        Raises:
            Overloaded: the broker is full and ``tenant`` holds its share already (503).
        """
        if self._in_flight() >= self._capacity and self.running[tenant.name] >= self.share(tenant):
            metrics.SHED.labels(self._label(tenant)).inc()
            raise Overloaded(
                "The broker is at capacity and this tenant holds its share of it; retry later.",
                retry_after=SHED_RETRY_AFTER_S,
            )
        self.running[tenant.name] += 1
        self._weights[tenant.name] = tenant.weight

    def give_back(self, tenant: TenantConfig) -> None:
        """A request of ``tenant`` ended."""
        self.running[tenant.name] -= 1
        if self.running[tenant.name] <= 0:
            del self.running[tenant.name]
