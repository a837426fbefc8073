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

__all__ = ["DEFAULT_RETRY", "RetryPolicy", "request"]

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
    for attempt in range(1, retry.attempts + 1):
        last = attempt == retry.attempts
        try:
            reply = await nc.request(subject, body, timeout=retry.attempt_timeout_s, headers=hdrs)
        except (NatsTimeout, NoRespondersError):
            if last:
                raise
            await asyncio.sleep(retry.wait_s(attempt, None))
            continue
        reply_headers = reply.headers or {}
        if last or reply_headers.get(headers.STATUS) not in RETRY_STATUSES:
            return reply
        await asyncio.sleep(retry.wait_s(attempt, reply_headers.get(headers.RETRY_AFTER)))
    raise AssertionError("unreachable: the last attempt returns or raises")
