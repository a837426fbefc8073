"""Invalid and hostile input through the real paths (NATS and the HTTP bridge): every one is
answered with a 400 envelope naming the field, and nothing is forwarded or stored."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from nats.aio.msg import Msg

from broker.tenancy.tenants import hash_key
from schemas import headers
from tests.support.stack import Stack, config_from, start_stack

KEY = f"sk-le-test-{uuid.uuid4().hex}"
AUTH = {headers.AUTHORIZATION: f"Bearer {KEY}"}
#: Deeper than any JSON decoder's recursion guard: arrays, and objects.
DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


@pytest.fixture
async def stack(nats_url: str) -> AsyncIterator[Stack]:
    config = config_from(f"""
        [cache]
        l2 = "off"
        [tenants.acme]
        keys = ["{hash_key(KEY)}"]
        [providers.mock]
        kind = "mock"
        [models.mock]
        deployments = [{{ provider = "mock" }}]
    """)
    running = await start_stack(nats_url, config, bridge=True)
    try:
        yield running
    finally:
        await running.stop()


def chat(**extra: Any) -> bytes:
    return msgspec.json.encode(
        {"model": "mock", "messages": [{"role": "user", "content": "hi"}], **extra}
    )


def messages(**extra: Any) -> bytes:
    return msgspec.json.encode(
        {"model": "mock", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]} | extra
    )


def with_raw_field(body: bytes, name: str, raw: bytes) -> bytes:
    """The body with one more top-level field holding ``raw`` JSON, as written."""
    return body[:-1] + b',"' + name.encode() + b'":' + raw + b"}"


async def ask(stack: Stack, subject: str, body: bytes, hdrs: dict[str, str] | None = None) -> Msg:
    return await stack.nc.request(subject, body, timeout=10, headers=AUTH if hdrs is None else hdrs)


def status(msg: Msg) -> int:
    return int((msg.headers or {})[headers.STATUS])


def openai_error(data: bytes) -> dict[str, Any]:
    error: dict[str, Any] = msgspec.json.decode(data)["error"]
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (with_raw_field(chat(), "vendor_knob", b"1e400"), "vendor_knob"),
        (with_raw_field(chat(), "vendor_knob", b"9" * 5000), "vendor_knob"),
    ],
    ids=["1e400", "5000-digits"],
)
async def test_chat_values_out_of_range_are_400s_naming_the_field(
    stack: Stack, body: bytes, param: str
) -> None:
    """Out-of-range values on llm.chat and POST /v1/chat/completions are 400s naming the field."""
    reply = await ask(stack, "llm.chat", body)
    assert status(reply) == 400
    assert openai_error(reply.data)["param"] == param
    assert stack.http is not None
    response = await stack.http.post("/chat/completions", content=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


async def test_deeply_nested_json_is_a_400_on_every_entry_point(stack: Stack) -> None:
    """JSON nested 100,000 deep is a 400 saying so over NATS (chat, messages) and HTTP."""
    for subject, body in (
        ("llm.chat", with_raw_field(chat(), "x", DEEP)),
        ("llm.chat", with_raw_field(chat(), "x", DEEP_OBJECT)),
        ("llm.messages", with_raw_field(messages(), "x", DEEP)),
        ("llm.messages", with_raw_field(messages(), "metadata", DEEP_OBJECT)),
    ):
        reply = await ask(stack, subject, body)
        assert status(reply) == 400, subject
        assert b"nested too deeply" in reply.data
    assert stack.http is not None
    for path, body in (
        ("/chat/completions", with_raw_field(chat(stream=True), "x", DEEP)),
        ("/messages", with_raw_field(messages(stream=True), "x", DEEP)),
    ):
        response = await stack.http.post(path, content=body, headers=AUTH)
        assert response.status_code == 400, path
        assert "nested too deeply" in response.text
    assert status(await ask(stack, "llm.chat", chat())) == 200
