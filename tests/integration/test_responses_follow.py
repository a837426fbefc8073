"""Following a streamed background response (``background`` and ``stream``) from the Python
client over NATS: resumed after a sequence number, and ended by a broker that stops (its
caller told to follow again) instead of left waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest

from broker.responses.events import ResponseEvents
from broker.responses.follow import Followers
from edge_client import EdgeClient, MessageEvent, Stream, UnavailableError
from schemas import headers
from tests.support.servers import EmbeddedNats
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted, running_fake

#: The longest a step of a followed response may take here.
STEP_S = 10.0


@pytest.fixture
async def openai_upstream() -> AsyncIterator[FakeOpenAI]:
    async with running_fake() as fake:
        yield fake


@pytest.fixture
async def stack(
    own_nats: EmbeddedNats, openai_upstream: FakeOpenAI, make_stack: StackFactory
) -> Stack:
    config = config_from(f"""
        [cache]
        enabled = false
        [batch]
        enabled = false
        [providers.oai]
        kind = "openai"
        base_url = "{openai_upstream.base_url}"
        [models.gpt]
        deployments = [{{ provider = "oai", model = "gpt-4.1" }}]
    """)
    return await make_stack(own_nats.url, config)


@pytest.fixture
async def client(own_nats: EmbeddedNats) -> AsyncIterator[EdgeClient]:
    """A client on a connection of its own (the stack's may close before it reads)."""
    nc = await nats.connect(own_nats.url)
    try:
        yield EdgeClient(nc)
    finally:
        await nc.close()


async def _take(stream: Stream[MessageEvent], count: int) -> list[MessageEvent]:
    return [await asyncio.wait_for(anext(stream), STEP_S) for _ in range(count)]


async def _held_stream(
    client: EdgeClient, upstream: FakeOpenAI, release: asyncio.Event
) -> tuple[Stream[MessageEvent], list[MessageEvent]]:
    """A streamed background response whose upstream holds after its first events; the
    live stream and its first four events (sequence numbers 0 to 3)."""
    upstream.script.append(Scripted(release=release, hold_after=4))
    live = client.stream_responses({"model": "gpt", "input": "stream it", "background": True})
    first = await _take(live, 4)
    assert [e.data["sequence_number"] for e in first] == [0, 1, 2, 3]
    return live, first


async def test_the_client_resumes_a_background_stream(
    stack: Stack, client: EdgeClient, openai_upstream: FakeOpenAI
) -> None:
    """``stream_response(id, starting_after=N)`` replays the events after N and follows the
    response live to its last event, as the live stream got them."""
    release = asyncio.Event()
    live, first = await _held_stream(client, openai_upstream, release)
    response_id = first[0].data["response"]["id"]
    resumed = client.stream_response(response_id, starting_after=1)
    assert await _take(resumed, 2) == first[2:]
    release.set()
    rest = await asyncio.wait_for(_all(live), STEP_S)
    followed = await asyncio.wait_for(_all(resumed), STEP_S)
    assert followed == rest
    assert rest[-1].event == "response.completed"
    assert rest[-1].data["response"]["id"] == response_id
    tail = client.stream_response(response_id, starting_after=rest[-1].data["sequence_number"])
    assert await asyncio.wait_for(_all(tail), STEP_S) == []


async def test_a_stopping_broker_ends_its_followers(
    stack: Stack, client: EdgeClient, openai_upstream: FakeOpenAI
) -> None:
    """A broker that stops while callers follow a response ends their follows at once (it
    does not wait for the response's next event, up to 10 minutes away) and tells each
    caller to follow again (503 ``broker_stopping``)."""
    release = asyncio.Event()
    try:
        live, first = await _held_stream(client, openai_upstream, release)
        resumed = client.stream_response(first[0].data["response"]["id"], starting_after=0)
        await _take(resumed, 3)
        followers = stack.brokers[0].responses
        assert followers is not None
        assert followers.followers is not None
        tasks = followers.followers.tasks
        assert len(tasks) == 2  # the creating call's and the resumed one's
        stopping = asyncio.create_task(stack.stop())
        _, pending = await asyncio.wait(tasks, timeout=STEP_S)
        assert not pending
        for stream in (live, resumed):
            with pytest.raises(UnavailableError) as stopped:
                await asyncio.wait_for(anext(stream), STEP_S)
            assert stopped.value.code == "broker_stopping"
        await asyncio.wait_for(stopping, STEP_S * 3)
    finally:
        release.set()


async def _all(stream: Stream[MessageEvent]) -> list[MessageEvent]:
    return [event async for event in stream]


async def test_a_follow_jetstream_fails_is_answered_with_an_error(own_nats: EmbeddedNats) -> None:
    """A follow whose events cannot be read (no events stream) ends the caller's stream with
    a 503 at once instead of leaving it waiting for a reply that never comes."""
    nc = await nats.connect(own_nats.url)
    try:
        followers = Followers(nc, ResponseEvents(nc))  # its stream never opened
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        task = followers.spawn(inbox, {headers.REQUEST_ID: "req-1"}, "resp_missing", -1)
        answer = await sub.next_msg(timeout=STEP_S)
        hdrs = answer.headers or {}
        assert hdrs[headers.STATUS] == "503"
        assert hdrs[headers.STREAM] == "error"
        assert hdrs[headers.REQUEST_ID] == "req-1"
        assert task is not None
        await asyncio.wait_for(task, STEP_S)  # ended, without an exception
    finally:
        await nc.close()
