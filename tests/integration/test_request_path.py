"""The request path end to end over real NATS: producer -> broker -> worker -> reply."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from nats.aio.client import Client

from schemas import ChatCompletion, ErrorEnvelope, headers
from tests.support.stack import Stack, StackFactory, chat, config_from

CONFIG = """
    [broker]
    max_request_bytes = 20000

    [cache]
    enabled = false

    [providers.mock]
    kind = "mock"

    [providers.slow]
    kind = "mock"
    latency_ms = 1000

    [providers.ghost]
    kind = "mock"

    [models.mock]
    aliases = ["mock-alias"]
    deployments = [{ provider = "mock", model = "mock-upstream" }]

    [models.slow]
    deployments = [{ provider = "slow" }]

    [models.nobody-serves]
    deployments = [{ provider = "ghost" }]
"""


@pytest.fixture
async def stack(nats_url: str, make_stack: StackFactory) -> Stack:
    return await make_stack(nats_url, config_from(CONFIG), providers=["mock", "slow"])


async def request(nc: Client, body: bytes, **hdrs: str) -> tuple[int, bytes, dict[str, str]]:
    msg = await nc.request("llm.chat", body, timeout=10, headers=hdrs or None)
    reply_headers = msg.headers or {}
    return int(reply_headers[headers.STATUS]), msg.data, reply_headers


def error_of(body: bytes) -> tuple[str, str, str | None]:
    envelope = msgspec.json.decode(body, type=ErrorEnvelope)
    return envelope.error.type, envelope.error.code or "", envelope.error.param


async def test_nats_producer_gets_chat_completion(stack: Stack) -> None:
    """A raw nats-py request on llm.chat returns an OpenAI chat.completion with usage."""
    status, body, hdrs = await request(stack.nc, chat("hello there"), **{"X-Request-Id": "abc"})
    assert status == 200
    completion = msgspec.json.decode(body, type=ChatCompletion)
    assert completion.object == "chat.completion"
    assert completion.model == "mock-upstream"  # the deployment's upstream model was used
    assert "hello there" in (completion.choices[0].message.content or "")
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0
    assert hdrs[headers.REQUEST_ID] == "abc"
    assert hdrs[headers.PROVIDER] == "mock"


async def test_alias_resolves_to_model(stack: Stack) -> None:
    """An alias is served by its model's deployment."""
    status, body, _ = await request(stack.nc, chat("hi", model="mock-alias"))
    assert status == 200
    assert msgspec.json.decode(body, type=ChatCompletion).model == "mock-upstream"


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b'{"model": "mock", "messages": [', 400, "invalid_request", None),
        (b'{"model": "mock"}', 400, "invalid_request", "messages"),
        (chat("x", temperature=3), 400, "invalid_request", "temperature"),
        (
            b'{"model":"mock","messages":[{"role":"robot","content":"x"}]}',
            400,
            "invalid_request",
            "messages[0].role",
        ),
        (chat("x", model="no-such-model"), 404, "model_not_found", "model"),
        (chat("x" * 30_000), 413, "request_too_large", None),
    ],
    ids=[
        "malformed-json",
        "missing-messages",
        "bad-temperature",
        "bad-role",
        "unknown-model",
        "oversize",
    ],
)
async def test_bad_requests_get_error_envelopes(
    stack: Stack, body: bytes, status: int, code: str, param: str | None
) -> None:
    """Each malformed request gets its status and an OpenAI error envelope naming the field."""
    got_status, got_body, _ = await request(stack.nc, body)
    assert got_status == status
    _, got_code, got_param = error_of(got_body)
    assert got_code == code
    assert got_param == param
    # and the broker keeps serving
    ok_status, _, _ = await request(stack.nc, chat("still alive?"))
    assert ok_status == 200


async def test_no_worker_running_is_503(stack: Stack) -> None:
    """A model whose provider has no worker gets 503 at once (NATS no-responders), not a hang."""
    started = time.monotonic()
    status, body, hdrs = await request(stack.nc, chat("anyone?", model="nobody-serves"))
    assert status == 503
    assert error_of(body)[1] == "no_provider_available"
    assert hdrs[headers.RETRY_AFTER] == "1"
    assert time.monotonic() - started < 5


async def test_deadline_exceeded_is_504(stack: Stack) -> None:
    """A request whose budget runs out before the provider answers gets 504."""
    status, body, _ = await request(
        stack.nc, chat("slow", model="slow"), **{headers.TIMEOUT_MS: "200"}
    )
    assert status == 504
    assert error_of(body)[1] == "deadline_exceeded"


async def test_500_concurrent_requests_run_concurrently(stack: Stack) -> None:
    """500 requests to a 1 s provider finish in about 1 s, not one after another."""
    started = time.monotonic()
    replies = await asyncio.gather(
        *(request(stack.nc, chat(f"request {i}", model="slow")) for i in range(500))
    )
    elapsed = time.monotonic() - started
    assert [status for status, _, _ in replies] == [200] * 500
    assert elapsed < 5.0, f"500 concurrent 1 s requests took {elapsed:.1f}s"


async def test_unknown_fields_reach_the_provider(stack: Stack) -> None:
    """The request body travels to the worker unchanged: nothing the caller sent is dropped."""
    received: list[bytes] = []

    async def spy(msg: object) -> None:
        received.append(msg.data)  # type: ignore[attr-defined]

    sub = await stack.nc.subscribe("llm.provider.mock", cb=spy)
    await stack.nc.flush()
    try:
        body = chat("passthrough", reasoning_effort="low", store=True)
        status, _, _ = await request(stack.nc, body)
        assert status == 200
        assert received
        assert received[0] == body
    finally:
        await sub.unsubscribe()
