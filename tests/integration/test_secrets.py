"""A planted provider key never leaves the provider worker: not in NATS messages, replies,
HTTP bodies or logs, even when the upstream echoes it back in an error."""

from __future__ import annotations

import logging

import msgspec
import pytest
from nats.aio.msg import Msg

from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted

PLANTED = "sk-planted-SECRET-0123456789abcdefghij"


@pytest.fixture
async def stack(nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory) -> Stack:
    config = config_from(f"""
        [cache]
        l2 = "off"
        [resilience]
        max_attempts = 1
        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"
        api_key_env = "UP_KEY"
        [models.m]
        deployments = [{{ provider = "up" }}]
    """)
    return await make_stack(nats_url, config, bridge=True, environ={"UP_KEY": PLANTED})


async def test_planted_key_appears_nowhere(
    stack: Stack, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """Everything on NATS, every reply and every log line is free of the provider key."""
    caplog.set_level(logging.DEBUG)
    seen: list[bytes] = []

    async def tap(msg: Msg) -> None:
        seen.append(msg.data + msgspec.json.encode(msg.headers or {}))

    sub = await stack.nc.subscribe(">", cb=tap)
    await stack.nc.flush()
    fake_openai.script.extend(
        [
            Scripted(
                status=401,
                body={
                    "error": {
                        "message": f"Incorrect API key provided: {PLANTED}",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            ),
            Scripted(status=500, body={"error": {"message": f"boom {PLANTED}"}}),
            Scripted(),
        ]
    )
    assert stack.http is not None
    bodies = []
    for i in range(3):
        response = await stack.http.post(
            "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]},
            headers={"Cache-Control": "no-store"},
        )
        bodies.append(response.text + str(dict(response.headers)))
    await stack.nc.flush()
    await sub.unsubscribe()
    assert fake_openai.received[0].headers["authorization"] == f"Bearer {PLANTED}"  # it is used
    assert seen  # the tap saw the traffic
    assert all(PLANTED.encode() not in m for m in seen)
    assert all(PLANTED not in b for b in bodies)
    assert PLANTED not in caplog.text
