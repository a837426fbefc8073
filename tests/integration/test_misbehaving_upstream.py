"""Load through a primary that misbehaves in every way, with a healthy fallback: no caller fails.

Over real NATS, a broker and workers, 300 requests (whole and streamed, 20 at a time) go to a
model whose primary answers 500, 429, hangs, resets the connection, answers a stream with an
HTML page, or a whole request with garbage, in turn; its breaker is reset at each new fault
and lets a probe through every 50 ms.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator

import msgspec
import pytest

from edge_client.chat import ChatStreamError, stream_chat
from schemas import headers
from tests.support.scripted_upstream import Answer, Sent, scripted_upstream
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI

REQUESTS = 300
CONCURRENCY = 20
FAULTS = {
    "500": lambda: Answer(status=500, json={"error": {"message": "boom"}}),
    "429": lambda: Answer(status=429, json={"error": {"message": "slow down"}}),
    "hang": lambda: Answer(delay_s=30),
    "reset": lambda: Answer(reset=True),
    "non-sse": lambda: Answer(text="<html>502</html>", headers={"content-type": "text/html"}),
    "garbage": lambda: Answer(text="{not json", headers={"content-type": "application/json"}),
}


class Faulty:
    """Answers with the fault of the moment; counts the calls it got."""

    def __init__(self) -> None:
        self.fault = "500"
        self.calls: Counter[str] = Counter()

    def __call__(self, sent: Sent) -> Answer:
        self.calls[self.fault] += 1
        return FAULTS[self.fault]()


@pytest.fixture
async def faulty() -> AsyncIterator[tuple[Faulty, str]]:
    upstream = Faulty()
    async with scripted_upstream(upstream) as base_url:
        yield upstream, base_url


@pytest.fixture
async def stack(
    nats_url: str, faulty: tuple[Faulty, str], fake_openai: FakeOpenAI, make_stack: StackFactory
) -> Stack:
    config = config_from(f"""
        [cache]
        enabled = false

        [resilience]
        max_attempts = 3
        backoff_initial_s = 0

        [breaker]
        failure_threshold = 3
        open_s = 0.05
        open_max_s = 0.05
        jitter = 0

        [providers.faulty]
        kind = "openai_compatible"
        base_url = "{faulty[1]}"

        [providers.healthy]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"

        [models.m]
        strategy = "failover"
        deployments = [
          {{ name = "primary", provider = "faulty", priority = 0, timeout_s = 0.5 }},
          {{ name = "fallback", provider = "healthy", priority = 1 }},
        ]
    """)
    return await make_stack(nats_url, config)


async def one(stack: Stack, index: int) -> str:
    """``ok`` or what went wrong for the caller."""
    body = {"model": "m", "messages": [{"role": "user", "content": f"q{index}"}]}
    if index % 2:
        try:
            chunks = [c async for c in stream_chat(stack.nc, {**body, "stream": True})]
        except ChatStreamError as exc:
            return f"stream {exc.status} {exc.code}"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return "ok" if text == "upstream streams to m" else f"stream text {text!r}"
    reply = await stack.nc.request("llm.chat", msgspec.json.encode(body), timeout=30)
    status = (reply.headers or {}).get(headers.STATUS)
    return "ok" if status == "200" else f"whole {status}"


async def test_a_misbehaving_primary_costs_callers_nothing(
    stack: Stack, faulty: tuple[Faulty, str]
) -> None:
    """300 requests through a primary cycling through six faults: every caller gets its answer."""
    upstream, _ = faulty
    outcomes: Counter[str] = Counter()
    order = itertools.cycle(FAULTS)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def run(index: int) -> None:
        async with gate:  # taken in order: the fault changes every 50 requests
            if index % (REQUESTS // len(FAULTS)) == 0:  # a new fault, met with a closed breaker
                upstream.fault = next(order)
                command = b'{"action": "reset", "deployment": "primary"}'
                await stack.nc.request("llm.admin.breaker", command, timeout=5)
            outcomes[await one(stack, index)] += 1

    await asyncio.gather(*(run(i) for i in range(REQUESTS)))
    print(f"\noutcomes {dict(outcomes)}; calls to the faulty primary {dict(upstream.calls)}")
    assert outcomes == {"ok": REQUESTS}
    assert set(upstream.calls) == set(FAULTS)  # every fault was met
