"""Routing: which deployment of a model to try first, and in what order to fail over.

Every strategy returns an ordering of the model's deployments; deployments whose breaker is
open (or whose per-process rpm/tpm limit is reached) are left out. The caller walks the
ordering, then the fallback models' orderings.

| strategy        | first choice                                                        |
|-----------------|---------------------------------------------------------------------|
| round_robin     | the next deployment in turn                                         |
| weighted        | random, in proportion to ``weight``                                  |
| failover        | the lowest ``priority`` number (ties keep file order)               |
| least_latency   | the lowest EWMA latency; with probability ``explore`` a random one,  |
|                 | so a deployment that recovered is noticed                            |
| cost            | the cheapest for the request's estimated tokens                      |
| least_busy      | the fewest requests in flight (from this broker)                     |
"""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from broker import metrics
from broker.upstream.breaker import BreakerConfig, CircuitBreaker
from broker.upstream.deployments import Deployment, ModelConfig, Strategy

__all__ = ["DeploymentStats", "Router", "Strategy"]

DEFAULT_EXPLORE = 0.05
EWMA_ALPHA = 0.2


@dataclass(slots=True)
class DeploymentStats:
    """What this broker has seen of one deployment."""

    breaker: CircuitBreaker
    ewma_s: float | None = None
    in_flight: int = 0
    _minute: deque[tuple[float, int]] = field(default_factory=deque)

    def observe_latency(self, seconds: float) -> None:
        """Fold a successful call's latency into the EWMA."""
        self.ewma_s = (
            seconds
            if self.ewma_s is None
            else (EWMA_ALPHA * seconds + (1 - EWMA_ALPHA) * self.ewma_s)
        )

    def count(self, now: float, tokens: int) -> None:
        """Remember a request (and its estimated tokens) for rpm/tpm limits."""
        self._minute.append((now, tokens))

    def under_limits(self, deployment: Deployment, now: float, tokens: int) -> bool:
        """Whether one more request fits the deployment's rpm and tpm over the last minute."""
        while self._minute and self._minute[0][0] <= now - 60:
            self._minute.popleft()
        if deployment.rpm is not None and len(self._minute) >= deployment.rpm:
            return False
        if deployment.tpm is not None:
            used = sum(t for _, t in self._minute)
            return used + tokens <= deployment.tpm
        return True


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
        now = self._clock()
        usable = [
            d
            for d in model.deployments
            if self.stats(d).breaker.available() and self.stats(d).under_limits(d, now, sum(tokens))
        ]
        if len(usable) <= 1:
            return usable
        return self._rank(model, usable, tokens)

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
                return sorted(usable, key=lambda d: d.cost(*tokens))
            case _:
                return sorted(usable, key=lambda d: self.stats(d).in_flight)

    def _fastest(self, usable: list[Deployment]) -> list[Deployment]:
        """By EWMA latency; sometimes a random order, so a recovered deployment is noticed."""
        if self._rng.random() < self._explore:
            return self._rng.sample(usable, len(usable))
        # never measured sorts first: trying it is how it gets measured
        return sorted(usable, key=lambda d: self.stats(d).ewma_s or 0.0)

    def _weighted(self, usable: list[Deployment]) -> list[Deployment]:
        """Weighted random order without replacement (Efraimidis-Spirakis keys)."""
        keyed = [(self._rng.random() ** (1 / max(d.weight, 1e-9)), d) for d in usable]
        return [d for _, d in sorted(keyed, key=lambda pair: pair[0], reverse=True)]

    def retry_after(self, model: ModelConfig) -> float:
        """Seconds until some deployment of ``model`` may take a call again."""
        waits = [self.stats(d).breaker.retry_after() for d in model.deployments]
        return min(waits) if waits else 1.0
