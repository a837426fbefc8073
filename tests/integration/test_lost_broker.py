"""A broker dies with a slow call in flight: the caller notices the silence (no keepalive),
sends the request again, another broker takes it, and the answer of the first call (still
running at its worker) is the answer. The upstream is called once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from edge_client import EdgeClient, RetryPolicy
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted

#: The upstream thinks this long: the broker dies well before it answers.
THINKING_S = 3.0
#: The caller takes this much silence for lost (its keepalives come every quarter of it).
SILENCE_S = 1.0


T = TypeVar("T")
POLICY = RetryPolicy(attempts=4, attempt_timeout_s=SILENCE_S, backoff_s=0.05)
REQUEST = {"model": "thinker", "messages": [{"role": "user", "content": "why?"}]}


@pytest.fixture
async def stack(nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory) -> Stack:
    """Two brokers, one worker, a model whose upstream thinks for THINKING_S."""
    fake_openai.default = Scripted(delay_s=THINKING_S)
    config = config_from(f"""
        [cache]
        enabled = false
        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"
        [models.thinker]
        deployments = [{{ provider = "up", model = "o3-deep" }}]
    """)
    return await make_stack(nats_url, config, providers=["up"], brokers=2)


async def _lose_the_broker_of(call: Awaitable[T], stack: Stack, fake: FakeOpenAI) -> T:
    """Run ``call``; once its upstream call began, close the connection of the broker working
    on it (the call still runs at its worker); its result."""
    running = asyncio.ensure_future(call)
    async with asyncio.timeout(10):
        while not fake.received:  # noqa: ASYNC110  (the fake has no event for it)
            await asyncio.sleep(0.01)
    working = [b for b in stack.brokers if b.pipeline is not None and b.pipeline.in_flight]
    assert len(working) == 1
    await working[0].nc.close()
    async with asyncio.timeout(THINKING_S + 10):
        return await running


async def test_a_broker_lost_mid_call_costs_no_second_upstream_call(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """An idempotent call (the client's default) to a slow upstream; the broker working on it
    loses its connection: the retry reaches the other broker and is answered from the first
    call, which was the only upstream call."""
    async with EdgeClient(stack.nc, retry=POLICY) as client:
        reply = await _lose_the_broker_of(client.chat(REQUEST), stack, fake_openai)
    assert reply.choices[0].message.content == "upstream says hi to o3-deep"
    assert len(fake_openai.received) == 1


async def test_a_stream_whose_broker_is_lost_before_its_first_token_is_joined_by_the_retry(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """The same for a stream (a reasoning model thinking before its first token): the retry
    joins the first attempt's stream at its worker and gets every chunk, in order, from the
    one upstream call."""

    async def read() -> str:
        async with client.stream(REQUEST) as chunks:
            return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])

    async with EdgeClient(stack.nc, retry=POLICY) as client:
        text = await _lose_the_broker_of(read(), stack, fake_openai)
    assert text == "upstream streams to o3-deep"
    assert len(fake_openai.received) == 1
