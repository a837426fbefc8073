"""Fair share between tenants: one tenant's large batch does not hold up another's small one,
on two brokers pulling the same queues; within a tenant, a high-priority batch goes first."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from broker.tenancy.tenants import hash_key
from tests.support.batch import FINAL, lines, purge_batch_queue, wait_status
from tests.support.stack import Stack, StackFactory, config_from

KEY_BIG, KEY_SMALL = (f"sk-le-test-{n}-{uuid.uuid4().hex}" for n in ("big", "small"))
BIG_LINES, SMALL_LINES = 3000, 100


@pytest.fixture
async def stack(nats_url: str, make_stack: StackFactory) -> AsyncIterator[Stack]:
    config = config_from(f"""
        [cache]
        enabled = false
        [batch]
        poll_s = 0.1
        concurrency = 8
        [tenants.big]
        keys = ["{hash_key(KEY_BIG)}"]
        max_priority = "high"
        [tenants.small]
        keys = ["{hash_key(KEY_SMALL)}"]
        [providers.mock]
        kind = "mock"
        latency_ms = 40
        max_concurrency = 256
        [models.mock]
        deployments = [{{ provider = "mock" }}]
    """)
    running = await make_stack(nats_url, config, brokers=2)
    await purge_batch_queue(running.nc)
    yield running
    await purge_batch_queue(running.nc)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def submit(stack: Stack, key: str, n: int, prefix: str, priority: str = "") -> str:
    hdrs = auth(key) | ({"Llm-Priority": priority} if priority else {})
    body = {"lines": lines(n, prefix=prefix), "endpoint": "/v1/chat/completions"}
    reply = await stack.nc.request(
        "llm.batch.submit", msgspec.json.encode(body), timeout=30, headers=hdrs
    )
    return str(msgspec.json.decode(reply.data)["id"])


async def run_to_end(stack: Stack, key: str, n: int, prefix: str) -> tuple[float, dict[str, Any]]:
    """Submit a batch; seconds until it is final, and its final object."""
    started = time.monotonic()
    batch_id = await submit(stack, key, n, prefix)
    done = await wait_status(stack.nc, batch_id, FINAL, hdrs=auth(key))
    return time.monotonic() - started, done


async def seconds_for(stack: Stack, batch_id: str, count: int) -> float:
    """Seconds until ``count`` more lines of a batch have completed (its progress events)."""
    started = time.monotonic()
    sub = await stack.nc.subscribe(f"llm.batch.events.*.{batch_id}")
    try:
        body = msgspec.json.encode({"id": batch_id})
        reply = await stack.nc.request("llm.batch.get", body, timeout=5, headers=auth(KEY_BIG))
        target = msgspec.json.decode(reply.data)["request_counts"]["completed"] + count
        current: dict[str, Any] = {"request_counts": {"completed": 0}}
        while current["request_counts"]["completed"] < target:
            current = msgspec.json.decode((await sub.next_msg(timeout=30)).data)
        return time.monotonic() - started
    finally:
        await sub.unsubscribe()


async def completed(stack: Stack, batch_id: str, key: str) -> int:
    """Lines of a batch completed so far."""
    body = msgspec.json.encode({"id": batch_id})
    reply = await stack.nc.request("llm.batch.get", body, timeout=5, headers=auth(key))
    return int(msgspec.json.decode(reply.data)["request_counts"]["completed"])


async def test_small_batch_is_not_held_up_by_another_tenants_flood(stack: Stack) -> None:
    """With big's 3,000-line batch running on two brokers, small's 100-line batch gets its
    share of the slots at once: while it runs, big completes at most three lines for each of
    small's (first come, first served would run big's ~2,800 queued lines first), and big
    goes on once small is done. Counted in lines, not seconds: the machine's speed does not
    enter it."""
    big = await submit(stack, KEY_BIG, BIG_LINES, "big")
    await seconds_for(stack, big, 200)  # big has every slot of both brokers
    big_before = await completed(stack, big, KEY_BIG)
    _, shared = await run_to_end(stack, KEY_SMALL, SMALL_LINES, "shared")
    big_during = await completed(stack, big, KEY_BIG) - big_before
    await seconds_for(stack, big, 300)  # big's lines keep completing after small is done
    print(f"while small ran its {SMALL_LINES} lines, big completed {big_during}")

    assert shared["request_counts"]["completed"] == SMALL_LINES
    assert big_during <= 3 * SMALL_LINES
    status = await stack.nc.request(
        "llm.batch.get", msgspec.json.encode({"id": big}), timeout=5, headers=auth(KEY_BIG)
    )
    assert msgspec.json.decode(status.data)["status"] == "in_progress"


async def test_high_priority_batch_goes_before_the_same_tenants_backfill(stack: Stack) -> None:
    """A tenant's high-priority batch, sent after its low-priority backfill started, finishes
    while most of the backfill is still queued."""
    backfill = await submit(stack, KEY_BIG, BIG_LINES, "backfill", priority="low")
    await seconds_for(stack, backfill, 50)
    urgent = await submit(stack, KEY_BIG, SMALL_LINES, "urgent", priority="high")
    done = await wait_status(stack.nc, urgent, FINAL, hdrs=auth(KEY_BIG))
    assert done["status"] == "completed"
    body = msgspec.json.encode({"id": backfill})
    current = msgspec.json.decode(
        (await stack.nc.request("llm.batch.get", body, timeout=5, headers=auth(KEY_BIG))).data
    )
    assert current["request_counts"]["completed"] < BIG_LINES / 2
