"""A full broker queues fairly: when every ``max_in_flight`` slot is taken, requests wait for
one in their tenants' fair order (a quiet tenant goes before a flooding one), and a request
that may not wait is refused at once with an honest ``Retry-After``."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import msgspec
import pytest

from broker.tenancy.tenants import hash_key
from tests.support.stack import Stack, StackFactory, chat, config_from

KEY_NOISY, KEY_QUIET = (f"sk-le-test-{n}-{uuid.uuid4().hex}" for n in ("noisy", "quiet"))
MAX_IN_FLIGHT = 8


def config(max_wait_s: float) -> str:
    return f"""
        [broker]
        max_in_flight = {MAX_IN_FLIGHT}
        [admission]
        max_wait_s = {max_wait_s}
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
    """


@pytest.fixture
async def stack(nats_url: str, make_stack: StackFactory) -> Stack:
    return await make_stack(nats_url, config_from(config(60)))


async def ask(stack: Stack, key: str, text: str) -> tuple[int, dict[str, str], bytes]:
    msg = await stack.nc.request(
        "llm.chat", chat(text), timeout=30, headers={"Authorization": f"Bearer {key}"}
    )
    hdrs = msg.headers or {}
    return int(hdrs.get("Llm-Status", "200")), hdrs, msg.data


async def test_lone_tenant_may_use_every_slot(stack: Stack) -> None:
    """A tenant alone gets all max_in_flight slots at once: nobody waits."""
    answers = await asyncio.gather(
        *(ask(stack, KEY_NOISY, f"alone {i}") for i in range(MAX_IN_FLIGHT))
    )
    assert [status for status, _, _ in answers] == [200] * MAX_IN_FLIGHT
    assert {hdrs["Llm-Queue-Ms"] for _, hdrs, _ in answers} == {"0"}


async def test_quiet_tenant_goes_before_a_flooding_one_and_the_flood_waits(stack: Stack) -> None:
    """While one tenant floods a full broker with 4x its slots, the quiet tenant's requests
    wait at most for the next free slot; every flooding request waits its turn and is
    answered (none refused)."""
    quiet_done = asyncio.Event()
    noisy: Counter[int] = Counter()
    noisy_waits: list[int] = []

    async def flood() -> None:
        wave = 0
        while not quiet_done.is_set():
            answers = await asyncio.gather(
                *(ask(stack, KEY_NOISY, f"flood {wave}-{i}") for i in range(4 * MAX_IN_FLIGHT))
            )
            for status, hdrs, _ in answers:
                noisy[status] += 1
                noisy_waits.append(int(hdrs["Llm-Queue-Ms"]))
            wave += 1

    flooding = asyncio.create_task(flood())
    quiet = []
    for i in range(20):
        quiet.append(await ask(stack, KEY_QUIET, f"quiet {i}"))
    quiet_done.set()
    await asyncio.wait_for(flooding, 60)

    assert [status for status, _, _ in quiet] == [200] * 20
    assert set(noisy) == {200}
    quiet_waits = [int(hdrs["Llm-Queue-Ms"]) for _, hdrs, _ in quiet]
    # the flood's later requests wait for three waves of slots; the quiet tenant for one slot
    assert max(noisy_waits) > 150
    assert max(quiet_waits) < max(noisy_waits) / 2, (quiet_waits, max(noisy_waits))


async def test_a_full_broker_refuses_at_once_what_may_not_wait(
    nats_url: str, make_stack: StackFactory
) -> None:
    """With ``max_wait_s = 0``, requests past the broker's slots are refused at once: 503
    ``at_capacity`` with a Retry-After of at least a second."""
    stack = await make_stack(nats_url, config_from(config(0)))
    answers = await asyncio.gather(
        *(ask(stack, KEY_NOISY, f"burst {i}") for i in range(4 * MAX_IN_FLIGHT))
    )
    statuses = Counter(status for status, _, _ in answers)
    assert statuses[200] >= MAX_IN_FLIGHT
    assert statuses[503] > 0
    refused = [(hdrs, body) for status, hdrs, body in answers if status == 503]
    assert {msgspec.json.decode(body)["error"]["code"] for _, body in refused} == {"at_capacity"}
    assert all(float(hdrs["Retry-After"]) >= 1 for hdrs, _ in refused)
