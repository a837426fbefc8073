"""The cache tiers end to end: real nats-server, real redis-server, real brokers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import textwrap
import time
from collections.abc import AsyncIterator

import msgspec
import pytest
import redis.asyncio as redis
from nats.js import api
from prometheus_client import REGISTRY
from redis.asyncio.client import PubSub

from broker.cache.l2_nats import NatsKVL2
from broker.cache.l2_redis import KEY_PREFIX
from broker.tenancy.tenants import hash_key
from edge_runtime.process import close_quietly, connect
from schemas import headers
from schemas.jetstream import CACHE_BUCKET
from tests.support.cache import chat, config
from tests.support.cli import run_cli
from tests.support.servers import RedisServer
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted


@contextlib.asynccontextmanager
async def keyspace_events(client: redis.Redis, event: str) -> AsyncIterator[PubSub]:
    """Subscribe to Redis keyevent notifications (``set``, ``expired``) for db 0."""
    await client.config_set("notify-keyspace-events", "KEA")
    pubsub = client.pubsub()
    await pubsub.subscribe(f"__keyevent@0__:{event}")
    try:
        yield pubsub
    finally:
        await pubsub.aclose()


async def wait_for_key(pubsub: PubSub, fragment: str) -> bool:
    """Wait until a notification names a key containing ``fragment``."""
    async for message in pubsub.listen():
        if message["type"] == "message" and fragment in message["data"].decode():
            return True
    return False


def l1_hits() -> float:
    return REGISTRY.get_sample_value("llm_edge_cache_hits_total", {"tier": "l1"}) or 0.0


async def ask(stack: Stack, body: bytes, namespace: str, **hdrs: str) -> tuple[int, str, bytes]:
    msg = await stack.nc.request(
        "llm.chat", body, timeout=10, headers={headers.CACHE_NAMESPACE: namespace, **hdrs}
    )
    assert msg.headers is not None
    return int(msg.headers[headers.STATUS]), msg.headers[headers.CACHE], msg.data


@pytest.fixture
async def stack(
    nats_url: str, redis_server: RedisServer, fake_openai: FakeOpenAI, make_stack: StackFactory
) -> Stack:
    return await make_stack(
        nats_url, config_from(config(fake_openai.base_url)), redis_url=redis_server.url
    )


async def test_l1_hit_serves_without_upstream_call(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """The second identical request is an L1 hit with the same body; upstream is called once."""
    hits_before = l1_hits()
    first = await ask(stack, chat("hello"), namespace)
    second = await ask(stack, chat("hello", user="someone-else", stream=False), namespace)
    assert first[:2] == (200, "MISS")
    assert second[:2] == (200, "HIT-L1")
    assert second[2] == first[2]
    alias = await ask(stack, chat("hello", model="m-alias"), namespace)
    assert alias[1] == "HIT-L1"  # aliases share the model's entries
    assert len(fake_openai.received) == 1
    assert l1_hits() - hits_before == 2


async def test_l2_hit_in_another_broker_process(
    nats_url: str,
    redis_server: RedisServer,
    fake_openai: FakeOpenAI,
    namespace: str,
    make_stack: StackFactory,
) -> None:
    """An answer cached by one broker is an L2 hit for a broker that never saw it."""
    cfg = config_from(config(fake_openai.base_url))
    first = await make_stack(nats_url, cfg, redis_url=redis_server.url)
    assert (await ask(first, chat("shared"), namespace))[1] == "MISS"
    await first.stop()
    second = await make_stack(nats_url, cfg, redis_url=redis_server.url)
    assert (await ask(second, chat("shared"), namespace))[1] == "HIT-L2"
    assert (await ask(second, chat("shared"), namespace))[1] == "HIT-L1"  # L2 filled L1
    assert len(fake_openai.received) == 1


async def test_namespaces_are_isolated(stack: Stack, namespace: str) -> None:
    """An entry written in one namespace is a miss in another."""
    assert (await ask(stack, chat("iso"), namespace))[1] == "MISS"
    assert (await ask(stack, chat("iso"), namespace + "x"))[1] == "MISS"
    assert (await ask(stack, chat("iso"), namespace))[1] == "HIT-L1"


async def test_cache_control_directives(
    stack: Stack, fake_openai: FakeOpenAI, redis_server: RedisServer, namespace: str
) -> None:
    """no-store writes nothing, no-cache skips the read but writes, max-age sets the TTL."""
    cc = headers.CACHE_CONTROL
    assert (await ask(stack, chat("a"), namespace, **{cc: "no-store"}))[1] == "MISS"
    assert (await ask(stack, chat("a"), namespace))[1] == "MISS"  # nothing was stored
    assert (await ask(stack, chat("a"), namespace, **{cc: "no-cache"}))[1] == "MISS"
    assert len(fake_openai.received) == 3  # no-cache went upstream although an entry existed
    assert (await ask(stack, chat("a"), namespace))[1] == "HIT-L1"
    assert (await ask(stack, chat("a"), namespace, **{cc: "no-cache, no-store"}))[1] == "BYPASS"

    client = redis.Redis.from_url(redis_server.url)
    try:
        async with keyspace_events(client, "expired") as expired:
            msg = await stack.nc.request(
                "llm.chat",
                chat("short-lived"),
                timeout=10,
                headers={headers.CACHE_NAMESPACE: namespace, cc: "max-age=1"},
            )
            assert msg.headers is not None
            key = KEY_PREFIX + msg.headers[headers.CACHE_KEY]
            ttl = await client.ttl(key)
            assert 0 < ttl <= 1
            assert await asyncio.wait_for(wait_for_key(expired, key), 5)
    finally:
        await client.aclose()


async def test_errors_are_never_cached(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """A failed upstream answer is not stored: the next identical request goes upstream."""
    fake_openai.script.append(Scripted(status=400, body={"error": {"message": "boom"}}))
    assert (await ask(stack, chat("flaky"), namespace))[0] == 400
    status, cache, _ = await ask(stack, chat("flaky"), namespace)
    assert (status, cache) == (200, "MISS")


async def test_identical_concurrent_requests_coalesce(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """100 identical concurrent requests make exactly one upstream call and all get its answer."""
    fake_openai.default = Scripted(delay_s=0.5)
    replies = await asyncio.gather(*(ask(stack, chat("same"), namespace) for _ in range(100)))
    assert len(fake_openai.received) == 1
    assert {status for status, _, _ in replies} == {200}
    assert len({body for _, _, body in replies}) == 1


async def until_upstream_called(fake_openai: FakeOpenAI, calls: int = 1) -> None:
    async with asyncio.timeout(10):
        while len(fake_openai.received) < calls:  # noqa: ASYNC110  (the fake has no event)
            await asyncio.sleep(0.01)


async def test_follower_outlives_a_cancelled_leader(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """A leader cancelled by its caller does not hand a 500 to its follower: it runs again."""
    fake_openai.default = Scripted(delay_s=0.5)
    inbox = stack.nc.new_inbox()
    await stack.nc.publish(  # the leader's caller leaves (never reads its reply)
        "llm.chat",
        chat("cancel me"),
        reply=inbox,
        headers={headers.CACHE_NAMESPACE: namespace, headers.REQUEST_ID: f"lead-{namespace}"},
    )
    await until_upstream_called(fake_openai)
    follower = asyncio.ensure_future(ask(stack, chat("cancel me"), namespace))
    await asyncio.sleep(0.05)  # the follower joins the leader in flight
    await stack.nc.publish("llm.cancel", f"lead-{namespace}".encode(), reply=inbox)
    status, _, body = await follower
    assert status == 200, body
    assert len(fake_openai.received) == 2  # the follower's own run


async def test_follower_keeps_its_own_deadline(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str
) -> None:
    """A follower with a short budget gets its 504 at its deadline, not the leader's answer."""
    answered = asyncio.Event()  # the leader's upstream answers once the follower has its 504
    fake_openai.default = Scripted(delay_s=5.0, release=answered)
    leader = asyncio.ensure_future(ask(stack, chat("slow"), namespace))
    await until_upstream_called(fake_openai)
    status, _, body = await ask(stack, chat("slow"), namespace, **{headers.TIMEOUT_MS: "200"})
    assert status == 504, body
    answered.set()
    assert (await leader)[0] == 200


async def test_coalesced_requests_write_their_log_line(
    stack: Stack, fake_openai: FakeOpenAI, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every caller's request is in the request log, the coalesced copy marked as such."""
    caplog.set_level(logging.INFO, logger="llm_edge.requests")
    fake_openai.default = Scripted(delay_s=1.0)
    ids = [f"{namespace}-{i}" for i in range(2)]
    leader = asyncio.ensure_future(
        ask(stack, chat("log me"), namespace, **{headers.REQUEST_ID: ids[0]})
    )
    await until_upstream_called(fake_openai)  # the follower joins while the leader waits
    await ask(stack, chat("log me"), namespace, **{headers.REQUEST_ID: ids[1]})
    await leader

    def lines() -> dict[str, dict[str, object]]:
        return {
            r.fields["request_id"]: r.fields  # type: ignore[attr-defined]
            for r in caplog.records
            if getattr(r, "fields", {}).get("request_id") in ids
        }

    async with asyncio.timeout(5):  # each line is written as its reply goes out
        while set(lines()) != set(ids):  # noqa: ASYNC110  (log records have no event)
            await asyncio.sleep(0.01)
    assert sorted(bool(f.get("coalesced")) for f in lines().values()) == [False, True]


async def test_redis_outage_and_recovery(
    nats_url: str,
    fake_openai: FakeOpenAI,
    namespace: str,
    own_redis: RedisServer,
    make_stack: StackFactory,
) -> None:
    """Killing Redis under traffic fails no request; L2 comes back by itself after a restart."""
    server = own_redis
    cfg = config_from(config(fake_openai.base_url))
    stack = await make_stack(nats_url, cfg, redis_url=server.url)
    assert (await ask(stack, chat("before"), namespace))[0] == 200
    statuses: list[int] = []

    async def traffic(lane: int) -> None:
        for i in range(40):
            statuses.append((await ask(stack, chat(f"during {lane} {i}"), namespace))[0])

    lanes = [asyncio.ensure_future(traffic(lane)) for lane in range(8)]
    while len(statuses) < 20:  # Redis dies with requests in flight
        done, _ = await asyncio.wait(lanes, timeout=0.01)
        for lane in done:  # a lane that failed early fails the test (no endless wait)
            lane.result()
    server.kill()
    await asyncio.gather(*lanes)
    assert statuses == [200] * 320
    assert REGISTRY.get_sample_value("llm_edge_cache_l2_errors_total") >= 1
    server.start()  # same port
    client = redis.Redis.from_url(server.url)
    try:
        async with keyspace_events(client, "set") as sets:
            waiter = asyncio.ensure_future(wait_for_key(sets, namespace))
            try:
                deadline = time.monotonic() + 10
                i = 0
                while not waiter.done() and time.monotonic() < deadline:
                    i += 1
                    assert (await ask(stack, chat(f"after {i}"), namespace))[0] == 200
                    await asyncio.wait([waiter], timeout=0.05)
                assert waiter.done(), "L2 did not come back after Redis restarted"
            finally:
                waiter.cancel()  # never leave a reader on a connection being closed
    finally:
        await client.aclose()


async def test_nats_kv_l2_when_no_redis(
    nats_url: str, fake_openai: FakeOpenAI, namespace: str, make_stack: StackFactory
) -> None:
    """Without Redis, L2 is a JetStream KV bucket shared by brokers; the admin purge of a
    namespace empties it and the broker's L1 alike (nothing purged by hand)."""
    cfg = config_from(config(fake_openai.base_url, l2="nats"))
    first = await make_stack(nats_url, cfg)
    assert first.brokers[0].l2_name == "nats-kv"
    assert (await ask(first, chat("kv"), namespace))[1] == "MISS"
    await first.stop()
    second = await make_stack(nats_url, cfg)
    assert (await ask(second, chat("kv"), namespace))[1] == "HIT-L2"
    purge = await second.nc.request(
        "llm.admin.cache.purge", msgspec.json.encode({"namespace": namespace}), timeout=5
    )
    assert msgspec.json.decode(purge.data)["purged"]["l1"] == 1  # the L2 hit's L1 copy
    assert (await ask(second, chat("kv"), namespace))[1] == "MISS"  # L1 and L2 purged


async def test_nats_kv_l2_bucket_is_bounded_in_bytes(
    nats_url: str, fake_openai: FakeOpenAI, namespace: str, make_stack: StackFactory
) -> None:
    """cache.l2_nats_max_bytes bounds the KV bucket a broker creates (or finds unbounded),
    and a full bucket drops its oldest entries rather than refusing writes."""
    bound = 1024 * 1024
    cfg = config_from(config(fake_openai.base_url, l2="nats", extra=f"l2_nats_max_bytes = {bound}"))
    running = await make_stack(nats_url, cfg)
    js = running.nc.jetstream()
    stream = (await js.stream_info(f"KV_{CACHE_BUCKET}")).config
    assert stream.max_bytes == bound
    assert stream.discard == api.DiscardPolicy.OLD
    assert (await ask(running, chat("bounded"), namespace))[1] == "MISS"


async def test_full_nats_kv_l2_keeps_the_newest_entries(nats_url: str, namespace: str) -> None:
    """Writing past the byte bound never fails: the oldest entries make room."""
    nc = await connect(nats_url, "test-l2-bound")
    bucket = f"bounded_{namespace}"
    try:
        l2 = await NatsKVL2.open(nc, bucket, max_bytes=64 * 1024)
        value = b"x" * 1024
        for i in range(200):
            await l2.set(f"default:{namespace}:{i:064x}", value, ttl_s=60)
        newest = f"default:{namespace}:{199:064x}"
        for _ in range(500):  # writes are not acknowledged: stored a moment later
            if await l2.get(newest) == value:
                break
            await asyncio.sleep(0.01)
        assert await l2.get(newest) == value
        assert await l2.get(f"default:{namespace}:{0:064x}") is None
    finally:
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_key_value(bucket)
        await close_quietly(nc)


async def test_bypass_policy_for_sampled_requests(
    nats_url: str, fake_openai: FakeOpenAI, namespace: str, make_stack: StackFactory
) -> None:
    """With nondeterministic = "bypass", sampled requests are never cached; temperature 0 is."""
    cfg = config_from(config(fake_openai.base_url, l2="off", extra='nondeterministic = "bypass"'))
    stack = await make_stack(nats_url, cfg)
    assert (await ask(stack, chat("s"), namespace))[1] == "BYPASS"
    assert (await ask(stack, chat("s"), namespace))[1] == "BYPASS"
    assert (await ask(stack, chat("s", temperature=0), namespace))[1] == "MISS"
    assert (await ask(stack, chat("s", temperature=0), namespace))[1] == "HIT-L1"


async def test_http_bridge_carries_cache_headers(
    nats_url: str,
    redis_server: RedisServer,
    fake_openai: FakeOpenAI,
    namespace: str,
    make_stack: StackFactory,
) -> None:
    """Over HTTP, Cache-Control and the namespace header work and X-Cache is returned."""
    cfg = config_from(config(fake_openai.base_url))
    stack = await make_stack(nats_url, cfg, redis_url=redis_server.url, bridge=True)
    assert stack.http is not None
    body = {"model": "m", "messages": [{"role": "user", "content": "http"}]}
    hdrs = {"X-Cache-Namespace": namespace}
    first = await stack.http.post("/chat/completions", json=body, headers=hdrs)
    second = await stack.http.post("/chat/completions", json=body, headers=hdrs)
    third = await stack.http.post(
        "/chat/completions", json=body, headers={**hdrs, "Cache-Control": "no-cache"}
    )
    assert [r.headers["x-cache"] for r in (first, second, third)] == ["MISS", "HIT-L1", "MISS"]
    assert second.json() == first.json()


@pytest.mark.process
async def test_cli_purges_a_tenants_namespace(
    nats_url: str,
    redis_server: RedisServer,
    fake_openai: FakeOpenAI,
    namespace: str,
    make_stack: StackFactory,
) -> None:
    """``llm-edge cache purge --namespace NS --tenant T`` empties T's namespace (L1 and L2);
    without ``--tenant`` it purges the default tenant's and leaves T's entries alone."""
    extra = f'[tenants.acme]\nkeys = ["{hash_key("k-acme")}"]'
    cfg = config_from(config(fake_openai.base_url) + textwrap.indent(extra, " " * 8))
    stack = await make_stack(nats_url, cfg, redis_url=redis_server.url)
    acme = {headers.AUTHORIZATION: "Bearer k-acme"}

    async def purge(*args: str) -> dict[str, int]:
        out, _ = await run_cli("cache", "purge", "--nats-url", nats_url, *args)
        purged: dict[str, int] = json.loads(out)["purged"]
        return purged

    client = redis.Redis.from_url(redis_server.url)
    try:
        async with keyspace_events(client, "set") as sets:
            assert (await ask(stack, chat("p"), namespace, **acme))[1] == "MISS"
            async with asyncio.timeout(5):  # L2 is written after the reply went out
                await wait_for_key(sets, f"acme:{namespace}:")
        assert (await ask(stack, chat("p"), namespace, **acme))[1] == "HIT-L1"
        assert await purge("--namespace", namespace) == {"l1": 0, "l2": 0}
        assert (await ask(stack, chat("p"), namespace, **acme))[1] == "HIT-L1"
        assert await purge("--namespace", namespace, "--tenant", "acme") == {"l1": 1, "l2": 1}
        assert (await ask(stack, chat("p"), namespace, **acme))[1] == "MISS"
        assert len(fake_openai.received) == 2
    finally:
        await client.aclose()
