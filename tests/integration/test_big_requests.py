"""Requests of real size: megabyte prompts over HTTP and from the Python client reach the
upstream whole; what is over a limit gets a clear 413 or 431 naming it, and every process
stays connected and serving.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import openai
import pytest

from edge_client import BadRequestError, EdgeClient
from edge_runtime.embedded import EmbeddedNats
from edge_runtime.process import close_quietly, connect
from tests.support.batch import batch_stack, jsonl, wait_final
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI

MiB = 1024 * 1024


def prompt(size: int) -> str:
    """A prompt of ``size`` characters that no two tests share (no cache hit between them)."""
    line = "def handler(event, context):  # the agent's whole repository, one file a line\n"
    return (line * (size // len(line) + 1))[:size]


@pytest.fixture
async def stack(nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory) -> Stack:
    config = config_from(f"""
        [cache]
        l2 = "off"

        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"

        [models.big]
        deployments = [{{ provider = "up", model = "big-context-1m" }}]
    """)
    return await make_stack(nats_url, config, providers=["up"], bridge=True)


def sent_prompt(fake: FakeOpenAI) -> str:
    content = fake.received[-1].body["messages"][-1]["content"]
    assert isinstance(content, str)
    return content


async def test_an_8_mib_prompt_over_http_reaches_the_upstream_whole(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """The official SDK sends an 8 MiB prompt through the bridge; the upstream gets every
    byte of it in one call and the caller its answer."""
    text = prompt(8 * MiB)
    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    reply = await client.chat.completions.create(
        model="big", messages=[{"role": "user", "content": text}]
    )
    assert reply.choices[0].message.content == "upstream says hi to big-context-1m"
    assert len(fake_openai.received) == 1
    assert sent_prompt(fake_openai) == text


async def test_an_8_mib_prompt_from_the_python_client(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """``EdgeClient.chat`` with an 8 MiB prompt (no MaxPayloadError): one upstream call."""
    text = prompt(8 * MiB + 1)
    async with EdgeClient(stack.nc) as client:
        reply = await client.chat({"model": "big", "messages": [{"role": "user", "content": text}]})
    assert reply.choices[0].message.content == "upstream says hi to big-context-1m"
    assert len(fake_openai.received) == 1
    assert sent_prompt(fake_openai) == text


async def test_one_message_of_a_million_characters_is_not_refused(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """No per-message length rule below the request size: a 1M-character message (about
    250k tokens, a coding agent's context) is served."""
    text = prompt(1_000_000)
    body = {"model": "big", "messages": [{"role": "user", "content": text}]}
    msg = await stack.nc.request("llm.chat", msgspec.json.encode(body), timeout=30)
    assert (msg.headers or {}).get("Llm-Status") == "200"
    assert sent_prompt(fake_openai) == text


async def test_a_body_over_the_limit_is_413_naming_it(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """A body over the 32 MiB request limit is refused by the bridge with the limit named,
    nothing reaches the upstream, and the bridge serves the next request."""
    body = msgspec.json.encode(
        {"model": "big", "messages": [{"role": "user", "content": prompt(32 * MiB + 1)}]}
    )
    async with httpx.AsyncClient(timeout=60) as http:
        refused = await http.post(f"{stack.base_url}/chat/completions", content=body)
        assert refused.status_code == 413
        error = refused.json()["error"]
        assert error["code"] == "request_too_large"
        assert str(32 * MiB) in error["message"]
        ok = await http.post(
            f"{stack.base_url}/chat/completions",
            json={"model": "big", "messages": [{"role": "user", "content": "still there?"}]},
        )
    assert ok.status_code == 200
    assert len(fake_openai.received) == 1


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Authorization", "Bearer " + "k" * 2_000_000),
        ("Cache-Control", "max-age=" + "9" * 1_200_000),
        ("X-Api-Key", "k" * 2_000_000),
        ("Llm-Priority", "p" * 100_000),
    ],
)
async def test_an_oversized_header_is_431_and_the_bridge_stays_connected(
    stack: Stack, fake_openai: FakeOpenAI, header: str, value: str
) -> None:
    """A megabyte header gets 431 naming the header (nothing is published, so the NATS
    server never closes the bridge's connection) and the next request is served."""
    chat = {"model": "big", "messages": [{"role": "user", "content": "hello"}]}
    async with httpx.AsyncClient(timeout=30) as http:
        refused = await http.post(
            f"{stack.base_url}/chat/completions", json=chat, headers={header: value}
        )
        assert refused.status_code == 431
        assert refused.json()["error"]["code"] == "request_header_fields_too_large"
        models = await http.get(f"{stack.base_url}/models", headers={header: value})
        assert models.status_code == 431
        ok = await http.post(f"{stack.base_url}/chat/completions", json=chat)
    assert ok.status_code == 200
    assert stack.bridge is not None
    assert not stack.bridge.nc.is_closed
    assert len(fake_openai.received) == 1


@pytest.fixture
async def small_server(tmp_path: Path) -> AsyncIterator[str]:
    """A nats-server with the default 1 MiB max_payload (a user's own server)."""
    server = EmbeddedNats(tmp_path / "js", port=-1, max_payload=None)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


async def test_the_client_refuses_what_the_server_would_not_take(small_server: str) -> None:
    """On a server with a 1 MiB max_payload, a 2 MiB prompt is a 413 naming the server's
    limit, raised before publishing: the connection stays open."""
    nc = await connect(small_server, "big-client")
    try:
        async with EdgeClient(nc) as client:
            with pytest.raises(BadRequestError) as refused:
                await client.chat(
                    {"model": "m", "messages": [{"role": "user", "content": prompt(2 * MiB)}]}
                )
        assert refused.value.status == 413
        assert refused.value.code == "request_too_large"
        assert str(nc.max_payload) in refused.value.message
        assert nc.is_connected
    finally:
        await close_quietly(nc)


async def test_a_batch_of_2_mib_lines_runs_and_delivers(
    nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory
) -> None:
    """Three 2 MiB lines validate, run (each prompt reaches the upstream whole) and deliver
    their results; a line over the request limit fails on its own with the limit named."""
    config = config_from(f"""
        [cache]
        enabled = false
        [broker]
        max_request_bytes = 4194304
        [batch]
        poll_s = 0.1
        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"
        [models.big]
        deployments = [{{ provider = "up", model = "big-context-1m" }}]
    """)
    stack = await batch_stack(make_stack, nats_url, config)
    rows = [
        {
            "custom_id": f"big-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "big", "messages": [{"role": "user", "content": text}]},
        }
        for i, text in enumerate([prompt(2 * MiB + i) for i in range(3)] + [prompt(5 * MiB)])
    ]
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    uploaded = await sdk.files.create(file=("big.jsonl", jsonl(rows)), purpose="batch")
    batch = await sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    await wait_final(stack.nc, batch.id)
    done = await sdk.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (3, 1)
    assert done.output_file_id is not None
    assert done.error_file_id is not None
    output = (await sdk.files.content(done.output_file_id)).content.splitlines()
    assert sorted(msgspec.json.decode(line)["custom_id"] for line in output) == [
        "big-0",
        "big-1",
        "big-2",
    ]
    errors = [
        msgspec.json.decode(line)
        for line in (await sdk.files.content(done.error_file_id)).content.splitlines()
    ]
    assert [e["custom_id"] for e in errors] == ["big-3"]
    assert errors[0]["response"]["status_code"] == 413
    assert sorted(len(r.body["messages"][0]["content"]) for r in fake_openai.received) == [
        2 * MiB,
        2 * MiB + 1,
        2 * MiB + 2,
    ]
