"""A server of a 3-server NATS cluster dies under load: through the producer's retries,
every request gets one answer and the upstream hears each request id once.

Two brokers and two OpenAI-compatible workers run in this process, each pair on its own
server; the upstream is a fake OpenAI API on loopback that counts the calls per request id
(``x-client-request-id``, which the worker forwards). The requests are ``no-store``: no cache
answers a retry, so a second upstream call could not hide.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError

from broker.config import Config
from edge_client import RetryPolicy, request
from edge_runtime.process import close_quietly, connect
from schemas import headers
from tests.support.cluster import start_services
from tests.support.servers import EmbeddedCluster
from tests.support.stack import config_from
from tests.support.upstream import FakeOpenAI, Scripted

#: The producer's retry: an attempt is given up after 0.5 s, before the upstream answers, so
#: every request is sent at least twice and its attempts may reach both brokers.
RETRY = RetryPolicy(attempts=60, attempt_timeout_s=0.5, backoff_s=0.05, max_backoff_s=1.0)
#: How long the fake upstream takes per call: longer than an attempt waits.
UPSTREAM_DELAY_S = 0.7


def cluster_config(upstream: FakeOpenAI) -> Config:
    return config_from(f"""
        [nats]
        replicas = 3
        [batch]
        enabled = false
        [providers.up]
        kind = "openai_compatible"
        base_url = "{upstream.base_url}"
        [models.gpt]
        deployments = [{{ provider = "up", model = "gpt-4o-mini" }}]
    """)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.default = Scripted(delay_s=UPSTREAM_DELAY_S)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def producer(nats_cluster: EmbeddedCluster) -> AsyncIterator[Client]:
    """The producer's connection, on the third server (the one no test kills)."""
    nc = await connect(nats_cluster.urls[2], "producer")
    yield nc
    await close_quietly(nc)


async def test_a_node_killed_under_load_answers_each_request_once_with_one_upstream_call(
    nats_cluster: EmbeddedCluster, producer: Client, upstream: FakeOpenAI
) -> None:
    """SIGKILL the server of one broker and one worker while 300 no-store chat requests are
    in flight, 60 at a time, each tried again by its producer before the upstream answers:
    every request is answered 200 exactly once, and the upstream saw exactly one call per
    request id, however many attempts the producer made and whichever broker they reached.

    The producer is ``edge_client.request``, which asks for no keepalives and so resends an
    attempt after 0.5 s of waiting (EdgeClient would wait for a slow answer instead)."""
    services = await start_services(
        nats_cluster, cluster_config(upstream), homes=[0, 1], provider="up"
    )
    total, done = 300, 0
    quarter = asyncio.Event()
    slots = asyncio.Semaphore(60)
    answers: Counter[str] = Counter()
    failures: list[str] = []

    async def one(i: int) -> None:
        nonlocal done
        body = {"model": "gpt", "messages": [{"role": "user", "content": f"request {i}"}]}
        hdrs = {
            headers.REQUEST_ID: f"r-{i}",
            headers.CACHE_CONTROL: "no-store",
            headers.TIMEOUT_MS: "40000",
        }
        async with slots:
            try:
                msg = await request(
                    producer, msgspec.json.encode(body), request_headers=hdrs, retry=RETRY
                )
            except (TimeoutError, NoRespondersError) as exc:
                failures.append(f"r-{i}: {exc!r}")
                return
        status = (msg.headers or {}).get(headers.STATUS)
        if status != "200":
            failures.append(f"r-{i}: {status} {msg.data[:200]!r}")
            return
        answers[f"r-{i}"] += 1
        reply = msgspec.json.decode(msg.data)
        assert reply["choices"][0]["message"]["content"] == "upstream says hi to gpt-4o-mini"
        done += 1
        if done == total // 4:
            quarter.set()

    attempts: Counter[str] = Counter()

    async def spy(msg: Msg) -> None:  # every attempt the client published, by request id
        attempts[(msg.headers or {}).get(headers.REQUEST_ID, "?")] += 1

    await producer.subscribe("llm.chat", cb=spy)
    try:
        started = time.monotonic()
        running = asyncio.gather(*(one(i) for i in range(total)))
        async with asyncio.timeout(60):
            await quarter.wait()
        nats_cluster.nodes[0].kill()
        async with asyncio.timeout(90):
            await running
        calls = Counter(r.headers.get("x-client-request-id", "?") for r in upstream.received)
        retried = sum(1 for n in attempts.values() if n > 1)
        print(
            f"\n{total} requests, a server killed after {total // 4}: "
            f"{time.monotonic() - started:.1f} s, {retried} retried by the producer, "
            f"{len(upstream.received)} upstream calls"
        )
        assert failures == []
        assert answers == {f"r-{i}": 1 for i in range(total)}
        assert retried == total, "every request's first attempt gives up before the upstream"
        assert {rid: n for rid, n in calls.items() if n != 1} == {}
        assert set(calls) == {f"r-{i}" for i in range(total)}
    finally:
        await services.stop()
