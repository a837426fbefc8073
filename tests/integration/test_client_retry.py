"""The producer client's retry: lost replies and 503s are retried under one request id."""

from __future__ import annotations

import uuid

import pytest
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout

from edge_client import RetryPolicy, request
from edge_runtime.process import close_quietly, connect
from schemas import headers

FAST = RetryPolicy(attempts=3, attempt_timeout_s=0.5, backoff_s=0.0)


async def test_a_lost_reply_and_a_503_are_retried_with_the_same_request_id(nats_url: str) -> None:
    """A responder that drops the first attempt and answers the second 503 is asked a third
    time and its 200 returned; all three attempts carried the caller's X-Request-Id."""
    nc = await connect(nats_url, "retry-test")
    subject = f"test.retry.{uuid.uuid4().hex}"
    seen: list[str] = []

    async def flaky(msg: Msg) -> None:
        seen.append((msg.headers or {})[headers.REQUEST_ID])
        if len(seen) == 2:
            await nc.publish(msg.reply, b"{}", headers={headers.STATUS: "503", "Retry-After": "0"})
        elif len(seen) == 3:
            await nc.publish(msg.reply, b"{}", headers={headers.STATUS: "200"})

    await nc.subscribe(subject, cb=flaky)
    try:
        reply = await request(
            nc, b"{}", subject=subject, request_headers={headers.REQUEST_ID: "req-1"}, retry=FAST
        )
        assert reply.headers is not None
        assert reply.headers[headers.STATUS] == "200"
        assert seen == ["req-1", "req-1", "req-1"]
    finally:
        await close_quietly(nc)


async def test_retries_stop_after_the_policy_s_attempts(nats_url: str) -> None:
    """A responder that never answers costs exactly `attempts` tries, then the timeout is
    raised; a generated request id is shared by every try."""
    nc = await connect(nats_url, "retry-test")
    subject = f"test.retry.{uuid.uuid4().hex}"
    seen: list[str] = []

    async def silent(msg: Msg) -> None:
        seen.append((msg.headers or {})[headers.REQUEST_ID])

    await nc.subscribe(subject, cb=silent)
    try:
        with pytest.raises(NatsTimeout):
            await request(nc, b"{}", subject=subject, retry=FAST)
        assert len(seen) == 3
        assert len(set(seen)) == 1
    finally:
        await close_quietly(nc)
