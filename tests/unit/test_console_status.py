"""What one broker reports to the console (``llm.admin.status``): each deployment's last
minute, and the cache counters of its process."""

from __future__ import annotations

from typing import Any

import pytest

from broker import metrics
from broker.cache.response import ResponseCache
from broker.cache.settings import CacheSettings, L2Kind
from broker.config import Config
from broker.status import BrokerStatus
from broker.upstream.router import Router
from schemas.latency import percentile

CONFIG = Config.from_toml(
    """
    [providers.p]
    kind = "mock"
    [models.m]
    deployments = [{ provider = "p" }]
    """
)
DEPLOYMENT = CONFIG.models["m"].deployments[0]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def report(status: BrokerStatus, cache: ResponseCache | None = None) -> dict[str, Any]:
    return status.report(
        service_id="b1",
        router=Router(CONFIG.breaker),
        deployments={DEPLOYMENT.name: DEPLOYMENT},
        cache=cache,
        in_flight=0,
    )


def answer(status: BrokerStatus, code: int, seconds: float) -> None:
    status.record({"deployment": DEPLOYMENT.name, "status": code}, seconds)


def test_a_deployment_reports_its_last_minute() -> None:
    """Answers count while they are under a minute old; rate and mean load are over the
    window (shorter while the broker is younger than a minute)."""
    clock = Clock(1_000_000.0)
    status = BrokerStatus(clock=clock)
    clock.now += 10
    answer(status, 200, 0.02)
    answer(status, 200, 0.03)
    answer(status, 502, 0.5)
    row = report(status)["deployments"][DEPLOYMENT.name]
    assert (row["answered"], row["errors"], row["window_s"]) == (3, 1, 10.0)
    assert (row["rate"], row["mean_in_flight"]) == (0.3, 0.055)
    p50 = percentile(row["buckets"], 0.5)
    assert p50 is not None
    assert 0.025 < p50 <= 0.0315  # the middle answer took 30 ms
    clock.now += 50  # the broker is a minute old: the window is full
    answer(status, 200, 0.04)
    row = report(status)["deployments"][DEPLOYMENT.name]
    assert (row["answered"], row["window_s"], row["rate"]) == (4, 60.0, round(4 / 60, 3))
    clock.now += 11  # the first three are over a minute old
    row = report(status)["deployments"][DEPLOYMENT.name]
    assert (row["answered"], row["errors"], sum(row["buckets"])) == (1, 0, 1)


def test_a_deployment_without_answers_reports_zeros() -> None:
    """No answer yet: nothing counted, no latency."""
    row = report(BrokerStatus())["deployments"][DEPLOYMENT.name]
    assert (row["answered"], row["rate"], percentile(row["buckets"], 0.5)) == (0, 0.0, None)


def test_cache_report_sums_the_process_counters() -> None:
    """Hits per tier and the USD saved over every model's label set."""
    cache = ResponseCache(CacheSettings(l2=L2Kind.OFF))
    before = report(BrokerStatus(), cache)["cache"]
    metrics.CACHE_HITS.labels(tier="l1").inc(2)
    metrics.CACHE_MISSES.labels(tier="l1").inc()
    metrics.COST_SAVED.labels(model="m").inc(0.25)
    metrics.COST_SAVED.labels(model="other").inc(0.5)
    after = report(BrokerStatus(), cache)["cache"]
    assert after["l1_hits"] - before["l1_hits"] == 2
    assert after["l1_misses"] - before["l1_misses"] == 1
    assert after["saved_usd"] - before["saved_usd"] == pytest.approx(0.75)  # other tests add too
    assert (after["l1_entries"], after["l2"]) == (0, False)
