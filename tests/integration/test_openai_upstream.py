"""The OpenAI-compatible worker end to end against a fake upstream HTTP server."""

from __future__ import annotations

import msgspec
import pytest

from schemas import headers
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted

KEY = "sk-planted-key-0123456789"


@pytest.fixture
async def stack(nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory) -> Stack:
    config = config_from(f"""
        [cache]
        enabled = false

        [resilience]
        max_attempts = 1  # these tests look at errors as the upstream sent them

        [providers.vllm]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"
        api_key_env = "VLLM_KEY"
        headers = {{ "X-Team" = "search" }}

        [models.llama]
        deployments = [{{ provider = "vllm", model = "meta-llama/Llama-3.1-8B-Instruct" }}]
    """)
    return await make_stack(nats_url, config, environ={"VLLM_KEY": KEY})


def chat(content: str) -> bytes:
    return msgspec.json.encode(
        {"model": "llama", "messages": [{"role": "user", "content": content}], "top_k": 40}
    )


async def test_completion_through_openai_compatible_upstream(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """NATS request -> broker -> worker -> upstream HTTP; the upstream's answer comes back whole."""
    msg = await stack.nc.request("llm.chat", chat("hi"), timeout=10)
    assert msg.headers is not None
    assert msg.headers[headers.STATUS] == "200"
    body = msgspec.json.decode(msg.data)
    assert body["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert body["service_tier"] == "default"  # upstream fields are passed through
    sent = fake_openai.received[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert sent.body["top_k"] == 40
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["x-team"] == "search"


@pytest.mark.parametrize(
    ("upstream_status", "status", "code"),
    [
        (400, 400, "bad_request"),
        (401, 502, "authentication"),
        (429, 429, "rate_limited"),
        (500, 502, "unavailable"),
    ],
)
async def test_upstream_errors_reach_the_caller(
    stack: Stack, fake_openai: FakeOpenAI, upstream_status: int, status: int, code: str
) -> None:
    """Upstream errors arrive as envelopes with the provider's message; the key never does."""
    fake_openai.script.append(
        Scripted(
            status=upstream_status,
            body={
                "error": {
                    "message": f"upstream said no (key {KEY})",
                    "type": "x",
                    "param": None,
                    "code": None,
                }
            },
            headers={"retry-after": "7"} if upstream_status == 429 else {},
        )
    )
    msg = await stack.nc.request("llm.chat", chat(f"err {upstream_status}"), timeout=10)
    assert msg.headers is not None
    assert int(msg.headers[headers.STATUS]) == status
    error = msgspec.json.decode(msg.data)["error"]
    assert error["code"] == code
    assert "upstream said no" in error["message"]
    assert KEY not in msg.data.decode()
    if upstream_status == 429:
        assert msg.headers[headers.RETRY_AFTER] == "7"
