"""The console's data, read from its JSON API as the page reads it, against real servers:
the shared L2's size (a NATS KV bucket, and Redis), the bridge among the services, and each
deployment's latency over the last minute merged across two brokers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
from nats.aio.msg import Msg

from tests.support.servers import EmbeddedNats, RedisServer
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted

PATIENCE_S = 10.0


def mock_config(cache: str, provider: str = "") -> str:
    """One mock deployment, the ``[cache]`` table given, batches off."""
    return f"""
        [cache]
        {cache}
        [batch]
        enabled = false
        [providers.mock]
        kind = "mock"
        {provider}
        [models.mock]
        deployments = [{{ provider = "mock" }}]
    """


async def chat(stack: Stack, content: str, *, cache: bool = True) -> httpx.Response:
    assert stack.http is not None
    reply = await stack.http.post(
        "/chat/completions",
        json={"model": "mock", "messages": [{"role": "user", "content": content}]},
        headers={} if cache else {"Cache-Control": "no-cache"},
    )
    assert reply.status_code == 200, reply.text
    return reply


async def state_when(stack: Stack, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The console's state once ``check`` holds (the console polls the mesh, so it may take
    a poll or two); the last state seen when it never does."""
    assert stack.http is not None
    url = f"http://127.0.0.1:{stack.http.base_url.port}/console/api/state"
    state: dict[str, Any] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE_S
    while loop.time() < deadline:
        reply = await stack.http.get(url)
        assert reply.status_code == 200, reply.text  # no keys: open on loopback
        state = reply.json()
        if check(state):
            return state
        await asyncio.sleep(0.3)
    return state


def l2_size(state: dict[str, Any]) -> tuple[Any, ...]:
    cache = state["cache"] or {}
    return tuple(cache.get(k) for k in ("l2_backend", "l2_entries", "l2_bytes", "l2_scope"))


async def test_cache_panel_counts_the_nats_kv_bucket(
    own_nats: EmbeddedNats, make_stack: StackFactory
) -> None:
    """Three distinct misses are three entries of the bucket, with their bytes; a purge from
    the console empties it."""
    config = config_from(mock_config('l2 = "nats"'))
    stack = await make_stack(own_nats.url, config, bridge=True)
    empty = await state_when(stack, lambda s: l2_size(s)[1] == 0)
    assert l2_size(empty) == ("nats-kv", 0, 0, "cache")
    for n in range(3):
        assert (await chat(stack, f"kv {n}")).headers["x-cache"] == "MISS"
    full = await state_when(stack, lambda s: l2_size(s)[1] == 3)
    backend, entries, size, scope = l2_size(full)
    assert (backend, entries, scope) == ("nats-kv", 3, "cache")
    assert size > 3 * 100  # three stored replies, each a chat completion
    assert stack.http is not None
    purged = await stack.http.post(
        f"http://127.0.0.1:{stack.http.base_url.port}/console/api/purge",
        json={"all": True},
        headers={"X-Llm-Console": "1"},  # as the console page sends it
    )
    assert purged.status_code == 200, purged.text
    after = await state_when(stack, lambda s: l2_size(s)[1] == 0)
    assert l2_size(after)[1:3] == (0, 0)


async def test_cache_panel_sizes_the_redis_database(
    nats_url: str, own_redis: RedisServer, make_stack: StackFactory
) -> None:
    """With Redis as L2 the console shows the database's keys and memory, and says so."""
    # the panel is what is tested: an L2 write that a loaded machine makes slower than the
    # product's 50 ms bound would be dropped, and the count never reached
    config = config_from(mock_config('l2 = "redis"\n        l2_timeout_s = 5'))
    stack = await make_stack(nats_url, config, redis_url=own_redis.url, bridge=True)
    before = await state_when(stack, lambda s: l2_size(s)[1] is not None)
    assert l2_size(before)[0::3] == ("redis", "database")
    for n in range(3):
        assert (await chat(stack, f"redis {n}")).headers["x-cache"] == "MISS"
    start = l2_size(before)[1]
    after = await state_when(stack, lambda s: l2_size(s)[1] == start + 3)
    backend, entries, size, scope = l2_size(after)
    assert (backend, entries, scope) == ("redis", start + 3, "database")
    assert size > 100_000  # used_memory: a Redis server's own heap is most of it


async def test_the_bridge_is_listed_beside_brokers_and_workers(
    nats_url: str, make_stack: StackFactory
) -> None:
    """The bridge answers $SRV.PING and llm.status.bridge, and the console lists it with the
    HTTP requests it answered."""
    config = config_from(mock_config('l2 = "off"'))
    stack = await make_stack(nats_url, config, bridge=True)
    inbox = stack.nc.new_inbox()
    names: set[str] = set()
    everyone = asyncio.Event()

    async def on_pong(msg: Msg) -> None:
        names.add(msgspec.json.decode(msg.data)["name"])
        if {"llm-edge-bridge", "llm-edge-broker", "llm-edge-worker-mock"} <= names:
            everyone.set()

    sub = await stack.nc.subscribe(inbox, cb=on_pong)
    await stack.nc.publish("$SRV.PING", b"", reply=inbox)
    async with asyncio.timeout(PATIENCE_S):
        await everyone.wait()
    await sub.unsubscribe()
    status = msgspec.json.decode((await stack.nc.request("llm.status.bridge", timeout=5)).data)
    assert set(status) == {"in_flight", "requests"}

    for n in range(5):
        await chat(stack, f"counted {n}")

    def bridge_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
        return [s for s in state["services"] if s["role"] == "bridge"]

    own_id = await bridge_id(stack)

    def counted(state: dict[str, Any]) -> bool:
        rows = [r for r in bridge_rows(state) if r["id"] == own_id]
        return bool(rows) and rows[0]["requests"] >= status["requests"] + 5

    state = await state_when(stack, counted)
    (row,) = [r for r in bridge_rows(state) if r["id"] == own_id]
    assert row["state"] == "up"
    assert row["requests"] >= status["requests"] + 5  # and the console's own polls
    assert row["in_flight"] >= 1  # the console's request being answered
    assert row["rate_of"] == "requests"


async def bridge_id(stack: Stack) -> str:
    """This stack's bridge's micro service id."""
    assert stack.bridge is not None
    return stack.bridge.service_id


async def test_deployment_latency_is_the_last_minute_of_both_brokers(
    nats_url: str, make_stack: StackFactory
) -> None:
    """Answers given by two brokers add up in one row; p50 and p99 come from their merged
    histograms and fit the upstream's 30 ms; the rate and the mean in flight are there."""
    config = config_from(mock_config("enabled = false", "latency_ms = 30"))
    stack = await make_stack(nats_url, config, brokers=2, bridge=True)
    await asyncio.gather(*(chat(stack, f"timed {n}", cache=False) for n in range(40)))

    def row_of(state: dict[str, Any]) -> dict[str, Any]:
        return next(d for d in state["deployments"] if d["deployment"] == "mock@mock")

    state = await state_when(stack, lambda s: row_of(s)["answered"] >= 40)
    row = row_of(state)
    assert row["answered"] == 40
    assert row["brokers"] == {"closed": 2}
    assert 0.03 <= row["p50_s"] <= row["p99_s"] < 1.0
    assert row["error_rate"] == 0.0
    assert row["rate"] > 0
    assert row["mean_in_flight"] > 0
    assert 0 < row["window_s"] <= 60
    inbox = stack.nc.new_inbox()
    sub = await stack.nc.subscribe(inbox, max_msgs=2)
    await stack.nc.publish("llm.admin.status", b"", reply=inbox)
    per_broker = []
    for _ in range(2):
        reply = msgspec.json.decode((await sub.next_msg(timeout=5)).data)
        per_broker.append(reply["deployments"]["mock@mock"]["answered"])
    assert min(per_broker) > 0  # both brokers answered some of the 40
    assert sum(per_broker) == 40


async def test_admission_panel_shows_who_waits_and_the_shares_of_a_limit(
    nats_url: str, make_stack: StackFactory, fake_openai: FakeOpenAI
) -> None:
    """While requests wait for a one-call deployment, the console's admission panel counts
    them by tenant and class and where they wait, and shows the deployment's limit held by
    the broker calling it; once answered, the waits of the last minute."""
    calling = asyncio.Event()  # the first call holds the deployment until the panel was read
    fake_openai.script.append(Scripted(delay_s=60, release=calling))
    fake_openai.default = Scripted(delay_s=0.3)
    config = config_from(f"""
        [cache]
        enabled = false
        [batch]
        enabled = false
        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"
        [models.mock]
        deployments = [{{ provider = "up", model = "mock", concurrency = 1 }}]
    """)
    stack = await make_stack(nats_url, config, bridge=True, brokers=2)
    assert stack.http is not None
    body = {"model": "mock", "messages": [{"role": "user", "content": "wait"}]}
    asking = [
        asyncio.create_task(
            stack.http.post(
                "/chat/completions",
                json={**body, "user": str(i)},
                headers={"Llm-Priority": "background"},
            )
        )
        for i in range(4)
    ]

    def waiting(state: dict[str, Any]) -> int:
        rows = state["admission"]["queues"]
        return sum(r["waiting"] for r in rows if r["class"] == "background")

    def held(state: dict[str, Any]) -> int:
        return sum(r["held"] or 0 for r in state["admission"]["shares"])

    busy = await state_when(stack, lambda s: waiting(s) == 3 and held(s) == 1)
    calling.set()
    replies = await asyncio.gather(*asking)
    assert [r.status_code for r in replies] == [200] * 4
    row = next(r for r in busy["admission"]["queues"] if r["class"] == "background")
    assert row["tenant"] == "default"
    assert set(row["where"]) == {"mock@up"}
    assert busy["admission"]["shares"] == [
        {
            "deployment": "mock@up",
            "pool": "calls",
            "limit": 1,
            "held": 1,
            "brokers": 1,
            "paused_s": 0.0,
        }
    ]
    after = await state_when(
        stack, lambda s: sum(r["waited"] for r in s["admission"]["queues"]) >= 3
    )
    waited = next(r for r in after["admission"]["queues"] if r["class"] == "background")
    assert waited["p99_s"] >= 0.2
