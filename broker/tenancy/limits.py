"""Input limits (every request) and per-tenant rate limits (requests and tokens per minute).

Rate limits are counted in Redis with one atomic script per request, so every broker process
shares one limit. When Redis is unreachable each broker falls back to counting in process
(the limit then applies per broker: a documented, temporary over-admission rather than an
outage). Redis calls go through a :class:`~broker.guard.Guard`: bounded, and skipped for a
while after a failure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.errors import InvalidRequest, RateLimited
from broker.guard import Guard, Unavailable
from edge_runtime.tables import typed_values
from schemas import ChatRequest, Message, headers
from schemas.anthropic import MessageParam, MessagesRequest

if TYPE_CHECKING:  # the client is injected; importing redis costs ~80 ms at start
    import redis.asyncio as redis

__all__ = ["InputLimits", "RateLimiter", "Usage", "window_keys"]


@dataclass(frozen=True, slots=True, kw_only=True)
class InputLimits:
    """The ``[limits]`` table: shape limits checked on every request.

    ``max_message_chars`` is 0 (no bound) by default: one message may take the whole request
    size (``broker.max_request_bytes``), as the providers allow (a 1M-token context, a coding
    agent's whole repository in one message).
    """

    max_messages: int = 1024
    max_message_chars: int = 0
    max_tools: int = 128

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> InputLimits:
        """Parse and validate; raises ``ValueError`` naming the key."""
        limits = cls(**typed_values(cls, "limits", raw))
        if min(limits.max_messages, limits.max_tools) < 1 or limits.max_message_chars < 0:
            raise ValueError(
                "limits: max_messages and max_tools must be >= 1, max_message_chars >= 0"
            )
        return limits

    def check(self, request: ChatRequest | MessagesRequest) -> None:
        """Raise :class:`InvalidRequest` naming the field over its limit (a message's
        characters are those of its texts, in either API)."""
        if len(request.messages) > self.max_messages:
            raise InvalidRequest(f"at most {self.max_messages} messages", param="messages")
        turns: Sequence[Message | MessageParam] = request.messages
        for i, message in enumerate(turns if self.max_message_chars else ()):
            content = message.content
            size = (
                len(content)
                if isinstance(content, str)
                else sum(len(str(p.get("text", ""))) for p in content or ())
            )
            if size > self.max_message_chars:
                raise InvalidRequest(
                    f"messages[{i}].content is over {self.max_message_chars} characters",
                    param=f"messages[{i}].content",
                )
        if request.tools and len(request.tools) > self.max_tools:
            raise InvalidRequest(f"at most {self.max_tools} tools", param="tools")


@dataclass(frozen=True, slots=True)
class Usage:
    """A tenant's counts in the current minute and the verdict."""

    allowed: bool
    requests: int
    tokens: int
    reset_s: float


# KEYS: requests counter, tokens counter. ARGV: tokens to add, rpm, tpm (0 = no limit).
# Counts the request only if it fits, so refused requests do not eat the next one's budget.
_SCRIPT = """
local r = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = tonumber(redis.call('GET', KEYS[2]) or '0')
local add, rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if (rpm > 0 and r + 1 > rpm) or (tpm > 0 and t + add > tpm) then return {0, r, t} end
r = redis.call('INCR', KEYS[1]); redis.call('EXPIRE', KEYS[1], 61)
t = redis.call('INCRBY', KEYS[2], add); redis.call('EXPIRE', KEYS[2], 61)
return {1, r, t}
"""


class RateLimiter:
    """Fixed one-minute windows per tenant.

    Args:
        client: Redis, or ``None`` to count in process only.
        clock: wall-clock seconds (windows are minutes of the wall clock, shared by hosts).
        guard: bounds Redis calls (shared with the spend ledger); a call it refuses or that
            fails falls back to the in-process count.
    """

    def __init__(
        self,
        client: redis.Redis | None,
        clock: Callable[[], float] = time.time,
        guard: Guard | None = None,
    ) -> None:
        self._client = client
        self._script = client.register_script(_SCRIPT) if client is not None else None
        self._clock = clock
        self.guard = guard or Guard("redis")
        self._local: dict[tuple[str, int], list[int]] = {}

    async def take(self, tenant: str, tokens: int, rpm: int | None, tpm: int | None) -> Usage:
        """Count one request of ``tokens`` (estimated) if it fits the tenant's limits."""
        now = self._clock()
        minute = int(now // 60)
        reset = 60 - now % 60
        script = self._script
        if script is not None:
            keys = list(window_keys(tenant, minute))
            try:
                ok, requests, used = await self.guard.call(
                    lambda: script(keys=keys, args=[tokens, rpm or 0, tpm or 0])
                )
                return Usage(bool(ok), int(requests), int(used), reset)
            except Unavailable:  # Redis down: count in process instead
                pass
        counts = self._local.setdefault((tenant, minute), [0, 0])
        for stale in [k for k in self._local if k[1] < minute]:
            del self._local[stale]
        if (rpm and counts[0] + 1 > rpm) or (tpm and counts[1] + tokens > tpm):
            return Usage(False, counts[0], counts[1], reset)
        counts[0] += 1
        counts[1] += tokens
        return Usage(True, counts[0], counts[1], reset)

    async def settle(self, tenant: str, extra_tokens: int) -> None:
        """Add (or, negative, give back) the difference between estimated and actual tokens."""
        if extra_tokens == 0:
            return
        minute = int(self._clock() // 60)
        client = self._client
        if client is not None:
            key = window_keys(tenant, minute)[1]
            try:
                await self.guard.call(lambda: client.incrby(key, extra_tokens))
            except Unavailable:  # best effort: fall back to the local count
                pass
            else:
                return
        counts = self._local.get((tenant, minute))
        if counts is not None:
            counts[1] += extra_tokens


def window_keys(tenant: str, minute: int) -> tuple[str, str]:
    """The Redis keys of a tenant's requests and tokens in one minute (wall clock // 60)."""
    return f"llm-edge:rl:{tenant}:{minute}:r", f"llm-edge:rl:{tenant}:{minute}:t"


def rate_limited(usage: Usage, rpm: int | None, tpm: int | None) -> RateLimited:
    """The 429 for a refused request, with OpenAI's ``x-ratelimit-*`` headers."""
    reset = f"{math.ceil(usage.reset_s)}s"
    extra = {headers.RATELIMIT_RESET_REQUESTS: reset, headers.RATELIMIT_RESET_TOKENS: reset}
    if rpm:
        extra[headers.RATELIMIT_LIMIT_REQUESTS] = str(rpm)
        extra[headers.RATELIMIT_REMAINING_REQUESTS] = str(max(0, rpm - usage.requests))
    if tpm:
        extra[headers.RATELIMIT_LIMIT_TOKENS] = str(tpm)
        extra[headers.RATELIMIT_REMAINING_TOKENS] = str(max(0, tpm - usage.tokens))
    return RateLimited(
        f"rate limit reached (limits: {rpm or '-'} requests and {tpm or '-'} tokens per "
        f"minute); retry in {reset}",
        retry_after=math.ceil(usage.reset_s),
        headers=extra,
    )
