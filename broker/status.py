"""What one broker tells the operator console about itself (``llm.admin.status``).

Counters are kept per broker instance and fed by :class:`~broker.record.RequestRecord`, so
they cost the request path one dict update; the console takes differences between two
snapshots for rates. Each deployment's answers of the last minute are kept in a
:class:`~broker.latency_window.LatencyWindow`: latency percentiles travel as that window's
histogram bucket counts, because percentiles of different brokers cannot be averaged but
their buckets can be added.

The recent requests are a bounded ring of request log records (ids, routing, cache, tokens:
never content), kept even when ``[broker] request_log`` writes no line.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import Counter

from broker import metrics
from broker.admission.admit import Admission
from broker.cache.response import ResponseCache
from broker.latency_window import WINDOW_S, LatencyWindow
from broker.upstream.deployments import Deployment
from broker.upstream.router import Router

__all__ = ["RECENT_REQUESTS", "BrokerStatus", "recent_filter"]

#: Request records each broker keeps for the console (about 250 bytes each: 500 cost 125 kB).
RECENT_REQUESTS = 500
#: The most records one ``llm.admin.requests`` reply carries.
MAX_RECENT_REPLY = 200


def _total(counter: Counter, **labels: str) -> float:
    """The counter summed over its label sets that have ``labels``: one metric collected,
    where ``REGISTRY.get_sample_value`` collects every metric of the process each call."""
    total = 0.0
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                total += sample.value
    return total


class BrokerStatus:
    """Per-broker counters, the recent-requests ring, and the status report.

    Args:
        clock: wall-clock seconds (records carry it).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.started = clock()
        self.requests = 0
        self.errors = 0
        self.by_cache: dict[str, int] = {}
        self._windows: dict[str, LatencyWindow] = {}
        self._recent: deque[dict[str, object]] = deque(maxlen=RECENT_REQUESTS)

    def now(self) -> float:
        """Wall-clock seconds."""
        return self._clock()

    def count(self, provider: str, status: int) -> None:
        """An answered request (every one, hits included)."""
        self.requests += 1
        if status >= 500:
            self.errors += 1
        if provider == "cache":
            self.by_cache["hit"] = self.by_cache.get("hit", 0) + 1

    def record(self, fields: dict[str, object], elapsed_s: float) -> None:
        """A request log record: into the ring, and into its deployment's counts."""
        now = self._clock()
        fields = {"time": round(now, 3), **fields, "ms": round(elapsed_s * 1000, 1)}
        self._recent.append(fields)
        deployment = fields.get("deployment")
        status = fields.get("status")
        if isinstance(deployment, str) and deployment and isinstance(status, int):
            window = self._windows.get(deployment)
            if window is None:
                window = self._windows[deployment] = LatencyWindow()
            window.observe(int(now), elapsed_s, status >= 500)

    def recent(self, command: Mapping[str, Any]) -> list[dict[str, object]]:
        """The newest records first, filtered (see :func:`recent_filter`)."""
        keep = recent_filter(command)
        limit = max(1, min(int(command.get("limit", 50)), MAX_RECENT_REPLY))
        out: list[dict[str, object]] = []
        for fields in reversed(self._recent):
            if keep(fields):
                out.append(fields)
                if len(out) >= limit:
                    break
        return out

    def report(
        self,
        *,
        service_id: str,
        router: Router,
        deployments: Mapping[str, Deployment],
        cache: ResponseCache | None,
        in_flight: int,
        admission: Admission | None = None,
    ) -> dict[str, Any]:
        """The ``llm.admin.status`` reply body."""
        return {
            "admission": admission.report() if admission is not None else None,
            "id": service_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started,
            "in_flight": in_flight,
            "requests": self.requests,
            "errors": self.errors,
            "deployments": {
                name: self._deployment(router, deployment)
                for name, deployment in sorted(deployments.items())
            },
            "cache": _cache_report(cache),
        }

    def _deployment(self, router: Router, deployment: Deployment) -> dict[str, Any]:
        stats = router.stats(deployment)
        breaker = stats.breaker
        now = self._clock()
        window = self._windows.get(deployment.name) or LatencyWindow(1)
        totals = window.totals(int(now))
        # the window is younger than a minute while the broker is
        span = min(float(WINDOW_S), max(1.0, now - self.started))
        return {
            "provider": deployment.provider,
            "state": breaker.state.name.lower().replace("_", "-"),
            "forced": breaker.forced is not None,
            "retry_after": round(breaker.retry_after(), 3),
            "in_flight": stats.in_flight,
            "window_s": round(span, 3),
            "answered": totals.answered,
            "errors": totals.errors,
            "rate": round(totals.answered / span, 3),
            "mean_in_flight": round(totals.busy_s / span, 3),
            "buckets": totals.buckets,
        }


def _cache_report(cache: ResponseCache | None) -> dict[str, Any] | None:
    """This process's cache counters (Prometheus keeps them per process, so the console counts
    them once per process even when several brokers share one)."""
    if cache is None:
        return None
    hits, misses = metrics.CACHE_HITS, metrics.CACHE_MISSES
    return {
        "l1_hits": _total(hits, tier="l1"),
        "l1_misses": _total(misses, tier="l1"),
        "l2_hits": _total(hits, tier="l2"),
        "l2_misses": _total(misses, tier="l2"),
        "coalesced": _total(metrics.CACHE_COALESCED),
        "saved_usd": _total(metrics.COST_SAVED),  # every model's
        "l1_entries": len(cache.l1),
        "l1_bytes": cache.l1.bytes,
        "l2": cache.l2 is not None,
    }


def recent_filter(command: Mapping[str, Any]) -> Callable[[Mapping[str, object]], bool]:
    """A predicate for ``{"tenant", "model", "status", "cache"}`` (each optional; ``status``
    matches a code like ``200`` or a class like ``5xx``; ``cache`` a prefix like ``HIT``)."""
    tenant, model = command.get("tenant") or None, command.get("model") or None
    status = str(command.get("status") or "")
    cache = str(command.get("cache") or "")

    def keep(fields: Mapping[str, object]) -> bool:
        if tenant is not None and fields.get("tenant") != tenant:
            return False
        if model is not None and fields.get("model") != model:
            return False
        code = str(fields.get("status", ""))
        if status and not (code == status or (status.endswith("xx") and code[:1] == status[0])):
            return False
        return not cache or str(fields.get("cache", "")).startswith(cache)

    return keep
