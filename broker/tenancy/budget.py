"""Spend: what each tenant's requests cost, summed per period, and budget caps.

Spend is summed per tenant and period (UTC day or month) in Redis, shared by every broker;
when Redis is unreachable it is summed in process. Redis calls go through a
:class:`~broker.guard.Guard` (bounded, skipped for a while after a failure). A tenant at or
over its budget gets 402 ``budget_exceeded`` until the period ends.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from broker.errors import BudgetExceeded
from broker.guard import Guard, Unavailable

if TYPE_CHECKING:  # the client is injected; importing redis costs ~80 ms at start
    import redis.asyncio as redis

__all__ = ["BudgetExceeded", "SpendLedger", "period_key"]


#: ``llm-edge:spend:<tenant>:<period>``: the tenant's total (budgets read it).
SPEND_PREFIX = "llm-edge:spend:"
#: ``llm-edge:spend-by-model:<tenant>:<period>``: a hash of model -> USD.
BY_MODEL_PREFIX = "llm-edge:spend-by-model:"
#: ``llm-edge:spend-by-tier:<tenant>:<period>``: a hash of service tier -> USD.
BY_TIER_PREFIX = "llm-edge:spend-by-tier:"


def period_key(period: str, now: float) -> tuple[str, float]:
    """``("2026-11", seconds left)`` for a month, ``("2026-11-26", ...)`` for a day."""
    moment = datetime.fromtimestamp(now, UTC)
    if period == "day":
        end = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return moment.strftime("%Y-%m-%d"), (end - moment).total_seconds()
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    end = moment.replace(year=year, month=month, day=1, hour=0, minute=0, second=0, microsecond=0)
    return moment.strftime("%Y-%m"), (end - moment).total_seconds()


class SpendLedger:
    """Per-tenant spend per period.

    Args:
        client: Redis, or ``None`` for in-process sums.
        clock: wall-clock seconds.
        guard: bounds Redis calls (shared with the rate limiter).
    """

    def __init__(
        self,
        client: redis.Redis | None,
        clock: Callable[[], float] = time.time,
        guard: Guard | None = None,
    ) -> None:
        self._client = client
        self._clock = clock
        self.guard = guard or Guard("redis")
        self._local: dict[str, float] = {}

    def _key(self, tenant: str, period: str) -> tuple[str, float]:
        label, left = period_key(period, self._clock())
        return f"{SPEND_PREFIX}{tenant}:{label}", left

    async def spent(self, tenant: str, period: str) -> float:
        """USD spent by ``tenant`` in the current period."""
        key, _ = self._key(tenant, period)
        client = self._client
        if client is not None:
            try:
                value = await self.guard.call(lambda: client.get(key))
                return float(value or 0.0)
            except Unavailable:  # Redis down: the local sum stands in
                pass
        return self._local.get(key, 0.0)

    async def add(
        self,
        tenant: str,
        period: str,
        cost: float,
        model: str,
        also: tuple[str, str] | None = None,
        *,
        tier: str = "default",
    ) -> None:
        """Add a request's cost to the tenant's total, to its per-model and per-tier sums (the
        service tier it was priced at), and to ``also`` (a key's own scope and period, when it
        has a budget), in one round trip."""
        if cost <= 0:
            return
        key, left = self._key(tenant, period)
        extra = self._key(*also) if also is not None else None
        for total in (key, *([extra[0]] if extra else [])):
            self._local[total] = self._local.get(total, 0.0) + cost
        if self._client is not None:
            suffix = key.removeprefix(SPEND_PREFIX)
            by_model, by_tier = BY_MODEL_PREFIX + suffix, BY_TIER_PREFIX + suffix
            keep = int(left) + 86400  # a day past the period, for `llm-edge usage`
            pipe = self._client.pipeline(transaction=False)
            pipe.incrbyfloat(key, cost)
            pipe.hincrbyfloat(by_model, model, cost)
            pipe.hincrbyfloat(by_tier, tier, cost)
            pipe.expire(key, keep)
            pipe.expire(by_model, keep)
            pipe.expire(by_tier, keep)
            if extra is not None:
                pipe.incrbyfloat(extra[0], cost)
                pipe.expire(extra[0], int(extra[1]) + 86400)
            with contextlib.suppress(Unavailable):  # best effort: the local sum has it
                await self.guard.call(pipe.execute)

    async def check(self, tenant: str, budget: float, period: str, whose: str = "the") -> None:
        """Raise :class:`BudgetExceeded` when the tenant (or a key's scope) is at or over
        ``budget`` (``whose`` starts the message: ``"this key's"`` for a key's own)."""
        spent = await self.spent(tenant, period)
        if spent >= budget:
            _, left = self._key(tenant, period)
            raise BudgetExceeded(
                f"{whose} {period}ly budget of ${budget:.2f} is spent (${spent:.4f}); it "
                f"resets in {left / 3600:.1f} h",
                retry_after=max(1, int(left)),
            )
