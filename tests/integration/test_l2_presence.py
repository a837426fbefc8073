"""The NATS KV L2 skips reading keys it certainly does not hold, and never skips one it does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker.cache.l2 import GuardedL2
from broker.cache.l2_nats import NatsKVL2
from edge_runtime.process import close_quietly, connect


@pytest.fixture
async def two_brokers(nats_url: str, namespace: str) -> AsyncIterator[tuple[Client, Client, str]]:
    """Two connections (two brokers' worth) and a bucket of this test's own."""
    a = await connect(nats_url, "presence-a")
    b = await connect(nats_url, "presence-b")
    bucket = f"presence_{namespace}"
    yield a, b, bucket
    with contextlib.suppress(Exception):
        await a.jetstream().delete_key_value(bucket)
    await close_quietly(a)
    await close_quietly(b)


async def reads_counted(nc: Client, bucket: str) -> list[str]:
    """Every direct get of the bucket, as the server sees it requested."""
    seen: list[str] = []

    async def spy(msg: Msg) -> None:
        seen.append(msg.subject)

    await nc.subscribe(f"$JS.API.DIRECT.GET.KV_{bucket}.>", cb=spy)
    await nc.flush()
    return seen


async def eventually(check: object, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within the bound")


async def test_absent_keys_cost_no_round_trip_and_written_ones_are_read(
    two_brokers: tuple[Client, Client, str], namespace: str
) -> None:
    """On an empty bucket a miss reads nothing from the server; a key this broker wrote, and
    one another broker wrote, are read and found."""
    a, b, bucket = two_brokers
    first_l2, second_l2 = await NatsKVL2.open(a, bucket), await NatsKVL2.open(b, bucket)
    first, second = GuardedL2(first_l2, timeout_s=2), GuardedL2(second_l2, timeout_s=2)
    reads = await reads_counted(a, bucket)
    try:
        assert first_l2.presence.ready
        assert second_l2.presence.ready
        for i in range(50):
            assert await first.get(f"default:{namespace}:{i:064x}") is None
        await a.flush()
        assert reads == []  # fifty misses, no round trip

        mine, theirs = f"default:{namespace}:{1:064x}", f"default:{namespace}:{2:064x}"
        await first.set(mine, b"mine", ttl_s=60)

        async def mine_found() -> bool:
            return await first.get(mine) == b"mine"

        await eventually(mine_found)
        await second.set(theirs, b"theirs", ttl_s=60)

        async def theirs_found() -> bool:  # reaches the first broker through its consumer
            return await first.get(theirs) == b"theirs"

        await eventually(theirs_found)
        assert reads  # those were read from the server
    finally:
        await first_l2.aclose()
        await second_l2.aclose()


async def test_keys_stored_before_a_broker_starts_are_not_skipped(
    two_brokers: tuple[Client, Client, str], namespace: str
) -> None:
    """A broker that starts on a bucket already holding answers learns their keys first."""
    a, b, bucket = two_brokers
    writer = await NatsKVL2.open(a, bucket)
    stored = [f"default:{namespace}:{i:064x}" for i in range(300)]
    for key in stored:
        await writer.set(key, key.encode(), ttl_s=60)

    async def all_stored() -> bool:
        return await writer.get(stored[-1]) == stored[-1].encode()

    await eventually(all_stored)
    late = await NatsKVL2.open(b, bucket)
    try:

        async def caught_up() -> bool:
            return late.presence.ready

        await eventually(caught_up)
        assert not any(late.known_absent(key) for key in stored)
        assert [await late.get(key) for key in stored[:20]] == [k.encode() for k in stored[:20]]
        unknown = [f"default:{namespace}:{i:064x}" for i in range(1000, 1100)]
        assert sum(late.known_absent(key) for key in unknown) >= 99  # a Bloom filter: ~all
    finally:
        await writer.aclose()
        await late.aclose()
