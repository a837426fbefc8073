"""Each metric moves by the right amount for real traffic over NATS (broker and workers in
process, so their registry is read directly)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from edge_client.chat import stream_chat
from schemas import headers
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted


@pytest.fixture
async def stack(nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory) -> Stack:
    config = config_from(f"""
        [cache]
        l2 = "off"
        [batch]
        enabled = false
        [resilience]
        max_attempts = 3
        backoff_initial_s = 0
        [providers.mock]
        kind = "mock"
        [providers.held]     # no worker: the test answers llm.provider.held itself
        kind = "mock"
        [providers.absent]   # no worker at all: every call to it fails over
        kind = "mock"
        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"
        [models.counted]
        deployments = [{{ provider = "mock", input_price = 2.5, output_price = 10.0 }}]
        [models.held]
        deployments = [{{ provider = "held" }}]
        [models.failing]
        strategy = "failover"
        deployments = [
          {{ name = "failing-absent", provider = "absent", priority = 0 }},
          {{ name = "failing-mock", provider = "mock", priority = 1 }},
        ]
        [models.up]
        deployments = [{{ provider = "up", model = "gpt-4o-mini" }}]
    """)
    return await make_stack(nats_url, config, providers=["mock", "up"])


def value(name: str, **labels: str) -> float:
    """A sample's current value (0 when it was never set)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def body(content: str, model: str = "counted", **extra: object) -> bytes:
    return msgspec.json.encode(
        {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    )


async def ask(stack: Stack, data: bytes, namespace: str) -> Msg:
    return await stack.nc.request(
        "llm.chat", data, timeout=10, headers={headers.CACHE_NAMESPACE: namespace}
    )


async def test_tokens_cost_saved_and_duration_by_model(stack: Stack, namespace: str) -> None:
    """A miss adds its usage to llm_edge_tokens_total and one request duration under its model;
    its cache hit adds the cost it saved to llm_edge_cost_saved_usd_total{model}."""
    tokens = {
        t: value("llm_edge_tokens_total", provider="mock", model="counted", type=t, tenant="")
        for t in ("prompt", "completion")
    }
    durations = value("llm_edge_request_duration_seconds_count", provider="mock", model="counted")
    saved = value("llm_edge_cost_saved_usd_total", model="counted")
    # Without Redis the broker charges before its task yields, so the reply implies the count.
    miss = await ask(stack, body("count my tokens"), namespace)
    usage = msgspec.json.decode(miss.data)["usage"]
    for kind in ("prompt", "completion"):
        now = value("llm_edge_tokens_total", provider="mock", model="counted", type=kind, tenant="")
        assert now - tokens[kind] == usage[f"{kind}_tokens"]
    assert (
        value("llm_edge_request_duration_seconds_count", provider="mock", model="counted")
        == durations + 1
    )
    hit = await ask(stack, body("count my tokens"), namespace)
    assert hit.headers is not None
    assert hit.headers[headers.CACHE] == "HIT-L1"
    gained = value("llm_edge_cost_saved_usd_total", model="counted") - saved
    assert gained == pytest.approx(float(hit.headers[headers.COST_SAVED]))
    assert gained > 0


async def test_streams_count_duration_and_time_to_first_chunk(stack: Stack, namespace: str) -> None:
    """A streamed miss is observed once in the request duration and once in time to first
    chunk; its replay from cache in neither."""
    ttfc = value("llm_edge_time_to_first_token_seconds_count", provider="mock")
    durations = value("llm_edge_request_duration_seconds_count", provider="mock", model="counted")
    hdrs = {headers.CACHE_NAMESPACE: namespace}
    stream_me = {"model": "counted", "messages": [{"role": "user", "content": "stream me"}]}
    for _ in range(2):  # a miss, then a hit
        chunks = [c async for c in stream_chat(stack.nc, stream_me, request_headers=hdrs)]
        assert chunks
    assert value("llm_edge_time_to_first_token_seconds_count", provider="mock") == ttfc + 1
    assert (
        value("llm_edge_request_duration_seconds_count", provider="mock", model="counted")
        == durations + 1
    )


async def test_coalesced_followers_are_counted(stack: Stack, namespace: str) -> None:
    """Four callers of one request while it is in flight: three are counted as coalesced."""
    arrived: asyncio.Queue[Msg] = asyncio.Queue()
    await stack.nc.subscribe("llm.provider.held", cb=arrived.put)
    before = value("llm_edge_cache_coalesced_total")
    data = body("share me", model="held", temperature=0)
    leader = asyncio.ensure_future(ask(stack, data, namespace))
    forwarded = await asyncio.wait_for(arrived.get(), 10)
    followers = [asyncio.ensure_future(ask(stack, data, namespace)) for _ in range(3)]
    async with asyncio.timeout(10):  # each follower joins the leader's call
        while value("llm_edge_cache_coalesced_total") < before + 3:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    answer: dict[str, Any] = {
        "id": "chatcmpl-held",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "held",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "shared"},
                "finish_reason": "stop",
            }
        ],
    }
    await forwarded.respond(msgspec.json.encode(answer))
    replies = await asyncio.gather(leader, *followers)
    assert [(r.headers or {}).get(headers.COALESCED) for r in replies] == [None, "1", "1", "1"]
    assert value("llm_edge_cache_coalesced_total") == before + 3
    assert arrived.empty()  # one upstream call for the four


async def test_a_failover_counts_one_retry_and_one_failover(stack: Stack, namespace: str) -> None:
    """A deployment with no worker fails over to the next: one retry, one failover, and the
    reply says two attempts."""
    retries, failovers = value("llm_edge_retries_total"), value("llm_edge_failovers_total")
    reply = await ask(stack, body("fail over", model="failing"), namespace)
    assert reply.headers is not None
    assert (reply.headers[headers.STATUS], reply.headers[headers.ATTEMPTS]) == ("200", "2")
    assert reply.headers[headers.DEPLOYMENT] == "failing-mock"
    assert value("llm_edge_retries_total") == retries + 1
    assert value("llm_edge_failovers_total") == failovers + 1


async def test_worker_metrics_time_count_errors_and_in_flight(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """The worker times each upstream call, counts a failed one under its error kind, and
    shows calls in flight while the upstream works."""
    calls = value("llm_edge_worker_upstream_seconds_count", provider="up")
    refused = value("llm_edge_worker_upstream_errors_total", provider="up", kind="bad_request")
    idle = value("llm_edge_worker_upstream_in_flight", provider="up")
    fake_openai.script.append(Scripted(delay_s=0.3))
    pending = asyncio.ensure_future(ask(stack, body("slow", model="up"), namespace))
    async with asyncio.timeout(10):  # the upstream has the request: the call is in flight
        while not fake_openai.received:  # noqa: ASYNC110  (the fake has no event)
            await asyncio.sleep(0.01)
    assert value("llm_edge_worker_upstream_in_flight", provider="up") == idle + 1
    assert ((await pending).headers or {})[headers.STATUS] == "200"
    assert value("llm_edge_worker_upstream_in_flight", provider="up") == idle
    fake_openai.script.append(Scripted(status=400, body={"error": {"message": "no"}}))
    failed = await ask(stack, body("refused", model="up"), namespace)
    assert (failed.headers or {})[headers.STATUS] == "400"
    assert value("llm_edge_worker_upstream_seconds_count", provider="up") == calls + 2
    assert (
        value("llm_edge_worker_upstream_errors_total", provider="up", kind="bad_request")
        == refused + 1
    )
