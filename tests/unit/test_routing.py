"""Routing strategies: each one's choice or distribution over many requests."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from broker.upstream.breaker import BreakerConfig, BreakerState
from broker.upstream.deployments import Deployment, ModelConfig, Strategy
from broker.upstream.router import Router


def model(strategy: Strategy, *deployments: Deployment) -> ModelConfig:
    return ModelConfig(name="m", deployments=deployments, strategy=strategy)


A = Deployment(
    name="a", provider="p", model="x", weight=1, priority=2, input_price=5, output_price=15
)
B = Deployment(
    name="b", provider="p", model="x", weight=3, priority=1, input_price=0.15, output_price=0.6
)
C = Deployment(
    name="c", provider="p", model="x", weight=6, priority=3, input_price=3, output_price=15
)


def firsts(router: Router, m: ModelConfig, n: int = 3000) -> Counter[str]:
    return Counter(router.order(m, (1000, 200))[0].name for _ in range(n))


def router(seed: int = 7, explore: float = 0.05) -> Router:
    return Router(BreakerConfig(), rng=random.Random(seed), explore=explore)


def test_round_robin_is_even() -> None:
    """Round robin gives every deployment the same share, in turn."""
    counts = firsts(router(), model(Strategy.ROUND_ROBIN, A, B, C))
    assert counts == {"a": 1000, "b": 1000, "c": 1000}


def test_weighted_follows_weights() -> None:
    """Weighted random picks in proportion to weight (1:3:6), within a few percent."""
    counts = firsts(router(), model(Strategy.WEIGHTED, A, B, C), 10000)
    shares = {k: v / 10000 for k, v in counts.items()}
    assert shares["a"] == pytest.approx(0.1, abs=0.02)
    assert shares["b"] == pytest.approx(0.3, abs=0.02)
    assert shares["c"] == pytest.approx(0.6, abs=0.02)


def test_failover_is_priority_order() -> None:
    """Failover always tries the lowest priority number first, then the next."""
    r = router()
    assert [d.name for d in r.order(model(Strategy.FAILOVER, A, B, C))] == ["b", "a", "c"]


def test_cost_picks_the_cheapest_for_the_tokens() -> None:
    """Cost-optimized puts the cheapest deployment (for these tokens) first."""
    r = router()
    assert [d.name for d in r.order(model(Strategy.COST, A, B, C), (1000, 200))] == ["b", "c", "a"]


def test_least_busy_picks_fewest_in_flight() -> None:
    """Least-busy sends to the deployment with the fewest requests in flight."""
    r = router()
    r.stats(A).in_flight, r.stats(B).in_flight, r.stats(C).in_flight = 4, 9, 1
    assert r.order(model(Strategy.LEAST_BUSY, A, B, C))[0].name == "c"


def test_least_latency_prefers_fast_and_explores() -> None:
    """Least-latency mostly picks the lowest EWMA, and sometimes another (exploration)."""
    r = router(explore=0.05)
    for _ in range(20):
        r.stats(A).observe_latency(0.9)
        r.stats(B).observe_latency(0.2)
        r.stats(C).observe_latency(0.5)
    counts = firsts(r, model(Strategy.LEAST_LATENCY, A, B, C), 4000)
    assert counts["b"] / 4000 > 0.9
    assert counts["a"] + counts["c"] > 0  # a recovered deployment would get noticed


def test_every_strategy_skips_open_deployments() -> None:
    """An open breaker removes its deployment from every strategy's ordering."""
    for strategy in Strategy:
        r = router()
        r.stats(B).breaker.force(BreakerState.OPEN)
        names = {d.name for _ in range(50) for d in r.order(model(strategy, A, B, C))}
        assert names == {"a", "c"}, strategy


class Peers:
    """What other brokers reported, written by the test."""

    def __init__(self) -> None:
        self.latency: dict[str, list[tuple[float, int, float]]] = {}
        self.busy: dict[str, int] = {}
        self.down: set[str] = set()

    def latencies(self, deployment: str) -> list[tuple[float, int, float]]:
        return self.latency.get(deployment, [])

    def in_flight(self, deployment: str) -> int:
        return self.busy.get(deployment, 0)

    def failing(self, deployment: str) -> bool:
        return deployment in self.down


def test_the_mesh_latency_outweighs_a_stale_own_measurement() -> None:
    """This broker measured a fast (long ago, no recent calls); a peer that called it lately
    found it slow: least_latency ranks it after b."""
    now = [100.0]
    r = Router(BreakerConfig(), clock=lambda: now[0], rng=random.Random(1), explore=0.0)
    r.stats(A).observe_latency(0.01, now=10.0)
    r.stats(B).observe_latency(0.05, now=99.0)
    m = model(Strategy.LEAST_LATENCY, A, B)
    assert r.order(m)[0].name == "a"
    peers = Peers()
    peers.latency["a"] = [(0.5, 12, 1.0)]
    r.peers = peers
    assert r.order(m)[0].name == "b"


def test_a_deployment_failing_on_a_peer_goes_last_and_load_counts_every_broker() -> None:
    """Failover keeps its order unless a peer reports the primary failing; least_busy counts
    the peers' calls in flight too."""
    r = router()
    peers = Peers()
    r.peers = peers
    failover = model(Strategy.FAILOVER, A, B, C)
    assert [d.name for d in r.order(failover)] == ["b", "a", "c"]
    peers.down.add("b")
    assert [d.name for d in r.order(failover)] == ["a", "c", "b"]
    peers.down.clear()
    peers.busy.update({"a": 5, "b": 1, "c": 9})
    assert [d.name for d in r.order(model(Strategy.LEAST_BUSY, A, B, C))] == ["b", "a", "c"]
