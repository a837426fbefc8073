"""A 3-server NATS cluster losing a server (SIGKILL) under load: nothing is lost.

Two brokers and two workers run in this process, each connected to its own server of a real
cluster (``nats_cluster``) and learning the others from it; the client is on another one.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout

from broker.cache.l2 import DEFAULT_L2_RETRY_INTERVAL_S
from broker.cache.l2_nats import NatsKVL2
from broker.cache.settings import DEFAULT_L2_TIMEOUT_S
from edge_client import RetryPolicy, request
from edge_runtime.batch_store import BatchStore
from edge_runtime.process import close_quietly, connect
from schemas import headers
from schemas.jetstream import CACHE_BUCKET, LINES_STREAM
from tests.support.batch import lines
from tests.support.cluster import CHAT_CONFIG, start_services
from tests.support.servers import EmbeddedCluster
from tests.support.stack import config_from

BATCH_CONFIG = """
    [nats]
    replicas = 3
    [cache]
    enabled = false
    [batch]
    ack_wait_s = 2        # a line whose ack was lost with the server comes back after 2 s
    poll_s = 0.2
    concurrency = 32
    [providers.mock]
    kind = "mock"
    [models.mock]
    deployments = [{ provider = "mock" }]
"""
#: The client's retry: an attempt whose reply went down with a server is given up quickly.
RETRY = RetryPolicy(attempts=6, attempt_timeout_s=3.0, backoff_s=0.1, max_backoff_s=1.0)


@pytest.fixture
async def client(nats_cluster: EmbeddedCluster) -> AsyncIterator[Client]:
    """The producer, on the third server (the one no test kills)."""
    nc = await connect(nats_cluster.urls[2], "producer")
    yield nc
    await close_quietly(nc)


async def test_a_server_killed_under_load_loses_no_request(
    nats_cluster: EmbeddedCluster, client: Client
) -> None:
    """SIGKILL the server of one broker and one worker while 400 chat requests are in
    flight, 40 at a time: with the client's retry (same X-Request-Id) every one is answered
    200, and each reply names the request id its attempts shared."""
    services = await start_services(nats_cluster, config_from(CHAT_CONFIG), homes=[0, 1])
    total, done = 400, 0
    halfway = asyncio.Event()
    slots = asyncio.Semaphore(40)

    async def one(i: int) -> tuple[str, str]:
        nonlocal done
        body = msgspec.json.encode(
            {"model": "mock", "messages": [{"role": "user", "content": f"request {i}"}]}
        )
        async with slots:
            reply = await request(
                client, body, request_headers={headers.REQUEST_ID: f"r-{i}"}, retry=RETRY
            )
        done += 1
        if done == total // 4:
            halfway.set()
        hdrs = reply.headers or {}
        return hdrs.get(headers.STATUS, "?"), hdrs.get(headers.REQUEST_ID, "?")

    attempts: Counter[str] = Counter()

    async def spy(msg: Msg) -> None:  # every attempt published, by request id
        attempts[(msg.headers or {}).get(headers.REQUEST_ID, "?")] += 1

    await client.subscribe("llm.chat", cb=spy)
    try:
        started = time.monotonic()
        running = asyncio.gather(*(one(i) for i in range(total)))
        async with asyncio.timeout(30):
            await halfway.wait()
        nats_cluster.nodes[0].kill()
        async with asyncio.timeout(45):
            answers = await running
        retried = sum(1 for n in attempts.values() if n > 1)
        print(
            f"\n{total} requests, a server killed after {total // 4}: "
            f"{time.monotonic() - started:.1f} s, {retried} retried by the client"
        )
        assert Counter(status for status, _ in answers) == {"200": total}
        assert [rid for _, rid in answers] == [f"r-{i}" for i in range(total)]
    finally:
        await services.stop()


async def test_a_server_killed_mid_batch_loses_and_duplicates_no_line(
    nats_cluster: EmbeddedCluster, client: Client
) -> None:
    """SIGKILL a server (with a broker and a worker on it) while a 2,000-line R3 batch runs:
    the batch ends with every custom_id exactly once in its output or error file; the server
    restarted catches up and JetStream is whole again (every R3 asset current on 3 servers)."""
    services = await start_services(nats_cluster, config_from(BATCH_CONFIG), homes=[0, 1])
    count = 2000
    try:
        submit = {"lines": lines(count), "endpoint": "/v1/chat/completions"}
        reply = await request(
            client, msgspec.json.encode(submit), subject="llm.batch.submit", retry=RETRY
        )
        batch_id = msgspec.json.decode(reply.data)["id"]
        events = await client.subscribe(f"llm.batch.events.*.{batch_id}")
        progress = await completed_at_least(events, 300)
        assert progress < count, "the server must be killed mid-batch"
        nats_cluster.nodes[0].kill()
        killed_at = time.monotonic()
        final = await final_state(client, events, batch_id)
        assert final["status"] == "completed", final
        counts = final["request_counts"]
        print(
            f"\nbatch of {count}: server killed at {progress} completed; finished "
            f"{time.monotonic() - killed_at:.1f} s later, {counts}"
        )
        assert counts["total"] == count
        assert counts["completed"] + counts["failed"] == count
        ids = await custom_ids(client, final)
        assert set(ids) == {f"req-{i}" for i in range(count)}
        assert set(ids.values()) == {1}
        nats_cluster.restart(0)
        await until_whole(
            client, [LINES_STREAM, "KV_llm_edge_batches", "KV_llm_edge_batch_results"]
        )
    finally:
        await services.stop()


async def completed_at_least(events: Any, wanted: int) -> int:
    """The completed count of the first progress event at or past ``wanted``."""
    async with asyncio.timeout(40):
        while True:
            event = msgspec.json.decode((await events.next_msg(timeout=40)).data)
            if event["request_counts"]["completed"] >= wanted:
                return int(event["request_counts"]["completed"])


async def final_state(nc: Client, events: Any, batch_id: str) -> dict[str, Any]:
    """Follow the batch's events until it is final (its current state asked first, with the
    client's retry: the brokers answer 503 while the cluster elects new leaders)."""
    body = msgspec.json.encode({"id": batch_id})
    current = msgspec.json.decode(
        (await request(nc, body, subject="llm.batch.get", retry=RETRY)).data
    )
    async with asyncio.timeout(50):
        while current.get("status") not in {"completed", "failed", "expired", "cancelled"}:
            current = msgspec.json.decode((await events.next_msg(timeout=50)).data)
    return current  # type: ignore[no-any-return]


async def custom_ids(nc: Client, final: dict[str, Any]) -> Counter[str]:
    """How often each custom_id appears across the output and error files."""
    store = await BatchStore.open(nc)
    ids: Counter[str] = Counter()
    for key in ("output_file_id", "error_file_id"):
        if not final.get(key):
            continue
        ids.update(json.loads(line)["custom_id"] for line in await read_file(store, final[key]))
    return ids


async def read_file(store: BatchStore, file_id: str) -> list[bytes]:
    """A file's lines. Reading creates a consumer, a JetStream API call that times out while
    the cluster, a server just killed, is still electing its leaders: tried again, bounded."""
    for attempt in range(6):
        with tempfile.TemporaryFile() as out:
            try:
                await store.read_file(file_id, out)  # type: ignore[arg-type]
            except NatsTimeout:
                if attempt == 5:
                    raise
                await asyncio.sleep(1)
                continue
            out.seek(0)
            return out.readlines()
    raise AssertionError("unreachable")


async def until_whole(nc: Client, streams: list[str]) -> None:
    """Until every stream has a leader and two current followers (the restarted server has
    caught up), and a write through JetStream is stored and read back."""
    js = nc.jetstream()
    async with asyncio.timeout(30):
        for stream in streams:
            while True:  # JetStream announces no such event: ask until it is so
                cluster = (await js.stream_info(stream)).cluster
                peers = (cluster.replicas or []) if cluster is not None else []
                if cluster and cluster.leader and len([p for p in peers if p.current]) == 2:
                    break
                await asyncio.sleep(0.1)
    kv = await js.key_value("llm_edge_batches")
    await kv.put("probe.after-restart", b"1")
    assert (await kv.get("probe.after-restart")).value == b"1"


async def until_readable(l2: NatsKVL2, key: str) -> None:
    """Until three reads in a row of ``key`` return its answer within the L2 guard's read
    timeout, as a broker's read must to be a hit."""
    answered = 0
    async with asyncio.timeout(15):
        while answered < 3:  # JetStream announces no such event: ask until it is so
            try:
                async with asyncio.timeout(DEFAULT_L2_TIMEOUT_S):
                    found = await l2.get(key) is not None
            except (TimeoutError, NatsError):
                found = False
            answered = answered + 1 if found else 0
            await asyncio.sleep(0.05)


L2_CONFIG = """
    [nats]
    replicas = 3
    [cache]
    l2 = "nats"
    l1_ttl_s = 0.01       # every hit after the first moments must come from the shared tier
    [batch]
    enabled = false
    [providers.mock]
    kind = "mock"
    [models.mock]
    deployments = [{ provider = "mock" }]
"""


async def test_l2_keeps_serving_hits_while_a_server_is_down(
    nats_cluster: EmbeddedCluster, client: Client
) -> None:
    """An answer stored in the R3 NATS KV L2 is still a hit after a server of the cluster is
    SIGKILLed: the surviving replicas serve it, no upstream call is made."""
    services = await start_services(nats_cluster, config_from(L2_CONFIG), homes=[0, 1])
    body = msgspec.json.encode(
        {"model": "mock", "messages": [{"role": "user", "content": "kept in three places"}]}
    )

    async def answered() -> dict[str, str]:
        reply = await request(client, body, retry=RETRY)
        hdrs = reply.headers or {}
        assert hdrs.get(headers.STATUS) == "200", reply.data
        return hdrs

    async def ask() -> str:
        return (await answered())[headers.CACHE]

    try:
        first = await answered()
        assert first[headers.CACHE] == "MISS"
        async with asyncio.timeout(10):  # the write-back lands after the first reply
            while await ask() != "HIT-L2":  # noqa: ASYNC110  (no event for a KV write)
                await asyncio.sleep(0.05)
        nats_cluster.nodes[0].kill()
        # The bucket's stream elects a new leader among the survivors (about two seconds, on
        # these machines); a broker whose read fails meanwhile skips L2 for the guard's retry
        # interval. Once the bucket answers reads again and every such interval has run out,
        # the failover is over: from then on the surviving replicas serve every read.
        await until_readable(NatsKVL2(client, CACHE_BUCKET), first[headers.CACHE_KEY])
        await asyncio.sleep(DEFAULT_L2_RETRY_INTERVAL_S + 0.2)
        hits = []
        for _ in range(5):
            await asyncio.sleep(0.03)  # past the 10 ms L1 TTL: the answer must come from L2
            hits.append(await ask())
        assert hits == ["HIT-L2"] * 5
    finally:
        await services.stop()
