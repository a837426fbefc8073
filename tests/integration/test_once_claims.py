"""Workers' claims on idempotent calls (``workers.once``) in a real NATS KV bucket."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest
from nats.aio.client import Client

from broker.repeats import create_once_bucket
from edge_runtime.process import close_quietly, connect
from schemas import headers
from schemas.jetstream import ONCE_BUCKET
from workers import once
from workers.once import Answer, OnceClaims


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect(nats_url, "once-test")
    await create_once_bucket(client, 1)
    yield client
    await close_quietly(client)


async def bound(nc: Client) -> OnceClaims:
    """A worker's claims, its bucket looked up (as a worker does at start)."""
    claims = OnceClaims(nc, "up")
    assert await claims.bind() is not None
    return claims


async def run(claims: OnceClaims, key: str, budget_s: float, upstream: Upstream) -> Answer:
    """What ``claims.run`` sends."""
    sent: list[Answer] = []

    async def send(answer: Answer) -> None:
        sent.append(answer)

    await claims.run(key, budget_s, upstream, send)
    assert len(sent) == 1
    return sent[0]


class Upstream:
    """Counts its calls; each takes ``delay_s`` (or, given ``release``, until it is set) and
    answers ``status``. ``called`` is set once a call has begun (its claim is taken)."""

    def __init__(
        self, status: int = 200, delay_s: float = 0.2, release: asyncio.Event | None = None
    ) -> None:
        self.calls, self.status, self.delay_s, self.release = 0, status, delay_s, release
        self.called = asyncio.Event()

    async def __call__(self) -> Answer:
        self.calls += 1
        self.called.set()
        if self.release is not None:
            async with asyncio.timeout(10):
                await self.release.wait()
        else:
            await asyncio.sleep(self.delay_s)
        return self.status, f"answer {self.calls}".encode(), {"X-Mark": str(self.calls)}


async def test_attempts_on_two_workers_share_one_call(nc: Client) -> None:
    """The attempt that claims first calls the upstream; one arriving meanwhile on another
    worker waits for that answer, and one arriving later is answered from the bucket."""
    key, upstream = uuid.uuid4().hex, Upstream()
    first, second = await bound(nc), await bound(nc)
    running = asyncio.create_task(run(first, key, 10, upstream))
    await asyncio.sleep(0.05)
    joined = await run(second, key, 10, upstream)
    led = await running
    later = await run(await bound(nc), key, 10, upstream)
    assert upstream.calls == 1
    assert led == (200, b"answer 1", {"X-Mark": "1"})
    assert joined == later == (200, b"answer 1", {"X-Mark": "1", headers.REPLAYED: "1"})


async def test_a_retryable_failure_lets_the_next_attempt_run(nc: Client) -> None:
    """A 503 answer is not kept: the next attempt calls the upstream itself."""
    key, failing = uuid.uuid4().hex, Upstream(status=503, delay_s=0)
    claims = await bound(nc)
    assert (await run(claims, key, 5, failing))[0] == 503
    working = Upstream(delay_s=0)
    assert (await run(claims, key, 5, working))[0] == 200
    assert (failing.calls, working.calls) == (1, 1)


async def test_a_cancelled_call_releases_its_claim(nc: Client) -> None:
    """A call cancelled mid-way (its caller left) lets the next attempt run."""
    key = uuid.uuid4().hex
    claims = await bound(nc)
    slow = asyncio.create_task(run(claims, key, 10, Upstream(delay_s=5)))
    await asyncio.sleep(0.1)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    retry = Upstream(delay_s=0)
    assert (await run(claims, key, 5, retry))[0] == 200
    assert retry.calls == 1


async def test_a_claim_whose_lease_passed_is_taken_over(nc: Client) -> None:
    """A claim left by a worker that died (its lease passed) does not block a retry."""
    key = uuid.uuid4().hex
    kv = await nc.jetstream().key_value(ONCE_BUCKET)
    await kv.create(key, msgspec.msgpack.encode({"lease": time.time() - 1}))
    retry = Upstream(delay_s=0)
    assert (await run(await bound(nc), key, 5, retry))[0] == 200
    assert retry.calls == 1


async def test_a_long_call_keeps_its_claim_by_renewing_it(
    nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that outlasts several leases renews its claim: an attempt waiting meanwhile is
    answered from it instead of taking the claim over."""
    monkeypatch.setattr(once, "LEASE_S", 0.5)
    monkeypatch.setattr(once, "RENEW_S", 0.15)
    key, upstream = uuid.uuid4().hex, Upstream(delay_s=1.6)
    running = asyncio.create_task(run(await bound(nc), key, 10, upstream))
    await asyncio.sleep(0.05)
    joined = await run(await bound(nc), key, 10, upstream)
    assert (await running)[1] == joined[1] == b"answer 1"
    assert upstream.calls == 1


async def test_a_wait_ends_at_the_attempt_s_own_deadline(nc: Client) -> None:
    """An attempt waiting on a claim still running past its own deadline answers 504 without
    calling the upstream."""
    key, upstream = uuid.uuid4().hex, Upstream(release=asyncio.Event())
    running = asyncio.create_task(run(await bound(nc), key, 10, upstream))
    async with asyncio.timeout(5):
        await upstream.called.wait()
    started = time.monotonic()
    status, _, _ = await run(await bound(nc), key, 0.5, upstream)
    assert status == 504
    assert time.monotonic() - started < 2.5  # not held until the first call's answer (below)
    assert upstream.release is not None
    upstream.release.set()
    assert (await running)[0] == 200
    assert upstream.calls == 1
