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

import msgspec

from broker.errors import BudgetExceeded
from broker.guard import Guard, Unavailable
from schemas import Usage

if TYPE_CHECKING:  # the client is injected; importing redis costs ~80 ms at start
    import redis.asyncio as redis

__all__ = ["BudgetExceeded", "SpendLedger", "period_key", "usage_of"]


class _AnyUsage(msgspec.Struct):
    """A ``usage`` of either API: OpenAI's counts, or Anthropic's."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class _UsageOnly(msgspec.Struct):
    usage: _AnyUsage | None = None


_usage_decoder = msgspec.json.Decoder(_UsageOnly)


def usage_of(body: bytes) -> Usage | None:
    """The ``usage`` of a ``chat.completion`` or an Anthropic ``message`` body (decoding
    nothing else); an Anthropic message's input tokens count its cache reads and writes."""
    try:
        raw = _usage_decoder.decode(body).usage
    except msgspec.MsgspecError:
        return None
    if raw is None:
        return None
    if raw.input_tokens is None and raw.output_tokens is None:
        prompt, completion = raw.prompt_tokens, raw.completion_tokens
    else:
        prompt = (
            (raw.input_tokens or 0)
            + (raw.cache_read_input_tokens or 0)
            + (raw.cache_creation_input_tokens or 0)
        )
        completion = raw.output_tokens or 0
    total = prompt + completion
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


#: ``llm-edge:spend:<tenant>:<period>``: the tenant's total (budgets read it).
SPEND_PREFIX = "llm-edge:spend:"
#: ``llm-edge:spend-by-model:<tenant>:<period>``: a hash of model -> USD.
BY_MODEL_PREFIX = "llm-edge:spend-by-model:"


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
    ) -> None:
        """Add a request's cost to the tenant's total and to its per-model sum, and to
        ``also`` (a key's own scope and period, when it has a budget), in one round trip."""
        if cost <= 0:
            return
        key, left = self._key(tenant, period)
        extra = self._key(*also) if also is not None else None
        for total in (key, *([extra[0]] if extra else [])):
            self._local[total] = self._local.get(total, 0.0) + cost
        if self._client is not None:
            by_model = BY_MODEL_PREFIX + key.removeprefix(SPEND_PREFIX)
            keep = int(left) + 86400  # a day past the period, for `llm-edge usage`
            pipe = self._client.pipeline(transaction=False)
            pipe.incrbyfloat(key, cost)
            pipe.hincrbyfloat(by_model, model, cost)
            pipe.expire(key, keep)
            pipe.expire(by_model, keep)
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
