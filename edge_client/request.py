"""Request/reply with retries, for producers that must not lose a request to a server loss.

    reply = await request(nc, msgspec.json.encode(body))
    reply.headers["Llm-Status"]  # "200", or the last failure's status

When a NATS server dies, a request in flight through it can lose its reply (it was sent
while this client was reconnecting to another server), and a request published during
the failover may find no broker (NATS no-responders) or a broker whose store is electing
a leader (503). Those are retried here with backoff. Every attempt carries the same
``X-Request-Id``, so logs, traces and a cancel (``llm.cancel``) name one request, however
many attempts it took; the id is returned in the reply's headers as the broker sent it.

A retried whole chat request is marked ``Llm-Idempotent: 1``: its attempts are answered from
one upstream call, whichever broker each reaches (the first attempt's answer, or its call
still running). A producer that cannot accept a second upstream call even when the claim
store is unavailable must not retry (``RetryPolicy(attempts=1)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.nuid import NUID

from schemas import headers, subjects

__all__ = ["DEFAULT_RETRY", "Attempts", "RetryPolicy", "request"]

_nuid = NUID()
#: Statuses that say "this request was not served; the same request later may be".
RETRY_STATUSES = frozenset({"503"})
#: The longest ``Retry-After`` waited for between attempts.
MAX_RETRY_AFTER_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How a request is retried.

    Attributes:
        attempts: tries in all (1: no retry).
        attempt_timeout_s: how long one attempt waits for its reply.
        backoff_s: the first wait between attempts; doubled each time, full jitter.
        max_backoff_s: the longest wait (a reply's ``Retry-After`` may ask for more, up to
            :data:`MAX_RETRY_AFTER_S`).
    """

    attempts: int = 4
    attempt_timeout_s: float = 30.0
    backoff_s: float = 0.25
    max_backoff_s: float = 2.0

    def wait_s(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        wait = random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
        if retry_after is not None:
            with contextlib.suppress(ValueError):
                wait = max(wait, min(float(retry_after), MAX_RETRY_AFTER_S))
        return wait


DEFAULT_RETRY = RetryPolicy()


class Attempts:
    """The one account of a call's attempts, for whole calls and streams alike: how long each
    may wait, and whether (after the policy's wait) another may follow.

    With ``budget_s`` the call has a deadline: each attempt is sent with what is left of it
    in ``Llm-Timeout-Ms``, and no attempt starts after it. Without, each attempt waits
    ``attempt_timeout_s`` and the policy's count alone bounds them.
    """

    def __init__(
        self, policy: RetryPolicy, hdrs: dict[str, str], *, budget_s: float | None = None
    ) -> None:
        self._policy = policy
        self._hdrs = hdrs
        self._loop = asyncio.get_running_loop()
        self._deadline = None if budget_s is None else self._loop.time() + budget_s
        self.request_id = hdrs[headers.REQUEST_ID]
        self.count = 0

    def next(self) -> float:
        """Start an attempt: the seconds it may wait (with a deadline: what is left of it)."""
        self.count += 1
        if self._deadline is None:
            return self._policy.attempt_timeout_s
        remaining = self._deadline - self._loop.time()
        self._hdrs[headers.TIMEOUT_MS] = str(max(int(remaining * 1000), 1))
        return remaining

    async def back_off(self, retry_after: str | None) -> bool:
        """Wait before the next attempt and return ``True``; ``False`` (at once) when none may
        follow: the policy's attempts are spent, or the wait would reach the deadline."""
        wait = self._policy.wait_s(self.count, retry_after)
        spent = self.count >= self._policy.attempts
        if spent or (self._deadline is not None and self._loop.time() + wait >= self._deadline):
            return False
        await asyncio.sleep(wait)
        return True


async def request(
    nc: Client,
    body: bytes,
    *,
    subject: str = subjects.CHAT,
    request_headers: Mapping[str, str] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> Msg:
    """Send a request and return its reply, retrying what a server loss causes.

    Retried: no reply within ``retry.attempt_timeout_s``, no responder, and a 503 reply
    (after its ``Retry-After``). Every attempt carries the same ``X-Request-Id`` (the one in
    ``request_headers``, else a new one).

    Returns:
        The reply: a success, a failure not worth retrying, or the last attempt's 503.

    Raises:
        TimeoutError: the last attempt got no reply in time.
        nats.errors.NoRespondersError: nobody served ``subject`` on the last attempt.
    """
    hdrs = dict(request_headers or {})
    hdrs.setdefault(headers.REQUEST_ID, _nuid.next().decode())
    if retry.attempts > 1:
        hdrs.setdefault(headers.IDEMPOTENT, "1")
    attempts = Attempts(retry, hdrs)
    while True:
        timeout = attempts.next()
        try:
            reply = await nc.request(subject, body, timeout=timeout, headers=hdrs)
        except (NatsTimeout, NoRespondersError):
            if not await attempts.back_off(None):
                raise
            continue
        reply_headers = reply.headers or {}
        if reply_headers.get(headers.STATUS) not in RETRY_STATUSES:
            return reply
        if not await attempts.back_off(reply_headers.get(headers.RETRY_AFTER)):
            return reply
