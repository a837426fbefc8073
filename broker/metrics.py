"""Prometheus metrics, created once at import. Labels are low-cardinality only: never a
prompt, a key or a request id. The ``tenant`` label is the tenant's configured name when
``broker.tenant_metrics`` is on, else empty (Prometheus treats an empty label as absent)."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Metric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "BATCH_LINES",
    "BATCH_OFFLOAD_DEFERRED",
    "BATCH_OFFLOAD_LINES",
    "BATCH_QUEUE_DEPTH",
    "BATCH_TENANT_LINES",
    "BATCH_WAIT",
    "BREAKER_STATE",
    "CACHE_COALESCED",
    "CACHE_HITS",
    "CACHE_L2_ERRORS",
    "CACHE_MISSES",
    "COST",
    "COST_SAVED",
    "EMBEDDING_INPUTS",
    "FAILOVERS",
    "FALLBACKS",
    "IN_FLIGHT",
    "L1_HITS",
    "L1_MISSES",
    "L2_HITS",
    "L2_MISSES",
    "OVERHEAD",
    "QUEUE_DEPTH",
    "QUEUE_REFUSED",
    "QUEUE_WAIT",
    "REQUESTS",
    "REQUEST_DURATION",
    "RETRIES",
    "SEMANTIC_HITS",
    "SEMANTIC_MISSES",
    "TIME_TO_FIRST_CHUNK",
    "TOKENS",
    "BreakerStateSource",
    "QueueSource",
    "requests_counter",
]

REQUESTS = Counter(
    "llm_edge_requests_total",
    "Requests answered by the broker: chat, messages and embeddings (provider 'cache' for "
    "hits, '' before routing).",
    ["provider", "model", "status", "tenant"],
)
REQUEST_DURATION = Histogram(
    "llm_edge_request_duration_seconds",
    "Broker time from receipt to the whole reply or the stream's end, cache misses only.",
    ["provider", "model"],
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

EMBEDDING_INPUTS = Counter(
    "llm_edge_embedding_inputs_total",
    "Embeddings inputs, by where their vector came from: l1, l2 or upstream.",
    ["source"],
)

COST = Counter(
    "llm_edge_cost_usd_total",
    "Spend at the deployment price table, USD, by the service tier that served the answer "
    "(default, flex, priority, batch, scale, other).",
    ["provider", "model", "tier", "tenant"],
)
COST_SAVED = Counter(
    "llm_edge_cost_saved_usd_total",
    "What cache hits would have cost at the price of the deployment that gave the answer, USD.",
    ["model"],
)
OVERHEAD = Histogram(
    "llm_edge_overhead_seconds",
    "Broker time of a cache miss not spent waiting for provider workers.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
TOKENS = Counter(
    "llm_edge_tokens_total",
    "Tokens answered by providers, by type: prompt (input neither read from nor written to "
    "the provider's prompt cache), cached (read from it), cache_write (written to it), "
    "completion; the types add up to the total.",
    ["provider", "model", "type", "tenant"],
)
TIME_TO_FIRST_CHUNK = Histogram(
    "llm_edge_time_to_first_token_seconds",
    "Streams: time from receipt to the first chunk from a provider.",
    ["provider"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_LINES = Counter("llm_edge_batch_lines_total", "Batch lines finished, by outcome.", ["state"])
# Per tenant: tenants are configured names (run-time key tenants are counted as "other").
BATCH_QUEUE_DEPTH = Gauge(
    "llm_edge_batch_queue_depth",
    "Batch lines queued or running, by tenant (as seen by this broker).",
    ["tenant"],
)
BATCH_TENANT_LINES = Counter(
    "llm_edge_batch_tenant_lines_total",
    "Batch line runs this broker ended, by tenant (rate() is lines per second).",
    ["tenant"],
)
BATCH_WAIT = Histogram(
    "llm_edge_batch_wait_seconds",
    "Time from a line being queued to its first run, by tenant.",
    ["tenant"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400),
)
BATCH_OFFLOAD_LINES = Counter(
    "llm_edge_batch_offload_lines_total",
    "Batch lines sent to a provider's own Batch API (submitted), merged back from it"
    " (completed), or re-run on the normal path (fallback), by provider.",
    ["provider", "outcome"],
)
BATCH_OFFLOAD_DEFERRED = Counter(
    "llm_edge_batch_offload_deferred_total",
    "Sub-batch offload steps put off to a later poll: rate_limited (the provider refused a"
    " submit with a 429), timeout (a worker's call timed out), error (an unexpected failure,"
    " logged; the batch's other sub-batches go on), by provider.",
    ["provider", "reason"],
)
QUEUE_WAIT = Histogram(
    "llm_edge_queue_wait_seconds",
    "Time requests waited for capacity (their tenant's, the broker's, a deployment's), by "
    "tenant and priority class.",
    ["tenant", "class"],
    buckets=(0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
QUEUE_REFUSED = Counter(
    "llm_edge_queue_refused_total",
    "Requests refused because the capacity they needed would not free in time (where: "
    "tenant, broker, deployment).",
    ["tenant", "class", "where"],
)
RETRIES = Counter("llm_edge_retries_total", "Attempts after the first, across deployments.")
FAILOVERS = Counter(
    "llm_edge_failovers_total", "Attempts sent to another deployment than the last."
)
FALLBACKS = Counter(
    "llm_edge_fallbacks_total",
    "Requests sent to another model than the one asked for (the model label), by reason: "
    "context_window (too long for it) or content_policy (it refused the content).",
    ["reason", "model"],
)


class BreakerStateSource(Protocol):
    """Anything that can list ``(provider, deployment, state)`` for its breakers."""

    def breaker_states(self) -> Iterable[tuple[str, str, int]]:
        """Current states (read at scrape time, so time-based transitions show)."""
        ...


class _BreakerCollector(Collector):
    """``llm_edge_circuit_breaker_state``, read from the live breakers at scrape time."""

    def __init__(self) -> None:
        self.sources: weakref.WeakSet[BreakerStateSource] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "llm_edge_circuit_breaker_state",
            "Circuit breaker state per deployment (0 closed, 1 open, 2 half-open), this process.",
            labels=["provider", "deployment"],
        )
        for source in list(self.sources):
            for provider, deployment, state in source.breaker_states():
                gauge.add_metric([provider, deployment], state)
        yield gauge
        health = GaugeMetricFamily(
            "llm_edge_provider_health",
            "1 while some deployment of the provider takes traffic (breaker not open), else 0.",
            labels=["provider"],
        )
        providers: dict[str, int] = {}
        for source in list(self.sources):
            for provider, _, state in source.breaker_states():
                providers[provider] = max(providers.get(provider, 0), int(state != 1))
        for provider, up in providers.items():
            health.add_metric([provider], up)
        yield health


BREAKER_STATE = _BreakerCollector()
REGISTRY.register(BREAKER_STATE)


class QueueSource(Protocol):
    """Anything that can list the requests waiting at its gates."""

    def queue_depths(self) -> Iterable[tuple[str, str, str, int]]:
        """``(gate, tenant, class, waiting)`` rows."""
        ...

    def shares(self) -> Iterable[tuple[str, str, int, int]]:
        """``(deployment, pool, this broker's share, the mesh's limit)`` rows."""
        ...


class _QueueCollector(Collector):
    """``llm_edge_queue_depth`` and the deployments' shares, read at scrape time (the request
    path only counts in its gates)."""

    def __init__(self) -> None:
        self.sources: weakref.WeakSet[QueueSource] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "llm_edge_queue_depth",
            "Requests waiting for capacity now, by gate (a deployment, or broker), tenant and "
            "priority class (this process).",
            labels=["gate", "tenant", "class"],
        )
        summed: dict[tuple[str, str, str], int] = {}
        for source in list(self.sources):
            for gate, tenant, klass, count in source.queue_depths():
                summed[gate, tenant, klass] = summed.get((gate, tenant, klass), 0) + count
        for labels, count in summed.items():
            depth.add_metric(list(labels), count)
        yield depth
        share = GaugeMetricFamily(
            "llm_edge_deployment_share",
            "This broker's share of a deployment's limit (pool: calls, requests, tokens).",
            labels=["deployment", "pool"],
        )
        limit = GaugeMetricFamily(
            "llm_edge_deployment_limit",
            "A deployment's limit across the mesh, per pool (requests: permits per window).",
            labels=["deployment", "pool"],
        )
        for source in list(self.sources):
            for deployment, pool, held, whole in source.shares():
                share.add_metric([deployment, pool], held)
                limit.add_metric([deployment, pool], whole)
        yield share
        yield limit


QUEUE_DEPTH = _QueueCollector()
REGISTRY.register(QUEUE_DEPTH)

# Children bound once: ``labels()`` costs about a microsecond per call on the hot path.
L1_HITS = CACHE_HITS.labels("l1")
L1_MISSES = CACHE_MISSES.labels("l1")
L2_HITS = CACHE_HITS.labels("l2")
L2_MISSES = CACHE_MISSES.labels("l2")
SEMANTIC_HITS = CACHE_HITS.labels("semantic")
SEMANTIC_MISSES = CACHE_MISSES.labels("semantic")


@functools.lru_cache(maxsize=4096)
@functools.cache
def requests_counter(provider: str, model: str, status: int, tenant: str = "") -> Counter:
    """The bound ``llm_edge_requests_total`` child (the label values are few: kept)."""
    return REQUESTS.labels(provider, model, str(status), tenant)


@functools.cache
def duration_histogram(provider: str, model: str) -> Histogram:
    """The bound ``REQUEST_DURATION`` child (kept, like :func:`requests_counter`)."""
    return REQUEST_DURATION.labels(provider, model)
