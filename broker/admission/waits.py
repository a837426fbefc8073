"""What requests waited, per tenant and class, over the last minute (for the console).

Only requests that waited are recorded (one bisect and four additions into a
:class:`~broker.latency_window.LatencyWindow`): a request that found capacity free costs
nothing here. The console adds every broker's buckets and reads percentiles off the sum.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from broker.latency_window import WINDOW_S, LatencyWindow

__all__ = ["WaitBook"]


class WaitBook:
    """Waits and refusals per ``(tenant label, class)``.

    Args:
        clock: wall-clock or monotonic seconds (only differences and whole seconds matter).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._windows: dict[tuple[str, str], LatencyWindow] = {}
        self.refused: Counter[tuple[str, str, str]] = Counter()

    def waited(self, tenant: str, klass: str, seconds: float, *, refused: bool = False) -> None:
        """A request of ``tenant`` in ``klass`` waited ``seconds`` (and was then refused)."""
        window = self._windows.get((tenant, klass))
        if window is None:
            window = self._windows[tenant, klass] = LatencyWindow()
        window.observe(int(self._clock()), seconds, refused)

    def refuse(self, tenant: str, klass: str, where: str) -> None:
        """A request was refused for lack of capacity at ``where``."""
        self.refused[tenant, klass, where] += 1

    def report(self) -> list[dict[str, Any]]:
        """Per tenant and class: requests that waited in the last minute (and, of those, the
        ones refused after waiting), their wait histogram, and refusals since start by
        where."""
        now = int(self._clock())
        keys = set(self._windows) | {(t, k) for t, k, _ in self.refused}
        rows = []
        for tenant, klass in sorted(keys):
            window = self._windows.get((tenant, klass))
            totals = window.totals(now) if window is not None else None
            rows.append(
                {
                    "tenant": tenant,
                    "class": klass,
                    "window_s": WINDOW_S,
                    "waited": totals.answered if totals else 0,
                    "waited_s": round(totals.busy_s, 3) if totals else 0.0,
                    "buckets": totals.buckets if totals else [],
                    "refused": {
                        where: n
                        for (t, k, where), n in self.refused.items()
                        if (t, k) == (tenant, klass)
                    },
                }
            )
        return rows
