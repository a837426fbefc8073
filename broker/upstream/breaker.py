"""Circuit breakers, one per deployment (per broker process).

    CLOSED --(failures)--> OPEN --(open time elapsed)--> HALF_OPEN --(probes succeed)--> CLOSED
                             ^                                |
                             +---------(a probe fails)--------+

A breaker trips on ``failure_threshold`` consecutive failures, or when the failure rate over
the last ``window`` calls reaches ``failure_rate`` (once ``min_calls`` have been seen). Calls
slower than ``slow_call_s`` count as failures. Each trip in a row opens the breaker for longer
(``open_s`` times ``2**(trips-1)``, capped at ``open_max_s``, with jitter) so a flapping
upstream is not hammered. Only failures that say something about the deployment count (5xx,
529, 429, timeouts, connection errors); a 4xx caused by the request itself never does.
"""

from __future__ import annotations

import enum
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edge_runtime.tables import typed_values

__all__ = ["BreakerConfig", "BreakerState", "CircuitBreaker"]


class BreakerState(enum.IntEnum):
    """Exported as the gauge value of ``llm_edge_circuit_breaker_state``."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """The ``[breaker]`` table."""

    failure_threshold: int = 5
    failure_rate: float = 0.5
    window: int = 20
    min_calls: int = 10
    slow_call_s: float = 60.0
    open_s: float = 5.0
    open_max_s: float = 120.0
    jitter: float = 0.2
    half_open_probes: int = 1

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> BreakerConfig:
        """Build and validate; raises ``ValueError`` naming the key."""
        config = cls(**typed_values(cls, "breaker", raw))
        if not 0 < config.failure_rate <= 1:
            raise ValueError("breaker.failure_rate must be in (0, 1]")
        if min(config.failure_threshold, config.window, config.half_open_probes) < 1:
            raise ValueError("breaker.failure_threshold, window, half_open_probes must be >= 1")
        if config.min_calls > config.window or min(config.open_s, config.slow_call_s) <= 0:
            raise ValueError("breaker.min_calls must be <= window; open_s, slow_call_s > 0")
        return config


class CircuitBreaker:
    """One deployment's breaker.

    Args:
        config: thresholds and timings.
        clock: monotonic seconds (injectable: tests move time by hand).
        rng: jitter source.
    """

    def __init__(
        self,
        config: BreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._rng = rng or random.Random()
        self._state = BreakerState.CLOSED
        self._results: deque[bool] = deque(maxlen=config.window)
        self._consecutive = 0
        self._trips = 0
        self._open_until = 0.0
        self._probes_out = 0
        self._probes_ok = 0
        self.forced: BreakerState | None = None

    @property
    def state(self) -> BreakerState:
        """The current state (OPEN turns HALF_OPEN once its time is up)."""
        if self.forced is not None:
            return self.forced
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            self._state = BreakerState.HALF_OPEN
            self._probes_out = self._probes_ok = 0
        return self._state

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        if self.forced is BreakerState.OPEN:
            return self.config.open_s
        return max(0.0, self._open_until - self._clock())

    def allow(self) -> bool:
        """Whether a call may go to this deployment now (takes a probe slot in HALF_OPEN)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self.forced is not None:
            return False
        if self._probes_out >= self.config.half_open_probes:
            return False
        self._probes_out += 1
        return True

    def available(self) -> bool:
        """Whether :meth:`allow` could say yes, without taking a probe slot."""
        state = self.state
        if state is BreakerState.HALF_OPEN and self.forced is None:
            return self._probes_out < self.config.half_open_probes
        return state is BreakerState.CLOSED

    def record(self, ok: bool, duration_s: float = 0.0) -> None:
        """Report a finished call; slow successes count as failures."""
        if ok and duration_s > self.config.slow_call_s:
            ok = False
        if self.forced is not None:
            return
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self._probe_result(ok)
            return
        self._results.append(ok)
        self._consecutive = 0 if ok else self._consecutive + 1
        if state is BreakerState.CLOSED and not ok and self._should_trip():
            self._trip()

    def abandon(self) -> None:
        """A call ended with no verdict (cancelled by its caller): a half-open probe gives its
        slot back for another probe; nothing is counted for or against the deployment."""
        if self.state is BreakerState.HALF_OPEN:
            self._probes_out = max(0, self._probes_out - 1)

    def _should_trip(self) -> bool:
        if self._consecutive >= self.config.failure_threshold:
            return True
        calls = len(self._results)
        if calls < self.config.min_calls:
            return False
        failures = calls - sum(self._results)
        return failures / calls >= self.config.failure_rate

    def _probe_result(self, ok: bool) -> None:
        self._probes_out = max(0, self._probes_out - 1)
        if not ok:
            self._trip()
            return
        self._probes_ok += 1
        if self._probes_ok >= self.config.half_open_probes:
            self.reset(keep_forced=True)

    def _trip(self) -> None:
        self._trips += 1
        base = min(self.config.open_s * 2 ** (self._trips - 1), self.config.open_max_s)
        spread = base * self.config.jitter
        self._open_until = self._clock() + base + self._rng.uniform(-spread, spread)
        self._state = BreakerState.OPEN
        self._results.clear()
        self._consecutive = 0

    def reset(self, *, keep_forced: bool = False) -> None:
        """Back to CLOSED with a clean history (and, unless asked, no manual override)."""
        self._state = BreakerState.CLOSED
        self._results.clear()
        self._consecutive = self._trips = self._probes_out = self._probes_ok = 0
        if not keep_forced:
            self.forced = None

    def force(self, state: BreakerState | None) -> None:
        """Pin the breaker OPEN or CLOSED (operator override); ``None`` releases it."""
        self.forced = state
