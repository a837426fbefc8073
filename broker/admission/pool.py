"""Permits of one kind at one gate: calls in flight, requests per window, tokens per window.

A :class:`Pool` holds ``size`` permits: this broker's share of a limit (the mesh's allocator
sets it). A permit is held until it is given back (calls in flight) or for ``hold_s`` seconds
after it was taken (requests and tokens): a provider's "R requests a minute" becomes "at most
``R * hold_s / 60`` requests taken in any ``hold_s`` seconds", which keeps any minute under R
(and smooths a minute's allowance over it instead of spending it in the first second).

Each permit is counted against the priority class that took it, so a gate can keep headroom
for classes that used the pool lately (:mod:`broker.admission.gate`).
"""

from __future__ import annotations

from collections import deque

__all__ = ["CLASSES", "Held", "Pool"]

#: Priority classes counted separately (interactive, default, background, batch).
CLASSES = 4


class Held:
    """Permits one request holds in one pool: how many, of which class, until when."""

    __slots__ = ("amount", "klass", "until")

    def __init__(self, amount: int, klass: int, until: float) -> None:
        self.amount = amount
        self.klass = klass
        self.until = until


class Pool:
    """``size`` permits, each held until released (``hold_s`` is ``None``) or for ``hold_s``.

    Args:
        size: permits this broker may hold now.
        hold_s: how long a permit stays taken (``None``: until :meth:`give_back`).
    """

    __slots__ = ("_held", "by_class", "hold_s", "in_use", "size")

    def __init__(self, size: int, hold_s: float | None = None) -> None:
        self.size = size
        self.hold_s = hold_s
        self.in_use = 0
        self.by_class = [0] * CLASSES
        self._held: deque[Held] = deque()

    def expire(self, now: float) -> None:
        """Forget windowed permits whose time is up."""
        held = self._held
        while held and held[0].until <= now:
            gone = held.popleft()
            self.in_use -= gone.amount
            self.by_class[gone.klass] -= gone.amount

    def need(self, amount: int) -> int:
        """What ``amount`` costs here: a request larger than the whole pool takes all of it
        (it runs alone rather than never)."""
        return min(amount, self.size) if self.size > 0 else amount

    def free(self, now: float) -> int:
        """Permits not taken (after windowed ones expired); negative when the share shrank
        below what is in use."""
        if self.hold_s is not None:
            self.expire(now)
        return self.size - self.in_use

    def take(self, amount: int, klass: int, now: float) -> Held:
        """Take ``amount`` permits for class ``klass`` (the caller checked :meth:`free`)."""
        amount = self.need(amount)
        held = Held(amount, klass, now + self.hold_s if self.hold_s is not None else 0.0)
        self.in_use += amount
        self.by_class[klass] += amount
        if self.hold_s is not None:
            self._held.append(held)
        return held

    def give_back(self, held: Held) -> None:
        """A call ended: its permit is free again (windowed permits only expire)."""
        if self.hold_s is None and held.amount:
            self.in_use -= held.amount
            self.by_class[held.klass] -= held.amount
            held.amount = 0

    def settle(self, held: Held, amount: int, now: float) -> None:
        """Correct a windowed permit to what the call really used (tokens known afterwards);
        one that left the window already is not counted any more."""
        if self.hold_s is None:
            return
        self.expire(now)
        if held.until > now:  # still in the window (expiry removes only what is past)
            amount = max(0, amount)
            self.in_use += amount - held.amount
            self.by_class[held.klass] += amount - held.amount
            held.amount = amount

    def next_expiry(self) -> float | None:
        """When the next windowed permit frees (``None``: none is held)."""
        return self._held[0].until if self._held else None
