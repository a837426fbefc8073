"""Overload is shed fairly: when a broker is full, the tenant over its share of
``max_in_flight`` is refused first (503, Retry-After) and a quiet tenant keeps being served."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from broker.tenancy.tenants import hash_key
from tests.support.stack import Stack, StackFactory, chat, config_from

KEY_NOISY, KEY_QUIET = (f"sk-le-test-{n}-{uuid.uuid4().hex}" for n in ("noisy", "quiet"))
MAX_IN_FLIGHT = 8


@pytest.fixture
async def stack(nats_url: str, make_stack: StackFactory) -> Stack:
    config = config_from(f"""
        [broker]
        max_in_flight = {MAX_IN_FLIGHT}
        [cache]
        enabled = false
        [batch]
        enabled = false
        [tenants.noisy]
        keys = ["{hash_key(KEY_NOISY)}"]
        [tenants.quiet]
        keys = ["{hash_key(KEY_QUIET)}"]
        [providers.mock]
        kind = "mock"
        latency_ms = 100
        max_concurrency = 256
        [models.mock]
        deployments = [{{ provider = "mock" }}]
    """)
    return await make_stack(nats_url, config)


async def ask(stack: Stack, key: str, text: str) -> tuple[int, dict[str, str]]:
    msg = await stack.nc.request(
        "llm.chat", chat(text), timeout=15, headers={"Authorization": f"Bearer {key}"}
    )
    hdrs = msg.headers or {}
    return int(hdrs.get("Llm-Status", "200")), hdrs


async def test_lone_tenant_may_use_every_slot(stack: Stack) -> None:
    """A tenant alone gets all max_in_flight slots at once: nothing is shed."""
    answers = await asyncio.gather(
        *(ask(stack, KEY_NOISY, f"alone {i}") for i in range(MAX_IN_FLIGHT))
    )
    assert [status for status, _ in answers] == [200] * MAX_IN_FLIGHT


async def test_noisy_tenant_is_shed_while_quiet_one_is_served(stack: Stack) -> None:
    """While one tenant floods a full broker, it gets 503s with Retry-After (and still some
    answers); the quiet tenant's requests all succeed."""
    quiet_done = asyncio.Event()
    noisy: Counter[int] = Counter()
    retry_after: set[str] = set()

    async def flood() -> None:
        wave = 0
        while not quiet_done.is_set():
            answers = await asyncio.gather(
                *(ask(stack, KEY_NOISY, f"flood {wave}-{i}") for i in range(4 * MAX_IN_FLIGHT))
            )
            for status, hdrs in answers:
                noisy[status] += 1
                if status == 503:
                    retry_after.add(hdrs.get("Retry-After", ""))
            wave += 1

    flooding = asyncio.create_task(flood())
    quiet = []
    for i in range(20):
        quiet.append((await ask(stack, KEY_QUIET, f"quiet {i}"))[0])
    quiet_done.set()
    await asyncio.wait_for(flooding, 30)

    assert quiet == [200] * 20
    assert noisy[503] > 0
    assert noisy[200] > 0
    assert retry_after == {"1"}
