"""A repeated request id is answered from its first attempt: the upstream is called once."""

from __future__ import annotations

import asyncio
import json

import pytest

from edge_client import EdgeClient, RetryPolicy
from schemas import headers, subjects
from tests.support.stack import Stack, StackFactory, one_upstream_config
from tests.support.upstream import FakeOpenAI, Scripted


@pytest.fixture
async def stack(nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory) -> Stack:
    return await make_stack(nats_url, one_upstream_config(fake_openai.base_url))


def body(text: str) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()


async def test_two_requests_with_one_id_make_one_upstream_call(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """Two concurrent requests with the same id (caching off) make one upstream call and get
    the same answer; a third, after both, is answered from memory, marked Llm-Replayed."""
    fake_openai.default = Scripted(delay_s=0.3)
    hdrs = {headers.REQUEST_ID: "repeat-1"}
    first, second = await asyncio.gather(
        *(stack.nc.request(subjects.CHAT, body("hi"), timeout=10, headers=hdrs) for _ in "ab")
    )
    third = await stack.nc.request(subjects.CHAT, body("hi"), timeout=10, headers=hdrs)
    assert len(fake_openai.received) == 1
    assert first.data == second.data == third.data
    assert (third.headers or {}).get(headers.REPLAYED) == "1"


async def test_the_same_id_with_another_body_runs(stack: Stack, fake_openai: FakeOpenAI) -> None:
    """A request id reused for a different request is not mistaken for a retry."""
    hdrs = {headers.REQUEST_ID: "repeat-2"}
    for text in ("one", "two"):
        reply = await stack.nc.request(subjects.CHAT, body(text), timeout=10, headers=hdrs)
        assert (reply.headers or {})[headers.STATUS] == "200"
    assert len(fake_openai.received) == 2


async def test_a_client_retry_after_a_lost_reply_joins_the_first_attempt(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """The client's first try gives up waiting (its reply counts as lost) and retries under
    the same id: the retry joins the first try, so the upstream answers once."""
    fake_openai.default = Scripted(delay_s=0.5)
    client = EdgeClient(stack.nc, retry=RetryPolicy(attempt_timeout_s=0.2, backoff_s=0))
    reply = await client.chat({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert reply.choices[0].message.content == "upstream says hi to m"
    assert len(fake_openai.received) == 1


async def test_no_store_answers_are_not_kept_for_a_later_attempt(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """Cache-Control: no-store asks that no answer be kept: two concurrent attempts still
    share one call, but an attempt after they finished runs again instead of a replay."""
    fake_openai.default = Scripted(delay_s=0.3)
    hdrs = {headers.REQUEST_ID: "repeat-no-store", headers.CACHE_CONTROL: "no-store"}
    first, second = await asyncio.gather(
        *(stack.nc.request(subjects.CHAT, body("private"), timeout=10, headers=hdrs) for _ in "ab")
    )
    assert first.data == second.data
    assert len(fake_openai.received) == 1
    later = await stack.nc.request(subjects.CHAT, body("private"), timeout=10, headers=hdrs)
    assert (later.headers or {}).get(headers.REPLAYED) is None
    assert len(fake_openai.received) == 2
