"""How a limit is split among brokers: max-min fair by what each wants (pure).

Every broker computes the same split from the same entry, so their targets agree; the odd
permits change hands with the wall clock's turn, so none holds them for good.
"""

from __future__ import annotations

import hashlib

__all__ = ["water_fill"]


def water_fill(limit: int, wants: dict[str, int], turn: int = 0) -> dict[str, int]:
    """A max-min fair split of ``limit`` permits by ``wants``: each gets what it wants up to
    an equal share, what some leave is split among the others. The last odd permits (fewer
    than the brokers that want one) go in an order that changes with ``turn`` (a second of
    the wall clock): every broker computes the same split, and over time each has its turn
    (with one permit and two busy brokers, neither holds it for good)."""
    given = dict.fromkeys(wants, 0)
    left = limit
    hungry = sorted(b for b, w in wants.items() if w > 0)
    while left > 0 and hungry:
        each = left // len(hungry)
        if each == 0:
            for name in sorted(hungry, key=lambda b: _turn_order(b, turn))[:left]:
                given[name] += 1
            break
        for name in hungry:
            step = min(each, wants[name] - given[name])
            given[name] += step
            left -= step
        hungry = [b for b in hungry if given[b] < wants[b]]
    return given


def _turn_order(name: str, turn: int) -> bytes:
    return hashlib.blake2s(f"{name}:{turn}".encode(), digest_size=8).digest()
