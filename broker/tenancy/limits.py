"""Input limits (every request) and per-tenant rate limits (requests and tokens per minute).

Rate limits are counted in Redis with one atomic script per request, so every broker process
shares one limit. A request is counted in one or more *scopes* at once: its tenant, and the
key it came with when that key has limits of its own (``<tenant>/<grant id>``); the script
admits it only if it fits every scope, and then counts it in all of them, so a request a
key's limit refuses never eats its tenant's budget (and the other way round).

When Redis is unreachable each broker falls back to counting in process (the limit then
applies per broker: a documented, temporary over-admission rather than an outage). Redis
calls go through a :class:`~broker.guard.Guard`: bounded, and skipped for a while after a
failure.
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
from schemas.responses import ResponsesRequest

if TYPE_CHECKING:  # the client is injected; importing redis costs ~80 ms at start
    import redis.asyncio as redis

__all__ = ["InputLimits", "RateLimiter", "Scope", "Usage", "window_keys"]


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

    def check(self, request: ChatRequest | MessagesRequest | ResponsesRequest) -> None:
        """Raise :class:`InvalidRequest` naming the field over its limit (a message's
        characters are those of its texts, in either API; a Responses request's input items
        count as its messages)."""
        if isinstance(request, ResponsesRequest):
            self._check_responses(request)
            return
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

    def _check_responses(self, request: ResponsesRequest) -> None:
        items = request.input if isinstance(request.input, list) else [request.input]
        if len(items) > self.max_messages:
            raise InvalidRequest(f"at most {self.max_messages} input items", param="input")
        for i, item in enumerate(items if self.max_message_chars else ()):
            content = item.get("content") if isinstance(item, dict) else item
            size = (
                len(content)
                if isinstance(content, str)
                else sum(len(str(p.get("text", ""))) for p in content or () if isinstance(p, dict))
            )
            if size > self.max_message_chars:
                where = f"input[{i}].content" if isinstance(request.input, list) else "input"
                raise InvalidRequest(
                    f"{where} is over {self.max_message_chars} characters", param=where
                )
        if request.tools and len(request.tools) > self.max_tools:
            raise InvalidRequest(f"at most {self.max_tools} tools", param="tools")


@dataclass(frozen=True, slots=True)
class Scope:
    """One set of counters a request is counted in: a tenant, or a key under it."""

    name: str
    rpm: int | None
    tpm: int | None


@dataclass(frozen=True, slots=True)
class Usage:
    """The verdict, and the counts in the current minute of the scope that decided it (the
    refusing one; the last one for an admitted request)."""

    allowed: bool
    requests: int
    tokens: int
    reset_s: float
    scope: int = 0  # index of that scope in the request's list


# KEYS: requests and tokens counters of each scope. ARGV: tokens to add, then rpm and tpm of
# each scope (0 = no limit). Counts the request only if it fits every scope, so a refused
# request eats nobody's budget. Returns {allowed, scope index (0-based), requests, tokens}.
_SCRIPT = """
local add, n = tonumber(ARGV[1]), #KEYS / 2
for i = 1, n do
  local r = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local t = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  local rpm, tpm = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if (rpm > 0 and r + 1 > rpm) or (tpm > 0 and t + add > tpm) then return {0, i - 1, r, t} end
end
local r, t = 0, 0
for i = 1, n do
  r = redis.call('INCR', KEYS[2 * i - 1]); redis.call('EXPIRE', KEYS[2 * i - 1], 61)
  t = redis.call('INCRBY', KEYS[2 * i], add); redis.call('EXPIRE', KEYS[2 * i], 61)
end
return {1, n - 1, r, t}
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

    async def take(self, scopes: Sequence[Scope], tokens: int) -> Usage:
        """Count one request of ``tokens`` (estimated) if it fits every scope's limits."""
        now = self._clock()
        minute = int(now // 60)
        reset = 60 - now % 60
        script = self._script
        if script is not None:
            keys = [k for scope in scopes for k in window_keys(scope.name, minute)]
            args = [tokens, *(n or 0 for scope in scopes for n in (scope.rpm, scope.tpm))]
            try:
                ok, index, requests, used = await self.guard.call(
                    lambda: script(keys=keys, args=args)
                )
                return Usage(bool(ok), int(requests), int(used), reset, int(index))
            except Unavailable:  # Redis down: count in process instead
                pass
        return self._take_locally(scopes, tokens, minute, reset)

    def _take_locally(
        self, scopes: Sequence[Scope], tokens: int, minute: int, reset: float
    ) -> Usage:
        for stale in [k for k in self._local if k[1] < minute]:
            del self._local[stale]
        counts = [self._local.setdefault((scope.name, minute), [0, 0]) for scope in scopes]
        for i, (scope, (r, t)) in enumerate(zip(scopes, counts, strict=True)):
            if (scope.rpm and r + 1 > scope.rpm) or (scope.tpm and t + tokens > scope.tpm):
                return Usage(False, r, t, reset, i)
        for count in counts:
            count[0] += 1
            count[1] += tokens
        return Usage(True, counts[-1][0], counts[-1][1], reset, len(scopes) - 1)

    async def settle(self, scopes: Sequence[str], extra_tokens: int) -> None:
        """Add (or, negative, give back) the difference between estimated and actual tokens
        in each scope the request was counted in."""
        if extra_tokens == 0 or not scopes:
            return
        minute = int(self._clock() // 60)
        client = self._client
        if client is not None:
            pipe = client.pipeline(transaction=False)
            for name in scopes:
                pipe.incrby(window_keys(name, minute)[1], extra_tokens)
            try:
                await self.guard.call(pipe.execute)
            except Unavailable:  # best effort: fall back to the local count
                pass
            else:
                return
        for name in scopes:
            counts = self._local.get((name, minute))
            if counts is not None:
                counts[1] += extra_tokens


def window_keys(tenant: str, minute: int) -> tuple[str, str]:
    """The Redis keys of a tenant's requests and tokens in one minute (wall clock // 60)."""
    return f"llm-edge:rl:{tenant}:{minute}:r", f"llm-edge:rl:{tenant}:{minute}:t"


def rate_limited(usage: Usage, scope: Scope, whose: str = "") -> RateLimited:
    """The 429 for a refused request, with OpenAI's ``x-ratelimit-*`` headers of the scope
    that refused it (``whose``: ``"this key's "`` when it is a key's own)."""
    rpm, tpm = scope.rpm, scope.tpm
    reset = f"{math.ceil(usage.reset_s)}s"
    extra = {headers.RATELIMIT_RESET_REQUESTS: reset, headers.RATELIMIT_RESET_TOKENS: reset}
    if rpm:
        extra[headers.RATELIMIT_LIMIT_REQUESTS] = str(rpm)
        extra[headers.RATELIMIT_REMAINING_REQUESTS] = str(max(0, rpm - usage.requests))
    if tpm:
        extra[headers.RATELIMIT_LIMIT_TOKENS] = str(tpm)
        extra[headers.RATELIMIT_REMAINING_TOKENS] = str(max(0, tpm - usage.tokens))
    return RateLimited(
        f"rate limit reached ({whose}limits: {rpm or '-'} requests and {tpm or '-'} tokens "
        f"per minute); retry in {reset}",
        retry_after=math.ceil(usage.reset_s),
        headers=extra,
    )
