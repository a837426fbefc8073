"""A broker dies with a slow call in flight: the caller notices the silence (no keepalive),
sends the request again, another broker takes it, and the answer of the first call (still
running at its worker) is the answer. The upstream is called once."""

from __future__ import annotations

import asyncio

from edge_client import EdgeClient, RetryPolicy
from tests.support.stack import StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted

#: The upstream thinks this long: the broker dies well before it answers.
THINKING_S = 3.0
#: The caller takes this much silence for lost (its keepalives come every quarter of it).
SILENCE_S = 1.0


async def test_a_broker_lost_mid_call_costs_no_second_upstream_call(
    nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory
) -> None:
    """Two brokers, one worker, an idempotent call (the client's default) to a slow upstream;
    the broker working on it loses its connection: the retry reaches the other broker and is
    answered from the first call, which was the only upstream call."""
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
    stack = await make_stack(nats_url, config, providers=["up"], brokers=2)
    policy = RetryPolicy(attempts=4, attempt_timeout_s=SILENCE_S, backoff_s=0.05)
    async with EdgeClient(stack.nc, retry=policy) as client:
        call = asyncio.ensure_future(
            client.chat({"model": "thinker", "messages": [{"role": "user", "content": "why?"}]})
        )
        async with asyncio.timeout(10):
            while not fake_openai.received:  # noqa: ASYNC110  (the fake has no event for it)
                await asyncio.sleep(0.01)
        working = [b for b in stack.brokers if b.pipeline is not None and b.pipeline.in_flight]
        assert len(working) == 1
        await working[0].nc.close()  # the broker is gone, its call still runs at the worker
        async with asyncio.timeout(THINKING_S + 10):
            reply = await call
    assert reply.choices[0].message.content == "upstream says hi to o3-deep"
    assert len(fake_openai.received) == 1
