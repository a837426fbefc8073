"""Breaker state and provider health are read from live breakers at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from broker import metrics


class Source:
    def breaker_states(self) -> list[tuple[str, str, int]]:
        return [("alpha", "a1", 1), ("alpha", "a2", 1), ("beta", "b1", 0), ("beta", "b2", 1)]


def test_provider_health_and_breaker_state() -> None:
    """A provider is healthy while any of its deployments is not open."""
    collector = metrics._BreakerCollector()
    source = Source()
    collector.sources.add(source)
    registry = CollectorRegistry()
    registry.register(collector)
    assert (
        registry.get_sample_value(
            "llm_edge_circuit_breaker_state", {"provider": "alpha", "deployment": "a1"}
        )
        == 1
    )
    assert registry.get_sample_value("llm_edge_provider_health", {"provider": "alpha"}) == 0
    assert registry.get_sample_value("llm_edge_provider_health", {"provider": "beta"}) == 1
