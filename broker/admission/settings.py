"""The ``[admission]`` table (read without loading the admission machinery)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_runtime.tables import typed_values

__all__ = ["AdmissionSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionSettings:
    """How requests wait for capacity, and how brokers share it.

    Attributes:
        max_wait_s: the longest a request waits for capacity (its deadline bounds it too);
            0 refuses at once what cannot run at once.
        max_queued: requests waiting in one broker; past it, 503 at once.
        aging_s: waiting this long raises a request's class by one rank.
        reserve_window_s: a class that used a deployment this recently keeps headroom there.
        lease_s: a broker's share of a deployment's limits returns to the others this long
            after it stopped renewing it (a broker that died).
        rebalance_s: the shortest time between two rewrites of one broker's shares.
        stats_s: how often every broker publishes its deployments' statistics.
        stats_stale_s: a peer's statistics older than this are ignored.
        probe_s: how often an idle deployment is probed (0: never); a priced deployment only
            by its own ``probe_s`` (probes of a provider that charges cost money).
    """

    max_wait_s: float = 30.0
    max_queued: int = 10_000
    aging_s: float = 30.0
    reserve_window_s: float = 10.0
    lease_s: float = 10.0
    rebalance_s: float = 0.1
    stats_s: float = 1.0
    stats_stale_s: float = 5.0
    probe_s: float = 0.0

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> AdmissionSettings:
        """Build and validate; raises ``ValueError`` naming the key."""
        settings = cls(**typed_values(cls, "admission", raw))
        if settings.max_wait_s < 0 or settings.probe_s < 0 or settings.max_queued < 0:
            raise ValueError("admission: max_wait_s, max_queued and probe_s must be >= 0")
        positive = (
            settings.aging_s,
            settings.reserve_window_s,
            settings.lease_s,
            settings.rebalance_s,
            settings.stats_s,
            settings.stats_stale_s,
        )
        if min(positive) <= 0:
            raise ValueError(
                "admission: aging_s, reserve_window_s, lease_s, rebalance_s, stats_s and "
                "stats_stale_s must be > 0"
            )
        if settings.lease_s < 3 * settings.rebalance_s:
            raise ValueError("admission: lease_s must be at least 3 x rebalance_s")
        return settings
