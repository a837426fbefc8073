"""L1: TTL, entry and byte bounds, frequency-based admission."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from broker.cache.l1 import L1Cache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ttl_expiry_with_injected_clock() -> None:
    """An entry is served until its TTL passes, then it is gone."""
    clock = Clock()
    cache: L1Cache[str] = L1Cache(10, 1000, clock)
    cache.put("k", "v", 1, ttl_s=5)
    clock.now = 4.9
    assert cache.get("k") == "v"
    clock.now = 5.0
    assert cache.get("k") is None
    assert len(cache) == 0
    assert cache.bytes == 0


def test_entry_and_byte_bounds_hold() -> None:
    """Neither the entry count nor the byte total ever exceeds its bound."""
    cache: L1Cache[bytes] = L1Cache(max_entries=50, max_bytes=2000)
    for i in range(1000):
        cache.put(f"k{i}", b"x", size=10 + i % 90, ttl_s=60)
        assert len(cache) <= 50
        assert cache.bytes <= 2000
    cache.put("huge", b"x", size=5000, ttl_s=60)
    assert cache.get("huge") is None


def _hot_hit_ratio(get: Callable[[str], object], put: Callable[[str], None]) -> float:
    """Replay 50 hot keys interleaved with a flood of one-off keys; return the hot hit ratio."""
    hits = asks = 0
    for i in range(20_000):
        key = f"hot{(i // 3) % 50}" if i % 3 == 0 else f"once{i}"
        found = get(key) is not None
        if key.startswith("hot") and i > 2_000:
            asks += 1
            hits += found
        if not found:
            put(key)
    return hits / asks


def test_frequent_entries_survive_a_flood_of_one_offs() -> None:
    """Hot entries stay cached under a flood of one-offs that would flush an LRU (TinyLFU)."""
    cache: L1Cache[int] = L1Cache(max_entries=100, max_bytes=10**9)
    ours = _hot_hit_ratio(cache.get, lambda k: cache.put(k, 1, 1, 60))

    lru: OrderedDict[str, int] = OrderedDict()

    def lru_get(key: str) -> int | None:
        if key in lru:
            lru.move_to_end(key)
        return lru.get(key)

    def lru_put(key: str) -> None:
        lru[key] = 1
        if len(lru) > 100:
            lru.popitem(last=False)

    plain = _hot_hit_ratio(lru_get, lru_put)
    assert ours > 0.9, f"hot hit ratio {ours:.2f}"
    assert plain < 0.5, f"an LRU kept {plain:.2f}: the workload does not test admission"


def test_purge_by_prefix() -> None:
    """Purging a namespace prefix removes only that namespace."""
    cache: L1Cache[int] = L1Cache(10, 100)
    cache.put("t:a:1", 1, 1, 60)
    cache.put("t:b:1", 1, 1, 60)
    assert cache.purge("t:a:") == 1
    assert cache.get("t:a:1") is None
    assert cache.get("t:b:1") == 1
