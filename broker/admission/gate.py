"""One place capacity runs out: a deployment (its provider's limits) or the broker itself.

A :class:`Gate` holds up to three :class:`~broker.admission.pool.Pool` s (calls in flight,
requests per window, tokens per window), a :class:`~broker.admission.queue.FairQueue` of
tickets waiting for them, and a pause (the provider said to wait: a 429's ``Retry-After``,
or no requests left until its window resets).

A request takes permits at once when nothing is queued and they are free
(:meth:`Gate.try_take`: a few comparisons, no allocation but the permit); otherwise it
waits, and the gate hands out permits in the queue's order as they free (a call ends, a
windowed permit ages out, a pause ends, the broker's share grows).

**Headroom for higher classes.** A class that used a pool lately (``reserve_window_s``)
keeps more than its recent peak free from the classes below it (:func:`headroom`: one
permit and the square root of the peak, as arrivals in a window vary about as the square
root of their number): a steady interactive tenant finds a free permit even while a
background flood keeps the pool full, instead of waiting for the next call to end or the
next windowed permit to age out (either alone adds up to a whole call or a whole window's
spacing to its latency). A class with no recent traffic reserves nothing (work-conserving), a ticket
aged into a higher rank uses that rank's headroom, and the lowest class always keeps at
least one permit.

**A share that shrinks keeps its headroom.** When the mesh gives part of this broker's share
to another broker (a flood reached it too), permits lower classes took out of the larger
share are still in use (in their window, or their calls still running). The allocator then
lowers the share only as far as :meth:`Gate.keep` allows: it stays above its new target by
what those lower classes hold, so higher classes keep their headroom, and lower classes fit
against the target alone (:meth:`Gate.resize`); the share reaches the target as their
permits free. The cost of a change of shares falls on the lower classes, not on the
interactive requests that happened to arrive while it happened.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from broker.admission.pool import CLASSES, Held, Pool
from broker.admission.queue import POOLS, FairQueue, Ticket

__all__ = ["CALLS", "REQUESTS", "TOKENS", "Gate", "Grant", "Permit"]

#: Pool indexes.
CALLS, REQUESTS, TOKENS = 0, 1, 2


def headroom(peak: int) -> int:
    """Permits a recently active class keeps free beyond its recent ``peak``: one, and the
    square root of the peak (a steady tenant's use of a window varies about as the square
    root of its mean, so its next window may pass its last peak by about that much)."""
    return 1 + math.isqrt(max(0, peak))


class Permit:
    """Permits one request holds at one gate; :meth:`release` when its call ends."""

    __slots__ = ("_held", "gate")

    def __init__(self, gate: Gate | None, held: tuple[Held | None, ...]) -> None:
        self.gate = gate
        self._held = held

    @property
    def counts_tokens(self) -> bool:
        """Whether the deployment has a token limit (the call's real usage settles it)."""
        return self._held[TOKENS] is not None

    def release(self) -> None:
        """The call ended: its calls-in-flight permit is free (idempotent)."""
        held = self._held[CALLS]
        if held is not None and held.amount and self.gate is not None:
            self.gate.give_back(held)

    def settle_tokens(self, tokens: int) -> None:
        """The call used ``tokens`` (its estimate was counted up front)."""
        held = self._held[TOKENS]
        if held is not None and self.gate is not None:
            self.gate.settle(held, tokens)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a waiting ticket receives: the gate that let it through and its permit."""

    gate: Gate
    permit: Permit


class Gate:
    """Capacity of one deployment (or the broker) in this broker.

    Args:
        name: the deployment's name (``broker`` for the broker's own).
        pools: calls, requests, tokens (``None`` where there is no limit).
        aging_s: waiting that raises a ticket's class by one rank.
        reserve_window_s: how long a class's use keeps headroom for it.
        clock: the event loop's clock.
        on_release: called when a permit is given back (the allocator may owe a share back).
    """

    def __init__(
        self,
        name: str,
        pools: tuple[Pool | None, Pool | None, Pool | None],
        *,
        aging_s: float,
        reserve_window_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_release: Callable[[Gate], None] | None = None,
    ) -> None:
        self.name = name
        self.pools = pools
        self.queue = FairQueue(aging_s)
        self.paused_until = 0.0
        self._clock = clock
        self._reserve_window_s = reserve_window_s
        self._on_release = on_release
        #: per class: when it last took permits, and its peak use per pool in the current
        #: and the previous window
        self._seen = [float("-inf")] * CLASSES
        self._peak = [[0] * POOLS for _ in range(CLASSES)]
        self._peak_before = [[0] * POOLS for _ in range(CLASSES)]
        self._window_start = clock()
        self._timer: asyncio.TimerHandle | None = None
        #: per pool: the share the allocator is lowering it to (``None``: its size)
        self._targets: list[int | None] = [None] * POOLS
        #: calls admitted, and when the rate of ends was last measured (wait estimates)
        self.ends = 0
        self._ends_rate = 0.0
        self._ends_mark = (clock(), 0)

    # taking

    def try_take(self, ticket: Ticket) -> Permit | None:
        """Permits at once when nobody is queued and they are free; else ``None``."""
        if self.queue.live:
            return None
        now = self._clock()
        if not self._fits(ticket, ticket.klass, now):
            return None
        return self._take(ticket, now)

    def enqueue(self, ticket: Ticket) -> None:
        """Let ``ticket`` wait here (its future receives a :class:`Grant`)."""
        self.queue.push(ticket)
        self.pump()

    def _fits(self, ticket: Ticket, rank: float, now: float) -> bool:
        if now < self.paused_until:
            return False
        for index, pool in enumerate(self.pools):
            if pool is None:
                continue
            need = pool.need(ticket.amounts[index])
            room = pool.free(now) - self._reserve(index, rank, now, pool)
            target = self._targets[index]
            if target is not None and self._above(rank, now):
                room -= pool.size - target  # a shrinking share: lower classes fit its target
            if room < need:
                return False
        return True

    def _above(self, rank: float, now: float) -> bool:
        """Whether a class above ``rank`` used this gate lately."""
        window = self._reserve_window_s
        return any(now - self._seen[k] <= window for k in range(CLASSES) if k < rank)

    def _reserve(self, index: int, rank: float, now: float, pool: Pool) -> int:
        """Permits of pool ``index`` kept for classes above ``rank`` that used it lately."""
        reserve = 0
        for k in range(CLASSES):
            if k >= rank:
                break
            if now - self._seen[k] > self._reserve_window_s:
                continue
            peak = max(self._peak[k][index], self._peak_before[k][index])
            reserve += max(0, peak + headroom(peak) - pool.by_class[k])
        return min(reserve, max(0, pool.size - 1))

    def _take(self, ticket: Ticket, now: float) -> Permit:
        if now - self._window_start > self._reserve_window_s:
            self._peak_before, self._peak = self._peak, [[0] * POOLS for _ in range(CLASSES)]
            self._window_start = now
        k = ticket.klass
        self._seen[k] = now
        held: list[Held | None] = [None] * POOLS
        for index, pool in enumerate(self.pools):
            if pool is not None:
                held[index] = pool.take(ticket.amounts[index], k, now)
                self._peak[k][index] = max(self._peak[k][index], pool.by_class[k])
        return Permit(self, (held[0], held[1], held[2]))

    # giving back

    def give_back(self, held: Held) -> None:
        """A call's permit is free: the next ticket may go."""
        pool = self.pools[CALLS]
        if pool is not None:
            pool.give_back(held)
        self.ends += 1
        if self.queue.live:
            self.pump()
        if self._on_release is not None:
            self._on_release(self)

    def settle(self, held: Held, tokens: int) -> None:
        """Correct a call's token permit to its real usage."""
        pool = self.pools[TOKENS]
        if pool is not None:
            pool.settle(held, tokens, self._clock())
            if self.queue.live:
                self.pump()

    def pause(self, until: float) -> None:
        """Send nothing before ``until`` (the provider asked); tickets wait meanwhile."""
        if until > self.paused_until:
            self.paused_until = until
            self._wake_at(until)

    def add_pool(self, index: int, pool: Pool) -> None:
        """A limit learned later: a pool of its own (nothing of it in use yet)."""
        pools = list(self.pools)
        if pools[index] is None:
            pools[index] = pool
            self.pools = (pools[0], pools[1], pools[2])

    def resize(self, index: int, size: int, target: int | None = None) -> None:
        """This broker's share of pool ``index`` is now ``size``, on its way down to
        ``target`` (see :meth:`keep`; ``None``: ``size`` is the share)."""
        pool = self.pools[index]
        if pool is None:
            return
        target = target if target is not None and target < size else None
        before = self._targets[index]
        lower_before = pool.size if before is None else before  # what lower classes fit
        lower_now = size if target is None else target
        freed = pool.size < size or lower_now > lower_before
        pool.size = size
        self._targets[index] = target
        if freed and self.queue.live:
            self.pump()

    def keep(self, index: int, target: int) -> int:
        """What to keep of pool ``index`` while the share shrinks to ``target``: while
        classes below the highest one that used the gate lately hold permits, the share
        stays above ``target`` by up to the headroom the higher classes keep (never more
        than it is now); without such permits, ``target`` itself."""
        pool = self.pools[index]
        if pool is None or target >= pool.size:
            return target
        now = self._clock()
        pool.free(now)
        window = self._reserve_window_s
        active = [k for k in range(CLASSES) if now - self._seen[k] <= window]
        if not active or not any(pool.by_class[k] > 0 for k in range(min(active) + 1, CLASSES)):
            return target
        headroom = self._reserve(index, max(active), now, pool)
        return max(target, min(pool.size, max(0, pool.in_use) + headroom))

    # the queue

    def pump(self) -> None:
        """Grant waiting tickets, in order, while their permits are free."""
        queue = self.queue
        while queue.live:
            now = self._clock()
            ticket = queue.best(now)
            if ticket is None:
                return
            if not self._fits(ticket, queue.effective_rank(ticket, now), now):
                self._wake_later(now)
                return
            queue.pop(ticket)
            permit = self._take(ticket, now)
            future = ticket.future
            assert future is not None
            future.set_result(Grant(self, permit))

    def _wake_later(self, now: float) -> None:
        """The queue is blocked: pump again when a windowed permit frees or a pause ends
        (a call that ends pumps by itself)."""
        wake = self.paused_until if now < self.paused_until else None
        for pool in self.pools[REQUESTS:]:
            expiry = pool.next_expiry() if pool is not None else None
            if expiry is not None and (wake is None or expiry < wake):
                wake = expiry
        if wake is not None:
            self._wake_at(wake)

    def _wake_at(self, when: float) -> None:
        timer = self._timer
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._woken)

    def _woken(self) -> None:
        self._timer = None
        if self.queue.live:
            self.pump()

    # what it knows

    def rate(self) -> float:
        """Calls ending per second lately (0 before any ended)."""
        now = self._clock()
        since, ends = self._ends_mark
        if now - since >= 1.0:
            measured = (self.ends - ends) / (now - since)
            self._ends_rate = (
                measured if not self._ends_rate else 0.5 * (measured + self._ends_rate)
            )
            self._ends_mark = (now, self.ends)
        return self._ends_rate

    def estimate_wait(self, klass: int) -> float | None:
        """Seconds a new ticket of ``klass`` would wait, from what is queued ahead of it and
        how fast permits free; ``None`` when not known yet."""
        ahead = self.queue.ahead(klass) + 1
        rates: list[float] = []
        calls = self.pools[CALLS]
        if calls is not None:
            measured = self.rate()
            if measured <= 0:
                return None
            rates.append(measured)
        for pool in self.pools[REQUESTS:]:
            if pool is not None and pool.hold_s:
                rates.append(max(pool.size, 1) / pool.hold_s)
        if not rates:
            return None
        wait = ahead / min(rates)
        now = self._clock()
        return wait + max(0.0, self.paused_until - now)

    def demand(self, index: int) -> int:
        """Permits of pool ``index`` this broker wants: in use, asked by waiting tickets, and
        the headroom recent traffic keeps (what the allocator shares out by)."""
        pool = self.pools[index]
        if pool is None:
            return 0
        now = self._clock()
        pool.free(now)
        recent = 0
        for k in range(CLASSES):
            if now - self._seen[k] <= self._reserve_window_s:
                peak = max(self._peak[k][index], self._peak_before[k][index])
                recent += peak + headroom(peak)
        return max(pool.in_use + self.queue.queued[index], recent)
