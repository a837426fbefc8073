"""Routing and resilience over the real path with fault-injecting fake upstreams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
from prometheus_client import REGISTRY

from edge_client.chat import stream_chat
from schemas import headers
from tests.support.cli import run_cli
from tests.support.servers import free_port
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted, running_fake


@pytest.fixture
async def second_upstream() -> AsyncIterator[FakeOpenAI]:
    async with running_fake() as server:
        yield server


@pytest.fixture
async def stack(
    nats_url: str, fake_openai: FakeOpenAI, second_upstream: FakeOpenAI, make_stack: StackFactory
) -> Stack:
    config = config_from(f"""
        [cache]
        enabled = false

        [resilience]
        max_attempts = 3
        backoff_initial_s = 0      # zero waits: these tests never sleep

        [breaker]
        failure_threshold = 2
        open_s = 60

        [providers.a]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"

        [providers.b]
        kind = "openai_compatible"
        base_url = "{second_upstream.base_url}"

        [providers.dead]
        kind = "openai_compatible"
        base_url = "http://127.0.0.1:{free_port()}/v1"

        [models.m]
        strategy = "failover"
        deployments = [
          {{ name = "m-a", provider = "a", priority = 0 }},
          {{ name = "m-b", provider = "b", priority = 1 }},
        ]

        [models.unreachable-first]
        strategy = "failover"
        deployments = [
          {{ name = "u-dead", provider = "dead", priority = 0 }},
          {{ name = "u-b", provider = "b", priority = 1 }},
        ]

        [models.only-a]
        deployments = [{{ name = "only-a", provider = "a" }}]
        fallbacks = ["only-b"]

        [models.only-b]
        deployments = [{{ name = "only-b", provider = "b" }}]
    """)
    return await make_stack(nats_url, config, bridge=True)


def breaker_gauge(deployment: str) -> list[float]:
    """Every scraped llm_edge_circuit_breaker_state sample for a deployment."""
    return [
        sample.value
        for family in REGISTRY.collect()
        if family.name == "llm_edge_circuit_breaker_state"
        for sample in family.samples
        if sample.labels.get("deployment") == deployment
    ]


async def ask(stack: Stack, model: str, **hdrs: str) -> dict[str, str]:
    body = msgspec.json.encode({"model": model, "messages": [{"role": "user", "content": "x"}]})
    msg = await stack.nc.request("llm.chat", body, timeout=10, headers=hdrs or None)
    assert msg.headers is not None
    return msg.headers


async def admin(stack: Stack, **command: str) -> dict[str, dict[str, object]]:
    reply = await stack.nc.request("llm.admin.breaker", msgspec.json.encode(command), timeout=5)
    result: dict[str, dict[str, object]] = msgspec.json.decode(reply.data)["breakers"]
    return result


async def test_open_breaker_keeps_traffic_off_a_failing_upstream(
    stack: Stack, fake_openai: FakeOpenAI, second_upstream: FakeOpenAI
) -> None:
    """A failing primary is failed over at once; after 2 failures it gets no traffic at all."""
    fake_openai.default = Scripted(status=500, body={"error": {"message": "down"}})
    replies = [await ask(stack, "m") for _ in range(6)]
    assert {r[headers.STATUS] for r in replies} == {"200"}
    assert {r[headers.DEPLOYMENT] for r in replies} == {"m-b"}
    assert [r[headers.ATTEMPTS] for r in replies] == ["2", "2", "1", "1", "1", "1"]
    assert len(fake_openai.received) == 2
    assert len(second_upstream.received) == 6
    assert (await admin(stack))["m-a"]["state"] == "open"
    assert 1.0 in breaker_gauge("m-a")  # exported as open (0 closed, 1 open, 2 half-open)


async def test_connection_refused_fails_over(stack: Stack) -> None:
    """A deployment nobody listens for (connection refused) fails over to the next."""
    reply = await ask(stack, "unreachable-first")
    assert reply[headers.STATUS] == "200"
    assert reply[headers.DEPLOYMENT] == "u-b"


async def test_fallback_model_after_all_deployments_fail(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """When the model's own deployments fail, its fallback model answers."""
    fake_openai.default = Scripted(status=529, body={"error": {"message": "overloaded"}})
    reply = await ask(stack, "only-a")
    assert (reply[headers.STATUS], reply[headers.DEPLOYMENT]) == ("200", "only-b")


async def test_all_open_is_a_fast_503_and_operators_can_reset(stack: Stack) -> None:
    """Forced-open breakers give 503 with Retry-After over HTTP; a reset restores service."""
    assert stack.http is not None
    for name in ("m-a", "m-b"):
        await admin(stack, action="open", deployment=name)
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    response = await stack.http.post("/chat/completions", json=body)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "all_deployments_unavailable"
    states = await admin(stack, action="reset", deployment="m-b")
    assert states["m-b"]["state"] == "closed"
    assert (await stack.http.post("/chat/completions", json=body)).status_code == 200
    bad = await stack.nc.request(
        "llm.admin.breaker", b'{"action": "open", "deployment": "x"}', timeout=5
    )
    assert b"unknown deployment" in bad.data


async def test_deadline_aborts_the_upstream_call(stack: Stack, fake_openai: FakeOpenAI) -> None:
    """A request's deadline travels to the worker, which drops the upstream call: 504."""
    fake_openai.default = Scripted(delay_s=5)
    await admin(stack, action="open", deployment="only-b")  # no fallback to hide the timeout
    reply = await ask(stack, "only-a", **{headers.TIMEOUT_MS: "300"})
    assert reply[headers.STATUS] == "504"
    await asyncio.wait_for(fake_openai.disconnected.wait(), 5)


async def test_stream_fails_over_before_the_first_chunk(
    stack: Stack, fake_openai: FakeOpenAI, second_upstream: FakeOpenAI
) -> None:
    """A stream whose primary fails before any chunk is served by the next deployment."""
    fake_openai.script.append(Scripted(status=503, body={"error": {"message": "busy"}}))
    chunks = [
        c
        async for c in stream_chat(
            stack.nc, {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        )
    ]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "upstream streams to m"
    assert len(second_upstream.received) == 1


@pytest.mark.process
async def test_breaker_cli(stack: Stack, nats_url: str) -> None:
    """`llm-edge breaker open NAME` pins a breaker open on every broker; `status` shows it."""

    async def cli(*args: str) -> str:
        return (await run_cli("breaker", *args, "--nats-url", nats_url))[0]

    await cli("open", "m-a")
    status = msgspec.json.decode(await cli("status"))
    assert status["breakers"]["m-a"] == {"state": "open", "forced": True, "retry_after": 60.0}
    reply = await ask(stack, "m")
    assert reply[headers.DEPLOYMENT] == "m-b"
    await cli("reset", "m-a")
    assert (await ask(stack, "m"))[headers.DEPLOYMENT] == "m-a"
