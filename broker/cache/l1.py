"""L1: the in-process cache, bounded by entry count and total bytes, with per-entry TTL.

Admission follows W-TinyLFU (Einziger, Friedman, Manes): new entries enter a small LRU window;
an entry leaving the window enters the main LRU only if a count-min sketch says it is asked for
more often than the main region's eviction victim. One-off requests therefore cannot flush
entries that are asked for again and again. All operations are O(1) and allocation-light.
"""

from __future__ import annotations

import time
from array import array
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from broker.cache.settings import DEFAULT_L1_MAX_BYTES, DEFAULT_L1_MAX_ENTRIES

__all__ = ["L1Cache"]

V = TypeVar("V")


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    size: int
    expires_at: float


class _FrequencySketch:
    """A 4-row count-min sketch of 4-bit-ish counters (bytes, capped at 15) with aging."""

    def __init__(self, capacity: int) -> None:
        width = 1
        while width < max(16, capacity * 4):
            width <<= 1
        self._mask = width - 1
        self._rows = [array("B", bytes(width)) for _ in range(4)]
        self._additions = 0
        self._sample = width * 10

    def _indexes(self, key: str) -> tuple[int, int, int, int]:
        h = hash(key)
        m = self._mask
        return h & m, (h >> 16) & m, (h >> 32) & m, ((h >> 48) ^ (h * 31)) & m

    def increment(self, key: str) -> None:
        a, b, c, d = self._indexes(key)
        r0, r1, r2, r3 = self._rows
        if r0[a] < 15:
            r0[a] += 1
        if r1[b] < 15:
            r1[b] += 1
        if r2[c] < 15:
            r2[c] += 1
        if r3[d] < 15:
            r3[d] += 1
        self._additions += 1
        if self._additions >= self._sample:
            self._age()

    def frequency(self, key: str) -> int:
        a, b, c, d = self._indexes(key)
        r0, r1, r2, r3 = self._rows
        return min(r0[a], r1[b], r2[c], r3[d])

    def _age(self) -> None:
        """Halve every counter so old popularity fades."""
        for r, row in enumerate(self._rows):
            self._rows[r] = array("B", bytes(c >> 1 for c in row))
        self._additions //= 2


class L1Cache(Generic[V]):
    """A bounded in-process cache.

    Args:
        max_entries: entry bound.
        max_bytes: bound on the summed ``size`` of entries.
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(
        self,
        max_entries: int = DEFAULT_L1_MAX_ENTRIES,
        max_bytes: int = DEFAULT_L1_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._window_cap = max(1, max_entries // 100)
        self._window: OrderedDict[str, _Entry[V]] = OrderedDict()
        self._main: OrderedDict[str, _Entry[V]] = OrderedDict()
        self._sketch = _FrequencySketch(max_entries)
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._window) + len(self._main)

    def get(self, key: str) -> V | None:
        """Return a live entry, refreshing its recency; ``None`` on miss or expiry."""
        self._sketch.increment(key)
        region = self._main
        entry = region.get(key)
        if entry is None:
            region = self._window
            entry = region.get(key)
            if entry is None:
                return None
        if entry.expires_at <= self._clock():
            del region[key]
            self.bytes -= entry.size
            return None
        region.move_to_end(key)
        return entry.value

    def put(self, key: str, value: V, size: int, ttl_s: float) -> None:
        """Insert or replace an entry; it may be refused admission under pressure."""
        if size > self.max_bytes or ttl_s <= 0:
            return
        self.delete(key)
        self._window[key] = _Entry(value, size, self._clock() + ttl_s)
        self.bytes += size
        while len(self._window) > self._window_cap:
            cand_key, cand = self._window.popitem(last=False)
            self._admit(cand_key, cand)
        while self.bytes > self.max_bytes and (self._main or self._window):
            region = self._main or self._window
            _, victim = region.popitem(last=False)
            self.bytes -= victim.size

    def _admit(self, key: str, entry: _Entry[V]) -> None:
        """Move a window leaver into main if it beats main's LRU victim (TinyLFU)."""
        main_cap = self.max_entries - self._window_cap
        if len(self._main) >= main_cap and self._main:
            victim_key = next(iter(self._main))
            if self._sketch.frequency(key) <= self._sketch.frequency(victim_key):
                self.bytes -= entry.size
                return
            victim = self._main.pop(victim_key)
            self.bytes -= victim.size
        self._main[key] = entry

    def delete(self, key: str) -> bool:
        """Remove one entry; return whether it was there."""
        entry = self._main.pop(key, None) or self._window.pop(key, None)
        if entry is None:
            return False
        self.bytes -= entry.size
        return True

    def purge(self, prefix: str = "") -> int:
        """Remove every entry whose key starts with ``prefix`` (all when empty)."""
        removed = 0
        for region in (self._window, self._main):
            for key in [k for k in region if k.startswith(prefix)]:
                self.bytes -= region.pop(key).size
                removed += 1
        return removed
