"""Upstreams that answer 200 with the wrong thing, over NATS with a real broker and workers.

The primary deployment is a scripted upstream that misbehaves (an HTML page or JSON where an
event stream was asked for, a stream cut short, a body that is not a completion); the
fallback is a healthy fake. The caller must get the fallback's answer, or an error event when
chunks were already sent, and the primary's breaker must count the failures.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import msgspec
import pytest

from edge_client.chat import ChatStreamError, stream_chat
from schemas import ChatCompletionChunk, headers
from tests.support.anthropic_shapes import stream_events
from tests.support.scripted_upstream import Answer, Sent, scripted_upstream
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, openai_completion

HTML = "<html><body><h1>502 Bad Gateway</h1></body></html>"


def chunk_event(content: str) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


#: What a misbehaving upstream answers (the ``*-cut`` streams stop before their terminator).
ANSWERS: dict[str, Callable[[], Answer]] = {
    "html": lambda: Answer(text=HTML, headers={"content-type": "text/html"}),
    "json": lambda: Answer(json=openai_completion("m", "a whole answer, not a stream")),
    "garbage": lambda: Answer(text='{"not": "a completion"', headers={"content-type": "x/y"}),
    "openai-cut": lambda: Answer(pieces=[chunk_event("Hel"), chunk_event("lo")]),
    "anthropic-cut": lambda: Answer(pieces=stream_events(["Hel", "lo"])[:-2]),
    "no-event": lambda: Answer(pieces=[b": keep-alive\n\n"]),
}


@dataclass
class Broken:
    """The misbehaving upstream: what it answers, and what it received."""

    answer: str = "html"
    sent: list[Sent] = field(default_factory=list)

    def __call__(self, sent: Sent) -> Answer:
        self.sent.append(sent)
        return ANSWERS[self.answer]()


@pytest.fixture
async def broken() -> AsyncIterator[tuple[Broken, str]]:
    upstream = Broken()
    async with scripted_upstream(upstream) as base_url:
        yield upstream, base_url


async def running(
    make_stack: StackFactory, nats_url: str, broken_url: str, healthy: FakeOpenAI, *, open_s: float
) -> Stack:
    config = config_from(f"""
        [cache]
        enabled = false

        [resilience]
        max_attempts = 3
        backoff_initial_s = 0      # zero waits: these tests never sleep

        [breaker]
        failure_threshold = 2
        open_s = {open_s}
        jitter = 0

        [providers.broken]
        kind = "openai_compatible"
        base_url = "{broken_url}"

        [providers.broken-claude]
        kind = "anthropic"
        base_url = "{broken_url}"

        [providers.healthy]
        kind = "openai_compatible"
        base_url = "{healthy.base_url}"

        [models.m]
        strategy = "failover"
        deployments = [
          {{ name = "primary", provider = "broken", priority = 0 }},
          {{ name = "fallback", provider = "healthy", priority = 1 }},
        ]

        [models.claude]
        strategy = "failover"
        deployments = [
          {{ name = "claude-primary", provider = "broken-claude", priority = 0 }},
          {{ name = "claude-fallback", provider = "healthy", priority = 1 }},
        ]

        [models.alone]
        deployments = [{{ name = "alone", provider = "broken" }}]

        [models.claude-alone]
        deployments = [{{ name = "claude-alone", provider = "broken-claude" }}]
    """)
    return await make_stack(nats_url, config)


@pytest.fixture
async def stack(
    nats_url: str, broken: tuple[Broken, str], fake_openai: FakeOpenAI, make_stack: StackFactory
) -> Stack:
    return await running(make_stack, nats_url, broken[1], fake_openai, open_s=60)


def chat(model: str, *, stream: bool = False) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "x"}], "stream": stream}


async def streamed(stack: Stack, model: str) -> list[ChatCompletionChunk]:
    return [c async for c in stream_chat(stack.nc, chat(model, stream=True), deadline_s=10)]


def text(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def breaker_state(stack: Stack, deployment: str) -> str:
    reply = await stack.nc.request("llm.admin.breaker", b"{}", timeout=5)
    state: str = msgspec.json.decode(reply.data)["breakers"][deployment]["state"]
    return state


@pytest.mark.parametrize(
    ("model", "primary", "answer"),
    [("m", "primary", "html"), ("m", "primary", "json"), ("claude", "claude-primary", "html")],
)
async def test_a_stream_that_is_not_an_event_stream_fails_over(
    stack: Stack, broken: tuple[Broken, str], model: str, primary: str, answer: str
) -> None:
    """A 200 HTML page or JSON body for a stream fails over; the primary's breaker opens."""
    upstream, _ = broken
    upstream.answer = answer
    for _ in range(3):
        assert text(await streamed(stack, model)) == f"upstream streams to {model}"
    assert len(upstream.sent) == 2  # two failures opened the breaker: the third went around
    assert await breaker_state(stack, primary) == "open"


@pytest.mark.parametrize(
    ("model", "answer"), [("alone", "openai-cut"), ("claude-alone", "anthropic-cut")]
)
async def test_a_stream_cut_short_ends_with_an_error_event(
    stack: Stack, broken: tuple[Broken, str], model: str, answer: str
) -> None:
    """A stream that closes without its terminator after chunks ends with an error event."""
    broken[0].answer = answer
    received: list[ChatCompletionChunk] = []

    async def read() -> None:
        async for chunk in stream_chat(stack.nc, chat(model, stream=True), deadline_s=10):
            received.append(chunk)

    with pytest.raises(ChatStreamError) as caught:
        await read()
    assert text(received) == "Hello"  # the partial answer, then the error
    assert (caught.value.status, caught.value.code) == (502, "invalid_response")


async def test_a_stream_cut_short_before_any_chunk_fails_over(
    stack: Stack, broken: tuple[Broken, str]
) -> None:
    """An event stream that closes with no chunk and no terminator is retried elsewhere."""
    broken[0].answer = "no-event"
    assert text(await streamed(stack, "m")) == "upstream streams to m"


@pytest.mark.parametrize("answer", ["garbage", "html"])
async def test_a_whole_answer_that_is_not_a_completion_fails_over(
    stack: Stack, broken: tuple[Broken, str], answer: str
) -> None:
    """A 200 whose body is not a chat completion is retried on the fallback: 200, breaker open."""
    upstream, _ = broken
    upstream.answer = answer
    replies = [
        await stack.nc.request("llm.chat", msgspec.json.encode(chat("m")), timeout=10)
        for _ in range(3)
    ]
    assert [(r.headers or {}).get(headers.STATUS) for r in replies] == ["200"] * 3
    assert {(r.headers or {}).get(headers.DEPLOYMENT) for r in replies} == {"fallback"}
    assert len(upstream.sent) == 2
    assert await breaker_state(stack, "primary") == "open"


async def test_a_half_open_probe_cut_short_reopens_the_breaker(
    nats_url: str, broken: tuple[Broken, str], fake_openai: FakeOpenAI, make_stack: StackFactory
) -> None:
    """A half-open probe whose stream breaks after chunks opens the breaker again."""
    upstream, broken_url = broken
    upstream.answer = "openai-cut"
    stack = await running(make_stack, nats_url, broken_url, fake_openai, open_s=1)
    for _ in range(2):  # two broken streams open the primary's breaker
        with pytest.raises(ChatStreamError):
            await streamed(stack, "m")
    assert await breaker_state(stack, "primary") == "open"
    async with asyncio.timeout(10):  # its open time elapses: the next call is a probe
        while await breaker_state(stack, "primary") != "half_open":  # noqa: ASYNC110  (the breaker has no event)
            await asyncio.sleep(0.05)
    with pytest.raises(ChatStreamError):
        await streamed(stack, "m")
    assert len(upstream.sent) == 3
    assert await breaker_state(stack, "primary") == "open"
    assert text(await streamed(stack, "m")) == "upstream streams to m"
    assert len(upstream.sent) == 3  # the broken primary got no more calls
