"""The typed producer client against a real stack: chat, streams, models, errors, batches."""

from __future__ import annotations

import uuid

import pytest

from edge_client import (
    BadRequestError,
    EdgeClient,
    NotFoundError,
    RetryPolicy,
    UnavailableError,
)
from schemas.batch import BatchObject, BatchStatus
from tests.support.batch import batch_stack
from tests.support.stack import MOCK_ONLY, Stack, StackFactory, config_from

HELLO = {"model": "mock", "messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture
async def stack(nats_url: str, make_stack: StackFactory) -> Stack:
    return await make_stack(nats_url, config_from(MOCK_ONLY))


async def test_chat_returns_a_typed_completion(stack: Stack, namespace: str) -> None:
    """chat() answers a ChatCompletion and the request id the caller chose is kept."""
    client = EdgeClient(stack.nc, namespace=namespace)
    reply = await client.chat(HELLO, request_id="req-typed-1")
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content


async def test_stream_yields_typed_chunks_that_add_up(stack: Stack, namespace: str) -> None:
    """stream() yields chunks whose deltas make the same text as the whole answer."""
    client = EdgeClient(stack.nc, namespace=namespace)
    text = "".join(
        [c.choices[0].delta.content or "" async for c in client.stream(HELLO) if c.choices]
    )
    whole = await client.chat(HELLO, cache_control="no-cache")
    assert text == whole.choices[0].message.content


async def test_errors_are_typed_by_status_and_code(stack: Stack) -> None:
    """An unknown model raises NotFoundError; a schema break raises BadRequestError with
    the field at fault."""
    client = EdgeClient(stack.nc)
    with pytest.raises(NotFoundError) as missing:
        await client.chat({**HELLO, "model": "no-such-model"}, request_id="req-404")
    assert missing.value.code == "model_not_found"
    assert missing.value.request_id == "req-404"
    with pytest.raises(BadRequestError) as bad:
        await client.chat({**HELLO, "temperature": "hot"})
    assert bad.value.param == "temperature"


async def test_models_lists_the_configured_models(stack: Stack) -> None:
    """models() lists the model names the brokers serve."""
    assert "mock" in [m.id for m in await EdgeClient(stack.nc).models()]


async def test_no_responder_is_retried_then_raised_as_unavailable(stack: Stack) -> None:
    """With nobody on the subject, every try finds no responders and UnavailableError comes
    back (within the deadline)."""
    client = EdgeClient(stack.nc, retry=RetryPolicy(attempts=2, backoff_s=0))
    with pytest.raises(UnavailableError) as err:
        await client.call(f"test.nobody.{uuid.uuid4().hex}", b"{}", deadline_s=5)
    assert err.value.code == "no_broker"


async def test_messages_speak_the_anthropic_shape(stack: Stack, namespace: str) -> None:
    """messages() answers an Anthropic message; stream_messages() yields its events in order."""
    client = EdgeClient(stack.nc, namespace=namespace)
    body = {"model": "mock", "max_tokens": 32, "messages": [{"role": "user", "content": "Hi"}]}
    message = await client.messages(body)
    assert message["type"] == "message"
    events = [e.event async for e in client.stream_messages(body)]
    assert events[0] == "message_start"
    assert events[-1] == "message_stop"


async def test_batch_submit_wait_results(nats_url: str, make_stack: StackFactory) -> None:
    """submit() uploads lines and creates a batch; wait() reports progress until it
    completes; results() returns one typed answer per line."""
    config = config_from("""
        [cache]
        enabled = false
        [batch]
        poll_s = 0.1
        [providers.mock]
        kind = "mock"
        [models.mock]
        deployments = [{ provider = "mock" }]
    """)
    running = await batch_stack(make_stack, nats_url, config)
    client = EdgeClient(running.nc)
    lines = [
        {"custom_id": f"l{i}", "method": "POST", "url": "/v1/chat/completions", "body": HELLO}
        for i in range(3)
    ]
    batch = await client.batches.submit(lines)
    seen: list[BatchObject] = []
    done = await client.batches.wait(batch.id, timeout_s=30, on_progress=seen.append)
    assert done.status == BatchStatus.COMPLETED
    assert seen[-1].status == BatchStatus.COMPLETED
    results = await client.batches.results(done)
    assert sorted(r.custom_id for r in results) == ["l0", "l1", "l2"]
    assert all(r.response is not None and r.response.status_code == 200 for r in results)
