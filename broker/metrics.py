"""Prometheus metrics, created once at import. Labels are low-cardinality only: never a
prompt, a key, a tenant secret or a request id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CACHE_COALESCED",
    "CACHE_HITS",
    "CACHE_L2_ERRORS",
    "CACHE_MISSES",
    "IN_FLIGHT",
    "REQUESTS",
    "REQUEST_DURATION",
]

REQUESTS = Counter(
    "llm_edge_requests_total", "Chat requests answered by the broker.", ["model", "status"]
)
REQUEST_DURATION = Histogram(
    "llm_edge_request_duration_seconds",
    "Broker time from receipt to reply, cache misses only.",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
IN_FLIGHT = Gauge("llm_edge_in_flight", "Requests the broker is working on (cache misses).")
CACHE_HITS = Counter("llm_edge_cache_hits_total", "Cache hits.", ["tier"])
CACHE_MISSES = Counter("llm_edge_cache_misses_total", "Cache misses.", ["tier"])
CACHE_COALESCED = Counter(
    "llm_edge_cache_coalesced_total", "Requests answered by another identical in-flight request."
)
CACHE_L2_ERRORS = Counter(
    "llm_edge_cache_l2_errors_total", "L2 calls that failed or timed out (served without L2)."
)
