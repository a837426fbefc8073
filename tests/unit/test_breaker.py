"""Circuit breaker state machine with an injected clock."""

from __future__ import annotations

import random

from broker.upstream.breaker import BreakerConfig, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(**overrides: float) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    config = BreakerConfig(
        **{
            "failure_threshold": 3,
            "window": 10,
            "min_calls": 5,
            "failure_rate": 0.5,
            "open_s": 10,
            "open_max_s": 35,
            "jitter": 0.0,
            "slow_call_s": 2.0,
            **overrides,
        }
    )  # type: ignore[arg-type]
    return CircuitBreaker(config, clock, random.Random(1)), clock


def test_consecutive_failures_open_it() -> None:
    """Three failures in a row open the breaker; it then refuses calls."""
    cb, _ = breaker()
    for _ in range(2):
        cb.record(False)
    assert cb.state is BreakerState.CLOSED
    cb.record(False)
    assert cb.state is BreakerState.OPEN
    assert not cb.allow()
    assert cb.retry_after() == 10


def test_failure_rate_over_the_window_opens_it() -> None:
    """Alternating failures never hit the consecutive threshold but trip on the rate."""
    cb, _ = breaker(failure_threshold=100)
    for ok in (True, False, True, False):
        cb.record(ok)
    assert cb.state is BreakerState.CLOSED  # 4 calls < min_calls
    cb.record(False)
    assert cb.state is BreakerState.OPEN  # 3/5 failed >= 0.5


def test_slow_calls_count_as_failures() -> None:
    """Successes slower than slow_call_s are failures."""
    cb, _ = breaker()
    for _ in range(3):
        cb.record(True, duration_s=5.0)
    assert cb.state is BreakerState.OPEN


def test_half_open_probe_success_closes() -> None:
    """After open_s one probe is let through; its success closes the breaker."""
    cb, clock = breaker()
    for _ in range(3):
        cb.record(False)
    clock.now += 10
    assert cb.state is BreakerState.HALF_OPEN
    assert cb.allow()
    assert not cb.allow()  # one probe at a time
    cb.record(True)
    assert cb.state is BreakerState.CLOSED
    assert cb.allow()


def test_failed_probes_reopen_for_longer_up_to_the_cap() -> None:
    """Each trip in a row doubles the open time (10, 20, capped at 35)."""
    cb, clock = breaker()
    for _ in range(3):
        cb.record(False)
    waits = [cb.retry_after()]
    for _ in range(3):
        clock.now += cb.retry_after()
        assert cb.allow()
        cb.record(False)
        waits.append(cb.retry_after())
    assert waits == [10, 20, 35, 35]


def test_jitter_spreads_open_times() -> None:
    """With jitter, open times vary around the base."""
    times = set()
    for seed in range(5):
        cb = CircuitBreaker(
            BreakerConfig(failure_threshold=1, open_s=10, jitter=0.2), Clock(), random.Random(seed)
        )
        cb.record(False)
        times.add(round(cb.retry_after(), 3))
        assert 8 <= cb.retry_after() <= 12
    assert len(times) > 1


def test_manual_force_and_reset() -> None:
    """Operators can pin a breaker open or closed and release it."""
    cb, _ = breaker()
    cb.force(BreakerState.OPEN)
    assert not cb.allow()
    cb.force(BreakerState.CLOSED)
    for _ in range(10):
        cb.record(False)
    assert cb.allow()  # pinned closed: failures do not trip it
    cb.force(None)
    cb.reset()
    assert cb.state is BreakerState.CLOSED
