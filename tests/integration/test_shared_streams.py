"""Attempts of one idempotent stream share its upstream call (``workers/fanout.py``): an
attempt that arrives while the first one streams gets every chunk so far and the rest; one
that arrives after it ended gets its stored messages; a caller that leaves does not stop the
stream for the others."""

from __future__ import annotations

import asyncio

import pytest

from edge_client import EdgeClient, RetryPolicy
from schemas import headers
from tests.support.stack import StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted

ANSWER = "upstream streams to slow-words"
REQUEST = {"model": "words", "messages": [{"role": "user", "content": "tell me slowly"}]}


@pytest.fixture
def config_url(fake_openai: FakeOpenAI) -> str:
    return f"""
        [cache]
        enabled = false
        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"
        [models.words]
        deployments = [{{ provider = "up", model = "slow-words" }}]
    """


async def _text(client: EdgeClient, request_id: str, *, after: asyncio.Event | None = None) -> str:
    """The stream's text; ``after``: set once its first piece of text arrived."""
    text = []
    async with client.stream(REQUEST, request_id=request_id) as chunks:
        async for chunk in chunks:
            for choice in chunk.choices:
                text.append(choice.delta.content or "")
                if after is not None and text[-1]:
                    after.set()
    return "".join(text)


async def _begun(client: EdgeClient, request_id: str) -> asyncio.Future[str]:
    """A stream running in the background, once its first text arrived."""
    begun = asyncio.Event()
    running = asyncio.ensure_future(_text(client, request_id, after=begun))
    await begun.wait()
    return running


async def test_an_attempt_that_arrives_mid_stream_gets_every_chunk_from_the_one_call(
    nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory, config_url: str
) -> None:
    fake_openai.default = Scripted(chunk_delay_s=0.3)
    stack = await make_stack(nats_url, config_from(config_url), providers=["up"], brokers=2)
    async with EdgeClient(stack.nc, retry=RetryPolicy(attempts=2)) as client:
        first = await _begun(client, "shared-1")  # chunks are out: the second gets them too
        second = await _text(client, "shared-1")
        assert await first == ANSWER
    assert second == ANSWER
    assert len(fake_openai.received) == 1


async def test_an_attempt_after_the_stream_ended_gets_its_stored_messages(
    nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory, config_url: str
) -> None:
    stack = await make_stack(nats_url, config_from(config_url), providers=["up"])
    async with EdgeClient(stack.nc, retry=RetryPolicy(attempts=2)) as client:
        assert await _text(client, "shared-2") == ANSWER
        replayed = await _text(client, "shared-2")
        other = await _text(client, "shared-3")  # another request id is another call
    assert replayed == ANSWER
    assert other == ANSWER
    assert len(fake_openai.received) == 2


async def test_a_caller_that_leaves_does_not_stop_the_stream_it_shares(
    nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory, config_url: str
) -> None:
    fake_openai.default = Scripted(chunk_delay_s=0.3)
    stack = await make_stack(nats_url, config_from(config_url), providers=["up"], brokers=2)
    async with EdgeClient(stack.nc, retry=RetryPolicy(attempts=2)) as client:
        first = await _begun(client, "shared-4")
        second = await _begun(client, "shared-4")  # the worker sends to both callers now
        first.cancel()  # the first caller leaves: its cancel reaches the worker
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await second == ANSWER
    assert len(fake_openai.received) == 1
    assert not fake_openai.disconnected.is_set()  # the upstream call was never cut


async def test_a_stream_without_the_idempotent_mark_is_not_shared(
    nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory, config_url: str
) -> None:
    """A caller that does not retry (one attempt) sends no ``Llm-Idempotent``: the same
    request id twice is two calls, as before."""
    stack = await make_stack(nats_url, config_from(config_url), providers=["up"])
    async with EdgeClient(stack.nc, retry=RetryPolicy(attempts=1)) as client:
        assert await _text(client, "shared-5") == ANSWER
        assert await _text(client, "shared-5") == ANSWER
    assert len(fake_openai.received) == 2
    assert headers.IDEMPOTENT not in fake_openai.received[0].headers
