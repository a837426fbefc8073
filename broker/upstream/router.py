"""Routing: which deployment of a model to try first, and in what order to fail over.

Every strategy returns an ordering of the model's deployments; deployments whose breaker is
open are left out, and those whose breaker is open on another broker of the mesh go last. The
caller walks the ordering (taking the first with capacity: :mod:`broker.admission`), then the
fallback models' orderings.

| strategy        | first choice                                                        |
|-----------------|---------------------------------------------------------------------|
| round_robin     | the next deployment in turn                                         |
| weighted        | random, in proportion to ``weight``                                  |
| failover        | the lowest ``priority`` number (ties keep file order)               |
| least_latency   | the lowest EWMA latency; with probability ``explore`` a random one,  |
|                 | so a deployment that recovered is noticed                            |
| cost            | the cheapest for the request's estimated tokens                      |
| least_busy      | the fewest requests in flight                                        |

Latency and load are the mesh's when the brokers share statistics
(:mod:`broker.admission.stats`): each broker's moving average weighs by the calls it ended
lately, so a deployment that became slow under another broker's traffic is avoided here too.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from broker import metrics
from broker.upstream.breaker import BreakerConfig, CircuitBreaker
from broker.upstream.deployments import Deployment, ModelConfig, Strategy
from broker.upstream.prices import Tokens

__all__ = ["DeploymentStats", "PeerView", "Router", "Strategy"]

DEFAULT_EXPLORE = 0.05
EWMA_ALPHA = 0.2


class PeerView(Protocol):
    """What the other brokers of the mesh report of a deployment."""

    def latencies(self, deployment: str) -> list[tuple[float, int, float]]:
        """``(moving average, calls ended lately, seconds since it last moved)`` per peer
        that measured it."""
        ...

    def in_flight(self, deployment: str) -> int:
        """Calls in flight on the peers."""
        ...

    def failing(self, deployment: str) -> bool:
        """Whether some peer's breaker is open for it."""
        ...


@dataclass(slots=True)
class DeploymentStats:
    """What this broker has seen of one deployment.

    Attributes:
        answered, errors: calls ended, and those that failed by the deployment's fault.
        recent: calls ended in the last statistics interval (what the EWMA weighs).
        last_call: when a call last ended (monotonic; ``-inf``: never).
        measured_at: when the moving average last moved (monotonic).
    """

    breaker: CircuitBreaker
    ewma_s: float | None = None
    in_flight: int = 0
    answered: int = 0
    errors: int = 0
    recent: int = 0
    last_call: float = float("-inf")
    measured_at: float = float("-inf")

    def observe_latency(self, seconds: float, now: float = float("-inf")) -> None:
        """Fold a successful call's latency (ended at ``now``) into the EWMA."""
        self.measured_at = now
        self.ewma_s = (
            seconds
            if self.ewma_s is None
            else (EWMA_ALPHA * seconds + (1 - EWMA_ALPHA) * self.ewma_s)
        )


class Router:
    """Orders deployments per model and keeps their breakers and statistics.

    Args:
        breaker_config: the breaker settings every deployment gets.
        clock: monotonic seconds, injectable.
        rng: randomness for weighted choice, exploration and jitter, injectable.
        explore: least_latency's exploration probability.
    """

    def __init__(
        self,
        breaker_config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        explore: float = DEFAULT_EXPLORE,
    ) -> None:
        self._breaker_config = breaker_config
        self._clock = clock
        self._rng = rng or random.Random()
        self._explore = explore
        self._stats: dict[str, DeploymentStats] = {}
        self._providers: dict[str, str] = {}
        self._turns: dict[str, itertools.count[int]] = {}
        #: the mesh's view (set when brokers share statistics)
        self.peers: PeerView | None = None
        metrics.BREAKER_STATE.sources.add(self)

    def stats(self, deployment: Deployment) -> DeploymentStats:
        """The deployment's statistics and breaker (created on first use)."""
        stats = self._stats.get(deployment.name)
        if stats is None:
            breaker = CircuitBreaker(self._breaker_config, self._clock, self._rng)
            stats = self._stats[deployment.name] = DeploymentStats(breaker)
            self._providers[deployment.name] = deployment.provider
        return stats

    def breaker_states(self) -> list[tuple[str, str, int]]:
        """``(provider, deployment, state)`` of every breaker, for the metrics scrape."""
        return [
            (self._providers[name], name, int(stats.breaker.state))
            for name, stats in self._stats.items()
        ]

    def breakers(self) -> dict[str, CircuitBreaker]:
        """Every breaker created so far, by deployment name."""
        return {name: s.breaker for name, s in self._stats.items()}

    def order(self, model: ModelConfig, tokens: tuple[int, int] = (0, 0)) -> list[Deployment]:
        """The deployments to try, best first, leaving out unavailable ones.

        Args:
            model: the model.
            tokens: estimated (prompt, completion) tokens, for cost and tpm.
        """
        usable = [d for d in model.deployments if self.stats(d).breaker.available()]
        if len(usable) <= 1:
            return usable
        peers = self.peers
        if peers is not None:  # open on another broker: tried last (its breaker is its own)
            failing = [d for d in usable if peers.failing(d.name)]
            if failing and len(failing) < len(usable):
                healthy = [d for d in usable if d not in failing]
                return self._ranked(model, healthy, tokens) + self._ranked(model, failing, tokens)
        return self._rank(model, usable, tokens)

    def _ranked(
        self, model: ModelConfig, usable: list[Deployment], tokens: tuple[int, int]
    ) -> list[Deployment]:
        return usable if len(usable) <= 1 else self._rank(model, usable, tokens)

    def _rank(
        self, model: ModelConfig, usable: list[Deployment], tokens: tuple[int, int]
    ) -> list[Deployment]:
        match model.strategy:
            case Strategy.ROUND_ROBIN:
                turn = next(self._turns.setdefault(model.name, itertools.count()))
                start = turn % len(usable)
                return usable[start:] + usable[:start]
            case Strategy.WEIGHTED:
                return self._weighted(usable)
            case Strategy.FAILOVER:
                return sorted(usable, key=lambda d: d.priority)
            case Strategy.LEAST_LATENCY:
                return self._fastest(usable)
            case Strategy.COST:
                estimate = Tokens(input=tokens[0], output=tokens[1])
                return sorted(usable, key=lambda d: d.cost(estimate))
            case _:
                return sorted(usable, key=self.load)

    def _fastest(self, usable: list[Deployment]) -> list[Deployment]:
        """By EWMA latency; sometimes a random order, so a recovered deployment is noticed."""
        if self._rng.random() < self._explore:
            return self._rng.sample(usable, len(usable))
        # never measured sorts first: trying it is how it gets measured
        return sorted(usable, key=self.latency)

    def latency(self, deployment: Deployment) -> float:
        """The deployment's latency as the mesh sees it: the brokers' moving averages
        weighed by the calls each ended lately; without recent calls, the average that moved
        last (a peer's, when this broker's own is older); 0 when nobody measured it."""
        own = self.stats(deployment)
        samples = []
        if own.ewma_s is not None:
            samples.append((own.ewma_s, own.recent, self._clock() - own.measured_at))
        if self.peers is not None:
            samples += self.peers.latencies(deployment.name)
        if not samples:
            return 0.0
        weight = sum(n for _, n, _ in samples)
        if weight:
            return sum(latency * n for latency, n, _ in samples) / weight
        return min(samples, key=lambda sample: sample[2])[0]

    def load(self, deployment: Deployment) -> int:
        """Calls in flight to the deployment, from every broker."""
        own = self.stats(deployment).in_flight
        return own + (self.peers.in_flight(deployment.name) if self.peers is not None else 0)

    def _weighted(self, usable: list[Deployment]) -> list[Deployment]:
        """Weighted random order without replacement (Efraimidis-Spirakis keys)."""
        keyed = [(self._rng.random() ** (1 / max(d.weight, 1e-9)), d) for d in usable]
        return [d for _, d in sorted(keyed, key=lambda pair: pair[0], reverse=True)]

    def retry_after(self, model: ModelConfig) -> float:
        """Seconds until some deployment of ``model`` may take a call again."""
        waits = [self.stats(d).breaker.retry_after() for d in model.deployments]
        return min(waits) if waits else 1.0
