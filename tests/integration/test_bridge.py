"""The HTTP bridge with the official openai SDK and raw HTTP, over real NATS."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from broker.config import Config
from edge_bridge.app import DEFAULT_MAX_REQUEST_BYTES
from tests.support.stack import Stack, StackFactory, config_from

CONFIG = """
    [cache]
    enabled = false

    [providers.mock]
    kind = "mock"

    [models."gpt-4o-mini"]
    deployments = [{ provider = "mock" }]

    [models.orphan]
    deployments = [{ provider = "ghost" }]

    [providers.ghost]
    kind = "mock"
"""


@pytest.fixture
async def stack(nats_url: str, make_stack: StackFactory) -> Stack:
    return await make_stack(nats_url, config_from(CONFIG), providers=["mock"], bridge=True)


@pytest.fixture
def sdk(stack: Stack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)


async def test_openai_sdk_chat_completion(sdk: openai.AsyncOpenAI) -> None:
    """The official SDK, unchanged, gets a completion through bridge, broker and worker."""
    completion = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hi"}]
    )
    assert completion.choices[0].message.role == "assistant"
    assert "Say hi" in (completion.choices[0].message.content or "")
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0


async def test_openai_sdk_sees_errors_as_its_exceptions(sdk: openai.AsyncOpenAI) -> None:
    """Unknown model and bad parameters surface as the SDK's NotFoundError / BadRequestError."""
    with pytest.raises(openai.NotFoundError) as not_found:
        await sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], temperature=5
        )
    assert bad.value.param == "temperature"


async def test_openai_sdk_lists_models(sdk: openai.AsyncOpenAI) -> None:
    """GET /v1/models lists the configured models."""
    models = [m.id async for m in sdk.models.list()]
    assert "gpt-4o-mini" in models


async def test_oversize_body_is_413_before_nats(stack: Stack) -> None:
    """A body over the bridge's request limit (32 MiB, under the NATS max_payload) is refused
    before anything is published; the connection survives."""
    assert stack.http is not None
    content = b"x" * DEFAULT_MAX_REQUEST_BYTES
    huge = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + content
    response = await stack.http.post("/chat/completions", content=huge + b'"}]}')
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    ok = await stack.http.post(
        "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "after"}]},
    )
    assert ok.status_code == 200


async def test_health_ready_and_http_errors(stack: Stack) -> None:
    """/health and /ready answer; unknown routes and a provider without workers get envelopes."""
    assert stack.http is not None
    health = await stack.http.get(stack.base_url.removesuffix("/v1") + "/health")
    assert health.status_code == 200
    ready = await stack.http.get(stack.base_url.removesuffix("/v1") + "/ready")
    assert ready.status_code == 200
    missing = await stack.http.get("/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    orphan = await stack.http.post(
        "/chat/completions",
        json={"model": "orphan", "messages": [{"role": "user", "content": "x"}]},
    )
    assert orphan.status_code == 503
    assert orphan.headers["retry-after"] == "1"


async def test_ready_is_503_without_broker(nats_url: str, make_stack: StackFactory) -> None:
    """/ready reports 503 while no broker answers."""
    running = await make_stack(nats_url, config_from(CONFIG), providers=[], bridge=True, brokers=0)
    assert running.http is not None
    ready = await running.http.get(running.base_url.removesuffix("/v1") + "/ready")
    assert ready.status_code == 503
    chat = await running.http.post(
        "/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "x"}]}
    )
    assert chat.status_code == 503
    assert chat.json()["error"]["code"] == "no_broker"


COMMON_MODELS = [
    "gpt-4",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4-turbo",
    "gpt-3.5-turbo",
    "o1",
    "o3-mini",
    "o4-mini",
    "claude-3-5-sonnet-latest",
    "claude-3-5-haiku-20241022",
    "claude-sonnet-4-20250514",
    "claude-opus-4-0",
]


async def test_default_config_answers_common_model_names(
    nats_url: str, make_stack: StackFactory
) -> None:
    """With the built-in config and no provider key, the quick-start request (model gpt-4)
    and the other common OpenAI and Anthropic model names are answered by the mock."""
    config, mocked = Config.load().with_mock_fallback({})
    assert set(COMMON_MODELS) - {"claude-3-5-haiku-20241022", "claude-sonnet-4-20250514"} <= set(
        mocked
    )
    stack = await make_stack(nats_url, config, bridge=True)
    assert stack.http is not None
    listed = {m["id"] for m in (await stack.http.get("/models")).json()["data"]}
    assert set(COMMON_MODELS) <= listed
    for model in COMMON_MODELS:
        body = {"model": model, "messages": [{"role": "user", "content": "Hello"}]}
        reply = await stack.http.post("/chat/completions", json=body)
        assert reply.status_code == 200, (model, reply.text)
        assert reply.headers["llm-provider"] == "mock"
        assert reply.json()["choices"][0]["message"]["content"]
    anthropic_body = {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    message = await stack.http.post("/messages", json=anthropic_body)
    assert message.status_code == 200, message.text
    assert message.json()["type"] == "message"


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\n",
    ],
    ids=["request-line", "header", "chunked-body"],
)
async def test_unparseable_http_gets_the_json_envelope(stack: Stack, raw: bytes) -> None:
    """HTTP the server cannot parse is refused with a 400 JSON error envelope, not plain text."""
    assert stack.bridge is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.bridge.port)
    try:
        writer.write(raw)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=5)  # the server closes
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_http_request"
