"""The console's per-deployment window: the last minute of answers, recorded in O(1) without
holding memory per answer, and percentiles read off merged histograms."""

from __future__ import annotations

import itertools
import tracemalloc

import pytest

from broker.latency_window import WINDOW_S, LatencyWindow
from schemas.latency import LATENCY_BUCKETS_S, percentile

T0 = 1_700_000_000  # a whole wall-clock second


def test_buckets_ascend_to_infinity() -> None:
    """Bounds grow by at most 28 % from 1 ms to 800 s, then the catch-all."""
    bounds = LATENCY_BUCKETS_S
    assert (bounds[0], bounds[-2], bounds[-1]) == (0.001, 800.0, float("inf"))
    ratios = [b / a for a, b in itertools.pairwise(bounds[:-1])]
    assert all(1.2 < r < 1.29 for r in ratios)


def test_percentile_interpolates_inside_a_bucket() -> None:
    """Answers spread over (16 ms, 20 ms]: the median is read in the middle of the bucket,
    not at its bound; past the last finite bound the answer is that bound."""
    buckets = [0] * len(LATENCY_BUCKETS_S)
    buckets[LATENCY_BUCKETS_S.index(0.02)] = 100
    assert percentile(buckets, 0.5) == pytest.approx(0.018)
    assert percentile(buckets, 1.0) == 0.02
    slow = [0] * len(LATENCY_BUCKETS_S)
    slow[-1] = 3
    assert percentile(slow, 0.5) == 800.0
    assert percentile([0] * len(LATENCY_BUCKETS_S), 0.5) is None


def test_window_keeps_the_last_minute_only() -> None:
    """An answer counts for WINDOW_S seconds, then drops out; a reused slot starts empty."""
    window = LatencyWindow()
    window.observe(T0, 0.02, failed=False)
    window.observe(T0, 0.5, failed=True)
    window.observe(T0 + 30, 0.03, failed=False)
    now = window.totals(T0 + WINDOW_S - 1)
    assert (now.answered, now.errors, round(now.busy_s, 6)) == (3, 1, 0.55)
    assert sum(now.buckets) == 3
    later = window.totals(T0 + WINDOW_S)
    assert (later.answered, later.errors, sum(later.buckets)) == (1, 0, 1)
    window.observe(T0 + WINDOW_S, 0.04, failed=False)  # the first second's slot, reused
    reused = window.totals(T0 + WINDOW_S)
    assert (reused.answered, reused.errors, sum(reused.buckets)) == (2, 0, 2)
    assert window.totals(T0 + 10 * WINDOW_S).answered == 0


def test_windowed_percentiles_follow_the_latency_now() -> None:
    """A slow minute followed by a fast one: the window shows the fast one, where a histogram
    since start would still show the slow half."""
    window = LatencyWindow()
    for second in range(WINDOW_S):
        window.observe(T0 + second, 2.0, failed=False)
    for second in range(WINDOW_S, 2 * WINDOW_S):
        window.observe(T0 + second, 0.02, failed=False)
    totals = window.totals(T0 + 2 * WINDOW_S - 1)
    p99 = percentile(totals.buckets, 0.99)
    assert totals.answered == WINDOW_S
    assert p99 is not None
    assert 0.016 < p99 <= 0.02


def test_recording_holds_no_memory_per_answer() -> None:
    """Ten thousand answers in one second and ten thousand spread over a minute leave the
    window's memory where it was: nothing is kept per answer."""
    window = LatencyWindow()
    for second in range(WINDOW_S):  # every slot in use once
        window.observe(T0 + second, 0.01, failed=False)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(10_000):
            window.observe(T0 + WINDOW_S, 0.001 * (i % 500), failed=i % 7 == 0)
        for i in range(10_000):
            window.observe(T0 + WINDOW_S + i % WINDOW_S, 0.02, failed=False)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(
        stat.size_diff
        for stat in after.compare_to(before, "filename")
        if stat.traceback[0].filename.endswith("latency_window.py")
    )
    assert grown < 4096
