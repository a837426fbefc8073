"""One request must never take a service off NATS: oversized headers, bodies at the limit,
publishes over ``max_payload``, and a connection the server closes for good."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import msgspec
import pytest
from nats.aio.client import Client

from broker.service import BrokerOptions, BrokerService
from edge_runtime.process import ConnectionLost, Lifeline, connect
from schemas import headers, subjects
from tests.support.stack import MOCK_ONLY, Stack, StackFactory, config_from


@pytest.fixture
async def stack(nats_url: str, make_stack: StackFactory) -> Stack:
    """A broker, a mock worker and the bridge on the session's nats-server."""
    return await make_stack(nats_url, config_from(MOCK_ONLY), bridge=True)


def chat_body(size: int = 0) -> bytes:
    """A valid chat request, padded to ``size`` bytes with a long message when given."""
    base = {"model": "mock", "messages": [{"role": "user", "content": uuid.uuid4().hex}]}
    raw = json.dumps(base).encode()
    if size <= len(raw):
        return raw
    base["messages"][0]["content"] = "x" * (size - len(raw) + 32)  # type: ignore[index]
    return json.dumps(base).encode()


async def still_serves(nc: Client) -> None:
    msg = await nc.request(subjects.CHAT, chat_body(), timeout=10)
    assert (msg.headers or {})[headers.STATUS] == "200"


async def test_huge_request_id_at_the_body_limit_is_refused_and_the_broker_lives(
    stack: Stack,
) -> None:
    """A body at the limit with a 48 kB X-Request-Id gets 431; the broker keeps serving."""
    broker = stack.brokers[0]
    limit = broker.pipeline.max_body if broker.pipeline else 0
    body = chat_body(limit - 64)
    assert len(body) <= limit
    huge_id = "r" * 48_000
    for _ in range(3):  # one such request used to close the broker's connection for good
        msg = await stack.nc.request(
            subjects.CHAT, body, timeout=10, headers={headers.REQUEST_ID: huge_id}
        )
        answer = msg.headers or {}
        assert answer[headers.STATUS] == "431"
        assert len(answer[headers.REQUEST_ID]) < 100  # the oversized id is not echoed
        error = msgspec.json.decode(msg.data)["error"]
        assert (error["code"], error["param"]) == (
            "request_header_fields_too_large",
            "X-Request-Id",
        )
    assert broker.nc.is_connected
    await still_serves(stack.nc)


@pytest.mark.parametrize(
    "name", ["Authorization", "Cache-Control", "X-Cache-Namespace", "traceparent", "X-Request-Id"]
)
async def test_bridge_refuses_oversized_headers_and_keeps_serving(stack: Stack, name: str) -> None:
    """Over HTTP, each forwarded header over its bound is a JSON 431, never a publish."""
    assert stack.http is not None
    payload = {"model": "mock", "messages": [{"role": "user", "content": "x" * 900_000}]}
    answer = await stack.http.post("/chat/completions", json=payload, headers={name: "v" * 20_000})
    assert answer.status_code == 431
    assert answer.json()["error"]["code"] == "request_header_fields_too_large"
    ok = await stack.http.post(
        "/chat/completions", json={"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert ok.status_code == 200
    health = await stack.http.get(f"http://127.0.0.1:{stack.bridge.port}/health")  # type: ignore[union-attr]
    assert health.status_code == 200


async def test_nan_timeout_is_a_400(stack: Stack) -> None:
    """``Llm-Timeout-Ms: nan`` is refused with a clear 400, not a 500."""
    msg = await stack.nc.request(
        subjects.CHAT, chat_body(), timeout=10, headers={headers.TIMEOUT_MS: "nan"}
    )
    assert (msg.headers or {})[headers.STATUS] == "400"
    assert msgspec.json.decode(msg.data)["error"]["param"] == headers.TIMEOUT_MS


async def test_bridge_health_is_503_once_its_connection_is_closed(stack: Stack) -> None:
    """A bridge that can no longer reach NATS says so on /health instead of 200."""
    assert stack.bridge is not None
    url = f"http://127.0.0.1:{stack.bridge.port}/health"
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(url)).status_code == 200
        await stack.bridge.nc.close()
        answer = await http.get(url)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "nats_closed"


async def force_server_close(nc: Client) -> None:
    """Make the server end ``nc`` for good, as it does for a publish over max_payload.

    Only the ``PUB`` line is written (announcing a payload over the limit): the server answers
    ``-ERR 'Maximum Payload Violation'`` at once, before any payload write could race it.
    """
    line = f"PUB test.oversize {nc.max_payload + 1}\r\n".encode()
    nc._transport.write(line)
    await nc._transport.drain()


async def test_lifeline_stops_a_service_whose_connection_the_server_closed(nats_url: str) -> None:
    """A connection closed by the server stops the service (so it can be restarted)."""
    stop = asyncio.Event()
    lifeline = Lifeline(stop)
    nc = await connect(nats_url, "test-lifeline", lifeline=lifeline)
    await force_server_close(nc)
    await asyncio.wait_for(stop.wait(), 10)
    with pytest.raises(ConnectionLost):
        lifeline.check()


async def test_broker_whose_connection_is_closed_stops(nats_url: str) -> None:
    """The broker's own (FastStream) connection closed by the server stops the broker."""
    stop = asyncio.Event()
    lifeline = Lifeline(stop)
    service = BrokerService(config_from(MOCK_ONLY), BrokerOptions(nats_url=nats_url), lifeline)
    await service.start()
    try:
        await force_server_close(service.nc)
        await asyncio.wait_for(stop.wait(), 10)
        assert lifeline.lost
    finally:
        await service.stop(1.0)
