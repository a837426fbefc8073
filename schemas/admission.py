"""What brokers tell each other about deployments: statistics and shares of limits.

Every broker publishes a :class:`MeshReport` on ``llm.admission.stats`` once a second (every
broker listens), and keeps its shares of each limited deployment in the
``llm_edge_admission`` KV bucket as one :class:`Allocation` per deployment, changed only by
compare-and-set.
"""

from __future__ import annotations

import msgspec

__all__ = ["Allocation", "DeploymentReport", "MeshReport", "Share"]


class DeploymentReport(msgspec.Struct, frozen=True, omit_defaults=True):
    """One broker's view of one deployment.

    Attributes:
        name: the deployment.
        latency_s: the broker's moving average of its successful calls' latency.
        age_s: seconds since that average last moved.
        answered: calls it ended since its last report (how much its average weighs).
        errors: of those, failures that were the deployment's fault.
        in_flight: its calls in flight now.
        open: its breaker is open.
        paused_s: the provider asked for nothing more for this long from now (a 429, or no
            requests or tokens left until a reset).
        rpm, tpm: limits the provider named in its headers.
    """

    name: str
    latency_s: float | None = None
    age_s: float = 0.0
    answered: int = 0
    errors: int = 0
    in_flight: int = 0
    open: bool = False
    paused_s: float = 0.0
    rpm: int | None = None
    tpm: int | None = None


class MeshReport(msgspec.Struct, frozen=True, omit_defaults=True):
    """One broker's report: who sends it, and its deployments."""

    broker: str
    deployments: list[DeploymentReport] = msgspec.field(default_factory=list)


class Share(msgspec.Struct, omit_defaults=True):
    """One broker's share of a deployment's limits.

    Attributes:
        held: permits it may use, per pool (calls, requests, tokens).
        want: permits it would use, per pool (in use, waiting, recent peak).
        beat: grows with every renewal: a share whose beat stops for ``lease_s`` belongs to
            a broker that is gone, and returns to the others.
    """

    held: list[int]
    want: list[int]
    beat: int = 0


class Allocation(msgspec.Struct, omit_defaults=True):
    """A deployment's limits (permits per pool) and every broker's share of them."""

    limits: list[int]
    brokers: dict[str, Share] = msgspec.field(default_factory=dict)
