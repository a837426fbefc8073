"""A Python producer service against ``llm-edge up`` (a child process, as a user runs it):
chat, a stream, a cancelled stream and a batch through ``edge_client.EdgeClient``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edge_client import EdgeClient
from schemas.batch import BatchObject, BatchStatus
from tests.support.servers import free_port
from tests.support.up import RunningUp

pytestmark = pytest.mark.process

#: ``gpt-4o-mini`` answers at once; ``slow-model`` streams a word every 10 minutes, so only a
#: cancel ends its call within a test.
CONFIG = """
[batch]
poll_s = 0.1
[cache]
l2 = "off"
[providers.mock]
kind = "mock"
[providers.slow]
kind = "mock"
chunk_delay_ms = 600000
[models.gpt-4o-mini]
deployments = [{ provider = "mock" }]
[models.slow-model]
deployments = [{ provider = "slow" }]
"""
HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]}


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``llm-edge up`` with the mock providers; its NATS URL."""
    home = tmp_path_factory.mktemp("producer-up")
    config = home / "config.toml"
    config.write_text(CONFIG)
    nats_port = free_port()
    running = RunningUp(
        Path(home),
        *("--nats-port", str(nats_port), "--data-dir", str(home / "data")),
        *("--config", str(config)),
    )
    try:
        assert running.ready.wait(60), running.output
        assert "Ready." in running.output, running.output
        yield f"nats://127.0.0.1:{nats_port}"
    finally:
        assert running.interrupt() == 0, running.output


@pytest.fixture
async def client(up: str) -> AsyncIterator[EdgeClient]:
    async with await EdgeClient.connect(up, deadline_s=30) as edge:
        yield edge


async def in_flight(client: EdgeClient, role: str) -> int:
    """Calls a service of ``up`` is working on (``llm.status.<role>``)."""
    reply = await client.nc.request(f"llm.status.{role}", b"", timeout=5)
    status: dict[str, Any] = msgspec.json.decode(reply.data)
    return int(status["in_flight"])


async def busy(client: EdgeClient) -> bool:
    """Whether the slow worker or the broker still works on a call."""
    return bool(await in_flight(client, "worker-slow") or await in_flight(client, "broker"))


async def test_chat_answers_with_the_request_id_kept(client: EdgeClient) -> None:
    reply = await client.chat(HELLO, request_id="producer-chat-1")
    assert reply.model == "gpt-4o-mini"
    assert (reply.choices[0].message.content or "").endswith(": Hello there")


async def test_a_stream_adds_up_to_the_whole_answer(client: EdgeClient) -> None:
    whole = await client.chat(HELLO)
    async with client.stream(HELLO, cache_control="no-cache") as chunks:
        text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
    assert text == whole.choices[0].message.content


async def test_closing_a_stream_ends_it_and_its_upstream_call(client: EdgeClient) -> None:
    """Leaving a slow stream after its first chunk returns at once, and the worker's upstream
    call and the broker's request end within moments (no other way could end them: the next
    word is 10 minutes away)."""
    slow = {**HELLO, "model": "slow-model"}
    async with client.stream(slow, deadline_s=600) as chunks:
        first = await anext(chunks)  # the role chunk: the upstream call is running
        assert first.object == "chat.completion.chunk"
        assert await in_flight(client, "worker-slow") == 1
        leaving = time.monotonic()
    assert time.monotonic() - leaving < 2  # closing sends a cancel, it waits for nothing
    async with asyncio.timeout(10):  # the next word would come in 10 minutes
        while await busy(client):  # noqa: ASYNC110  (the services announce no such event)
            await asyncio.sleep(0.05)


async def test_a_batch_runs_to_completion(client: EdgeClient) -> None:
    lines = [
        {
            "custom_id": name,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {**HELLO, "messages": [{"role": "user", "content": f"line {name}"}]},
        }
        for name in ("a", "b", "c")
    ]
    batch = await client.batches.submit(lines)
    seen: list[BatchObject] = []
    done = await client.batches.wait(batch.id, timeout_s=30, on_progress=seen.append)
    assert done.status == BatchStatus.COMPLETED
    assert seen[-1].status == BatchStatus.COMPLETED
    results = await client.batches.results(done)
    codes = sorted((r.custom_id, r.response.status_code if r.response else 0) for r in results)
    assert codes == [("a", 200), ("b", 200), ("c", 200)]


async def test_messages_answer_in_the_anthropic_shape(client: EdgeClient) -> None:
    body = {**HELLO, "max_tokens": 64}
    message = await client.messages(body)
    assert message["type"] == "message"
    assert message["content"][0]["text"].endswith(": Hello there")
