"""One deployment's answers over the last minute: a ring of per-second latency histograms.

The console shows latency, error rate and load as they are now, not averaged since the
broker started. Each second of the window has a slot (answers, errors, seconds spent
answering, and a histogram with :data:`~schemas.latency.LATENCY_BUCKETS_S`); an answer adds
to the current second's slot, and a slot is cleared when a new second first writes to it.
Recording is O(1) with nothing allocated (a bisect and four additions); the console's
snapshot, once a second at most, adds up the slots still inside the window.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

from schemas.latency import LATENCY_BUCKETS_S

__all__ = ["WINDOW_S", "LatencyWindow", "WindowTotals"]

#: Seconds the console's latency, error rate and load cover.
WINDOW_S = 60
_WIDTH = len(LATENCY_BUCKETS_S)


@dataclass(frozen=True, slots=True)
class WindowTotals:
    """What the window holds: answers, errors (5xx), seconds spent answering (their sum over
    the window's length is the mean number in flight), and the histogram."""

    answered: int
    errors: int
    busy_s: float
    buckets: list[int]


class LatencyWindow:
    """Answers of the last ``window_s`` whole seconds (the current one included).

    Args:
        window_s: slots in the ring, one per second.
    """

    __slots__ = ("_answered", "_buckets", "_busy", "_errors", "_stamps")

    def __init__(self, window_s: int = WINDOW_S) -> None:
        self._stamps = [-1] * window_s  # which second each slot holds
        self._answered = [0] * window_s
        self._errors = [0] * window_s
        self._busy = [0.0] * window_s
        self._buckets = [0] * (window_s * _WIDTH)  # slot-major: slot i at [i * _WIDTH, ...)

    def observe(self, second: int, seconds: float, failed: bool) -> None:
        """An answer given during ``second`` (whole clock seconds) that took ``seconds``."""
        slot = second % len(self._stamps)
        if self._stamps[slot] != second:
            self._clear(slot, second)
        self._answered[slot] += 1
        if failed:
            self._errors[slot] += 1
        self._busy[slot] += seconds
        self._buckets[slot * _WIDTH + bisect_left(LATENCY_BUCKETS_S, seconds)] += 1

    def _clear(self, slot: int, second: int) -> None:
        self._stamps[slot] = second
        self._answered[slot] = self._errors[slot] = 0
        self._busy[slot] = 0.0
        start = slot * _WIDTH
        self._buckets[start : start + _WIDTH] = [0] * _WIDTH

    def totals(self, second: int) -> WindowTotals:
        """The sums over the slots within the window that ends with ``second``."""
        answered = errors = 0
        busy = 0.0
        buckets = [0] * _WIDTH
        size = len(self._stamps)
        for slot, stamp in enumerate(self._stamps):
            if not 0 <= second - stamp < size or not self._answered[slot]:
                continue
            answered += self._answered[slot]
            errors += self._errors[slot]
            busy += self._busy[slot]
            start = slot * _WIDTH
            for i, count in enumerate(self._buckets[start : start + _WIDTH]):
                buckets[i] += count
        return WindowTotals(answered, errors, busy, buckets)
