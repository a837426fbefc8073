"""Retry policy and retry budget.

The policy is configuration (attempts, exponential backoff with jitter), so tests set waits
to zero. The budget caps retries at a fraction of requests over a sliding window, so an
outage does not multiply the load on upstreams that are already struggling.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edge_runtime.tables import typed_values

__all__ = ["ResilienceConfig", "RetryBudget"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResilienceConfig:
    """The ``[resilience]`` table.

    Attributes:
        max_attempts: calls per request, across deployments and fallback models.
        backoff_initial_s: first backoff; doubles each retry, capped, full jitter.
        backoff_max_s: backoff cap.
        retry_after_max_s: longest upstream ``Retry-After`` honoured (longer: fail over).
        budget_ratio: retries allowed per request over the window (0.2 = one in five).
        budget_window_s: the window.
        budget_min: retries always allowed per window, however few the requests.
    """

    max_attempts: int = 3
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 2.0
    retry_after_max_s: float = 10.0
    budget_ratio: float = 0.2
    budget_window_s: float = 10.0
    budget_min: int = 10

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ResilienceConfig:
        """Build and validate; raises ``ValueError`` naming the key."""
        config = cls(**typed_values(cls, "resilience", raw))
        if config.max_attempts < 1 or config.budget_min < 0 or config.budget_ratio < 0:
            raise ValueError("resilience: max_attempts >= 1, budget_min and budget_ratio >= 0")
        if min(config.backoff_initial_s, config.backoff_max_s, config.budget_window_s) < 0:
            raise ValueError("resilience: durations must be >= 0")
        return config


class RetryBudget:
    """Allows ``min + ratio * requests`` retries per sliding window.

    Args:
        config: ratio, window and floor.
        clock: monotonic seconds.
    """

    def __init__(
        self, config: ResilienceConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._clock = clock
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, now: float) -> None:
        horizon = now - self._config.budget_window_s
        for series in (self._requests, self._retries):
            while series and series[0] <= horizon:
                series.popleft()

    def request(self) -> None:
        """Count a request (its first attempt)."""
        self._requests.append(self._clock())

    def try_retry(self) -> bool:
        """Take one retry from the budget; ``False`` when it is spent."""
        now = self._clock()
        self._trim(now)
        allowed = self._config.budget_min + self._config.budget_ratio * len(self._requests)
        if len(self._retries) >= allowed:
            return False
        self._retries.append(now)
        return True
