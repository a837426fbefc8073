"""Streaming end to end: NATS chunks protocol, SSE through the bridge, cache replay, cancel."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import msgspec
import openai
import pytest
from nats.aio.client import Client

from edge_client.chat import ChatStreamError, stream_chat, stream_messages
from tests.support.servers import RedisServer
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted


@pytest.fixture
async def stack(nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory) -> Stack:
    config = config_from(f"""
        [cache]
        l2 = "off"

        [resilience]
        max_attempts = 1  # these tests look at errors as the upstream sent them

        [providers.mock]
        kind = "mock"
        chunk_delay_ms = 1

        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"

        [models.mock]
        deployments = [{{ provider = "mock" }}]

        [models.up]
        deployments = [{{ provider = "up", model = "gpt-4o-mini" }}]
    """)
    return await make_stack(nats_url, config, bridge=True)


def request(content: str, model: str = "mock", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def test_nats_stream_in_order_and_matches_whole_answer(stack: Stack, namespace: str) -> None:
    """Chunks arrive in order over NATS and add up to the same text as a whole request."""
    hdrs = {"X-Cache-Namespace": namespace}
    chunks = [
        c async for c in stream_chat(stack.nc, request("stream me please"), request_headers=hdrs)
    ]
    assert len(chunks) > 3
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    whole = await stack.nc.request(
        "llm.chat",
        b'{"model":"mock","messages":[{"role":"user","content":"stream me please"}]}',
        timeout=10,
        headers={**hdrs, "Cache-Control": "no-cache"},
    )
    assert text in whole.data.decode()


async def test_streamed_answer_is_cached_and_replayed(stack: Stack, namespace: str) -> None:
    """A streamed answer serves a later whole request, and a stream is replayed from cache."""
    hdrs = {"X-Cache-Namespace": namespace}
    first = [
        c async for c in stream_chat(stack.nc, request("cache this stream"), request_headers=hdrs)
    ]
    whole = await stack.nc.request(
        "llm.chat",
        b'{"model":"mock","messages":[{"role":"user","content":"cache this stream"}]}',
        timeout=10,
        headers=hdrs,
    )
    assert whole.headers is not None
    assert whole.headers["X-Cache"] == "HIT-L1"
    text = "".join(c.choices[0].delta.content or "" for c in first if c.choices)
    assert text in whole.data.decode()
    replay = [
        c
        async for c in stream_chat(
            stack.nc,
            request("cache this stream", stream_options={"include_usage": True}),
            request_headers=hdrs,
        )
    ]
    assert "".join(c.choices[0].delta.content or "" for c in replay if c.choices) == text
    assert replay[-1].usage is not None  # include_usage honoured on replay


async def test_openai_sdk_streams_through_bridge(stack: Stack, namespace: str) -> None:
    """The official SDK's stream=True works, include_usage gives a final usage chunk."""
    sdk = openai.AsyncOpenAI(
        base_url=stack.base_url,
        api_key="x",
        max_retries=0,
        default_headers={"X-Cache-Namespace": namespace},
    )
    stream = await sdk.chat.completions.create(
        model="up",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == "upstream streams to gpt-4o-mini"
    assert usage is not None
    assert usage.total_tokens == 13


async def test_stream_errors_before_and_after_first_chunk(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """Before the first chunk: an HTTP error status. After it: an SSE error event."""
    assert stack.http is not None
    sdk = openai.AsyncOpenAI(
        base_url=stack.base_url,
        api_key="x",
        max_retries=0,
        default_headers={"X-Cache-Namespace": namespace},
    )
    fake_openai.script.append(
        Scripted(status=429, body={"error": {"message": "slow down"}}, headers={"retry-after": "1"})
    )
    with pytest.raises(openai.RateLimitError):
        await sdk.chat.completions.create(
            model="up", messages=[{"role": "user", "content": "a"}], stream=True
        )
    fake_openai.script.append(Scripted(fail_after=2))
    stream = await sdk.chat.completions.create(
        model="up", messages=[{"role": "user", "content": "b"}], stream=True
    )
    got: list[object] = []

    async def consume() -> None:
        async for chunk in stream:
            got.append(chunk)

    with pytest.raises(openai.APIError, match="broke mid-stream"):
        await consume()
    assert got  # some chunks came before the error
    fake_openai.script.append(Scripted(fail_after=1))

    async def consume_nats() -> None:
        async for _ in stream_chat(
            stack.nc, request("c", model="up"), request_headers={"X-Cache-Namespace": namespace}
        ):
            pass

    with pytest.raises(ChatStreamError) as caught:
        await consume_nats()
    assert caught.value.status == 502


async def test_http_disconnect_cancels_upstream(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """A client that drops a stream makes the worker close its upstream connection quickly."""
    fake_openai.script.append(Scripted(chunk_delay_s=0.3))
    body = request("long", model="up", stream=True)
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream(
            "POST",
            f"{stack.base_url}/chat/completions",
            json=body,
            headers={"X-Cache-Namespace": namespace},
        ) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                break  # got the first chunk: leave
    left = time.monotonic()
    await asyncio.wait_for(fake_openai.disconnected.wait(), 5)
    assert time.monotonic() - left < 1.0


async def test_consumer_leaving_a_nats_stream_cancels_upstream(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """Leaving stream_chat early publishes a cancel; the upstream connection closes."""
    fake_openai.script.append(Scripted(chunk_delay_s=0.3))
    stream = stream_chat(
        stack.nc, request("long", model="up"), request_headers={"X-Cache-Namespace": namespace}
    )
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    left = time.monotonic()
    await asyncio.wait_for(fake_openai.disconnected.wait(), 5)
    assert time.monotonic() - left < 1.0


async def streamed(nc: Client, content: str, namespace: str) -> tuple[list[dict[str, Any]], str]:
    """Every chunk of a stream over NATS (as JSON values) and the stream's X-Cache."""
    usage = {"include_usage": True}
    body = msgspec.json.encode(request(content, stream=True, stream_options=usage))
    chunks: list[dict[str, Any]] = []
    cache = ""
    async for msg in stream_messages(nc, body, request_headers={"X-Cache-Namespace": namespace}):
        hdrs = msg.headers or {}
        if hdrs.get("Llm-Stream") == "chunk":
            chunks.append(msgspec.json.decode(msg.data))
            cache = hdrs.get("X-Cache", "")
    return chunks, cache


async def test_cached_stream_replays_the_original_chunks(
    nats_url: str, redis_server: RedisServer, namespace: str, make_stack: StackFactory
) -> None:
    """A stream served from L1 or L2 is the original stream chunk for chunk (the mock streams
    word by word), not its text in one chunk; a whole request still gets the whole answer."""
    config = config_from("""
        [cache]
        l2 = "redis"
        [batch]
        enabled = false
        [providers.mock]
        kind = "mock"
        [models.mock]
        deployments = [{ provider = "mock" }]
    """)
    content = "replay me word by word please"
    first = await make_stack(nats_url, config, redis_url=redis_server.url)
    original, cache = await streamed(first.nc, content, namespace)
    assert cache == "MISS"
    assert len(original) > 5
    from_l1, cache = await streamed(first.nc, content, namespace)
    assert cache == "HIT-L1"
    assert from_l1 == original
    whole = await first.nc.request(
        "llm.chat",
        msgspec.json.encode(request(content)),
        timeout=10,
        headers={"X-Cache-Namespace": namespace},
    )
    assert (whole.headers or {})["X-Cache"] == "HIT-L1"
    pieces = [c["choices"][0]["delta"].get("content") for c in original if c["choices"]]
    text = "".join(piece or "" for piece in pieces)
    assert msgspec.json.decode(whole.data)["choices"][0]["message"]["content"] == text
    await first.stop()
    second = await make_stack(nats_url, config, redis_url=redis_server.url)  # an empty L1
    from_l2, cache = await streamed(second.nc, content, namespace)
    assert cache == "HIT-L2"
    assert from_l2 == original


async def test_only_the_requester_can_cancel_its_request(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """Another producer that knows a request's id cannot cancel it (with its own inbox as the
    reply, or none): the stream runs to its end. The requester, naming its own inbox, can."""
    hdrs = {"X-Cache-Namespace": namespace, "X-Request-Id": f"owned-{namespace}"}
    fake_openai.script.append(Scripted(chunk_delay_s=0.2))
    body = msgspec.json.encode(request("mine", model="up", stream=True))
    other = stack.nc.new_inbox()
    kinds: list[str] = []
    async for msg in stream_messages(stack.nc, body, request_headers=hdrs, deadline_s=10):
        kinds.append((msg.headers or {}).get("Llm-Stream", ""))
        if len(kinds) == 1:  # the call is upstream now: someone else tries to stop it
            request_id = hdrs["X-Request-Id"].encode()
            await stack.nc.publish("llm.cancel", request_id)
            await stack.nc.publish("llm.cancel", request_id, reply=other)
    assert kinds[-1] == "end"
    assert kinds.count("chunk") > 2
    assert not fake_openai.disconnected.is_set()

    fake_openai.script.append(Scripted(chunk_delay_s=0.3))
    inbox = stack.nc.new_inbox()
    replies = await stack.nc.subscribe(inbox)
    owned = {**hdrs, "X-Request-Id": f"owned-again-{namespace}"}
    body = msgspec.json.encode(request("mine again", model="up", stream=True))
    await stack.nc.publish("llm.chat", body, reply=inbox, headers=owned)
    assert (await replies.next_msg(timeout=10)).headers["Llm-Stream"] == "chunk"  # type: ignore[index]
    await stack.nc.publish("llm.cancel", owned["X-Request-Id"].encode(), reply=inbox)
    await asyncio.wait_for(fake_openai.disconnected.wait(), 5)  # the owner's cancel is honoured
    await replies.unsubscribe()


async def test_a_stream_that_ends_well_cancels_nothing(stack: Stack, namespace: str) -> None:
    """Over HTTP and over NATS, a stream read to its end publishes no ``llm.cancel``: the
    bridge and the broker know the last message came (a cancel per stream would reach every
    worker for nothing)."""
    cancels: list[str] = []

    async def seen(msg: Any) -> None:
        cancels.append(msg.data.decode())

    await stack.nc.subscribe("llm.cancel", cb=seen)
    await stack.nc.flush()
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{stack.base_url}/chat/completions",
            json=request("to the end", stream=True),
            headers={"X-Cache-Namespace": namespace},
        )
    assert response.status_code == 200
    assert response.text.rstrip().endswith("data: [DONE]")
    chunks, _ = await streamed(stack.nc, "to the end over nats", namespace)
    assert chunks
    await asyncio.sleep(0.3)  # a cancel would be on its way by now
    await stack.nc.flush()
    assert cancels == []
