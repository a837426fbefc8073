"""The worker's own Prometheus metrics, created once at import: its upstream calls.

Measured in the runner around ``Provider.complete`` / ``Provider.stream`` (not in the
adapters), so every provider kind is measured the same way. Labels are low-cardinality only:
the provider's configured name and the error kind (:class:`~workers.errors.ErrorKind`,
``timeout``, ``reply_too_large`` or ``internal``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram

from workers.errors import ProviderError, ReplyTooLarge

__all__ = ["UPSTREAM_ERRORS", "UPSTREAM_IN_FLIGHT", "UPSTREAM_SECONDS", "upstream_call"]

UPSTREAM_SECONDS = Histogram(
    "llm_edge_worker_upstream_seconds",
    "Upstream calls of a provider worker: time to the whole answer or the stream's end.",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
UPSTREAM_ERRORS = Counter(
    "llm_edge_worker_upstream_errors_total",
    "Upstream calls of a provider worker that failed, by error kind.",
    ["provider", "kind"],
)
UPSTREAM_IN_FLIGHT = Gauge(
    "llm_edge_worker_upstream_in_flight",
    "Upstream calls a provider worker is waiting on.",
    ["provider"],
)


def error_kind(exc: BaseException) -> str:
    """The ``kind`` label of a failed call."""
    if isinstance(exc, ProviderError):
        return exc.kind.value
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ReplyTooLarge):  # a stream's piece too large to publish
        return ReplyTooLarge.code
    return "internal"


@functools.cache
def _children(provider: str) -> tuple[Gauge, Histogram]:
    return UPSTREAM_IN_FLIGHT.labels(provider), UPSTREAM_SECONDS.labels(provider)


@contextlib.contextmanager
def upstream_call(provider: str) -> Iterator[None]:
    """Measure one upstream call: in flight while it runs, its duration when it ends, its
    error kind when it fails (a call cancelled by ``llm.cancel`` is neither timed nor an
    error: its caller left)."""
    in_flight, seconds = _children(provider)
    in_flight.inc()
    started = time.perf_counter()
    try:
        yield
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        UPSTREAM_ERRORS.labels(provider, error_kind(exc)).inc()
        seconds.observe(time.perf_counter() - started)
        raise
    else:
        seconds.observe(time.perf_counter() - started)
    finally:
        in_flight.dec()
