"""Admission that queues, through the real path: two brokers, a worker, and a fake provider
that enforces its own limits (calls in flight, requests per minute) and answers 429 past
them.

A flood waits for the deployment instead of being refused, in priority order and by tenant
weight; the brokers together stay under the provider's limits; routing sees what another
broker saw.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import msgspec
import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from broker.admission.classes import Priority
from broker.request import Reply
from broker.service import BrokerService
from broker.tenancy.tenants import hash_key
from broker.upstream.breaker import BreakerState
from edge_client.chat import stream_chat
from schemas import headers
from tests.support.stack import Stack, StackFactory, chat, config_from, one_upstream_config
from tests.support.upstream import FakeOpenAI, ProviderLimits, Scripted, running_fake

KEYS = {
    name: f"sk-le-test-{name}-{uuid.uuid4().hex}"
    for name in ("a", "b", "heavy", "light", "urgent", "bulk")
}
#: The provider's limits: calls in flight, requests per minute; and its latency.
CALLS, RPM, LATENCY_S = 8, 1200, 0.1


def tenants() -> str:
    return f"""
        [tenants.a]
        keys = ["{hash_key(KEYS["a"])}"]
        [tenants.b]
        keys = ["{hash_key(KEYS["b"])}"]
        max_priority = "interactive"
        [tenants.heavy]
        keys = ["{hash_key(KEYS["heavy"])}"]
        weight = 3
        [tenants.light]
        keys = ["{hash_key(KEYS["light"])}"]
        weight = 1
        [tenants.mixed]
        max_priority = "interactive"
        keys = [
            {{ hash = "{hash_key(KEYS["urgent"])}", priority = "interactive" }},
            {{ hash = "{hash_key(KEYS["bulk"])}", priority = "background" }},
        ]
    """


@pytest.fixture
async def limited_fake() -> AsyncIterator[FakeOpenAI]:
    async with running_fake(ProviderLimits(concurrency=CALLS, rpm=RPM)) as fake:
        fake.default = Scripted(delay_s=LATENCY_S)
        yield fake


async def two_brokers(make_stack: StackFactory, nats_url: str, fake: FakeOpenAI) -> Stack:
    limits = f"concurrency = {CALLS}, rpm = {RPM}"
    config = one_upstream_config(
        fake.base_url, limits, f"[admission]\nmax_wait_s = 120\n{tenants()}"
    )
    return await make_stack(nats_url, config, brokers=2)


async def ask(
    stack: Stack, tenant: str, text: str, priority: str | None = None
) -> tuple[int, float, dict[str, str]]:
    """One request: its status, its latency and its reply headers."""
    hdrs = {"Authorization": f"Bearer {KEYS[tenant]}", headers.TIMEOUT_MS: "120000"}
    if priority is not None:
        hdrs[headers.PRIORITY] = priority
    started = time.perf_counter()
    msg: Msg = await stack.nc.request("llm.chat", chat(f"{tenant} {text}", "m"), 130, headers=hdrs)
    elapsed = time.perf_counter() - started
    reply = msg.headers or {}
    return int(reply.get(headers.STATUS, "200")), elapsed, reply


async def steady(stack: Stack, count: int, every_s: float, phase: str) -> list[tuple[float, int]]:
    """Tenant b's interactive requests at a steady rate (each sent on time, whatever the
    others do); their latencies and queue times (ms)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i in range(count):
        delay = start + i * every_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the sender, not waiting for a result
        tasks.append(asyncio.create_task(ask(stack, "b", f"{phase} {i}", "interactive")))
    answers = await asyncio.gather(*tasks)
    assert [status for status, _, _ in answers] == [200] * count
    return [(elapsed, int(h[headers.QUEUE_MS])) for _, elapsed, h in answers]


def background_held(stack: Stack) -> int:
    """Permits the brokers' gates count for background requests now."""
    held = 0
    for broker in stack.brokers:
        assert broker.admission is not None
        for gate in broker.admission.gates.values():
            for pool in gate.pools:
                if pool is not None:
                    pool.free(time.monotonic())  # (the gates' clock: windowed permits age out)
                    held += pool.by_class[Priority.BACKGROUND]
    return held


def p99(samples: list[tuple[float, int]]) -> float:
    latencies = [latency for latency, _ in samples]
    return statistics.quantiles(latencies, n=100, method="inclusive")[98]


@pytest.mark.slow  # 20 s of paced traffic on purpose
@pytest.mark.alone  # its latency ratio would measure the other tests' load
@pytest.mark.timeout(120)
async def test_interactive_tenant_keeps_its_latency_while_background_flood_waits(
    nats_url: str, make_stack: StackFactory, limited_fake: FakeOpenAI
) -> None:
    """Two brokers, one deployment limited to 8 calls and 1200 requests a minute. Tenant a
    floods at 5x the deployment's capacity with background priority while tenant b sends
    interactive requests at a steady rate (8 a second): b's p99 stays within 1.5x its p99
    alone (same run: before and after the flood), every one of a's requests is answered as
    capacity frees (none refused), and the provider never answers 429 nor sees more than 8
    calls at once."""
    stack = await two_brokers(make_stack, nats_url, limited_fake)
    # b alone before and after the flood (the machine's load may drift: the flood is
    # bracketed), b beside the flood in between
    solo = await steady(stack, 40, 0.125, "solo before")

    capacity = RPM / 60 / 1.1  # requests a second the brokers may send
    flood_size = int(5 * capacity)  # one second of 5x the capacity

    async def flood() -> list[tuple[int, float, dict[str, str]]]:
        loop = asyncio.get_running_loop()
        start, tasks = loop.time(), []
        for i in range(flood_size):
            delay = start + i / flood_size - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the sender
            tasks.append(asyncio.create_task(ask(stack, "a", f"flood {i}", "background")))
        return await asyncio.gather(*tasks)

    flooding = asyncio.create_task(flood())
    shared = await steady(stack, 80, 0.125, "shared")
    flooded = await asyncio.wait_for(flooding, 120)
    # the flood's last request permits age out before b measures alone again (while they
    # are in their window, b's first requests after the flood would still meet it)
    while background_held(stack):  # noqa: ASYNC110  (the brokers' state, read)
        await asyncio.sleep(0.05)  # polling the brokers' permits, not waiting out a time
    solo += await steady(stack, 40, 0.125, "solo after")

    statuses = Counter(status for status, _, _ in flooded)
    assert statuses == {200: flood_size}, statuses
    waited = [int(h[headers.QUEUE_MS]) for _, _, h in flooded]
    assert max(waited) > 1000  # the flood did wait for capacity (it was 5x of it)
    assert limited_fake.too_many == 0
    assert limited_fake.peak <= CALLS
    slowest = (sorted(solo)[-3:], sorted(shared)[-3:])  # (latency s, queue ms)
    assert p99(shared) <= 1.5 * p99(solo), slowest


#: Requests each tenant floods with in the weighted-share test.
FLOOD = 200


@pytest.mark.alone  # its shares would measure the other tests' load
async def test_tenants_share_a_saturated_deployment_by_weight(
    nats_url: str, make_stack: StackFactory
) -> None:
    """Tenants of weights 3 and 1 flooding one deployment (4 calls at once) through two
    brokers together: while both have requests waiting, the provider serves them 3:1,
    within 10 %.

    Each broker serves its own queue by weight, so the mesh is 3:1 while every broker still
    holds requests of both tenants. The queue group hands each broker a random part of each
    tenant's flood: of 100 requests a tenant, one broker's part of the heavy one is 42 or
    fewer about one time in eight, and that broker runs out of it inside the window measured
    (the first 100 served, up to 60 of them by one broker) and serves light alone. Of 200 a
    tenant, a broker would need a part under 45 to run out inside the window: 8 sd away."""
    held = asyncio.Event()
    async with running_fake(ProviderLimits(concurrency=4)) as fake:
        # the first four calls hold the deployment until every other request waits: the
        # order after them is the queue's alone, not how fast the requests arrived
        fake.script.extend(Scripted(delay_s=60, release=held) for _ in range(4))
        fake.default = Scripted(delay_s=0.05)
        admission = f"[admission]\nmax_wait_s = 120\n{tenants()}"
        config = one_upstream_config(fake.base_url, "concurrency = 4", admission)
        stack = await make_stack(nats_url, config, brokers=2)
        floods = [
            asyncio.create_task(ask(stack, tenant, f"flood {i}"))
            for i in range(FLOOD)
            for tenant in ("heavy", "light")
        ]
        async with asyncio.timeout(60):  # a counter, no event to wait on
            while sum(b.admission.waiting for b in stack.brokers if b.admission) < 2 * FLOOD - 4:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        held.set()
        answers = await asyncio.gather(*floods)
        assert Counter(status for status, _, _ in answers) == {200: 2 * FLOOD}
        served = [r.body["messages"][0]["content"].split()[0] for r in fake.received]
        assert fake.too_many == 0
    # after the four held calls both tenants wait at both brokers, until a broker runs out
    # of the heavy tenant's requests (near 130 of its own served)
    window = Counter(served[4:104])
    ratio = window["heavy"] / window["light"]
    assert 2.7 <= ratio <= 3.3, (window, served[:40])


class Collect:
    """A reply sink that keeps the whole answer."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[tuple[int, dict[str, str]]] = (
            asyncio.get_running_loop().create_future()
        )

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        if not self.reply.done():
            self.reply.set_result((reply.status, {**meta, **reply.headers}))

    async def chunk(self, chunk: object, meta: dict[str, str]) -> None:
        """Not streamed."""

    async def end(self, end: object, meta: dict[str, str]) -> None:
        """Not streamed."""

    async def error(self, reply: Reply, meta: dict[str, str], *, streaming: bool) -> None:
        await self.whole(reply, meta)


async def through(broker: BrokerService, text: str) -> str:
    """Ask one broker (not the queue group) and return the deployment that answered."""
    assert broker.pipeline is not None
    sink = Collect()
    await broker.pipeline.handle(chat(text, "m"), {}, sink, reply_to=f"direct-{uuid.uuid4()}")
    status, reply = await asyncio.wait_for(sink.reply, 30)
    assert status == 200
    return reply[headers.DEPLOYMENT]


async def test_least_latency_steers_away_from_a_deployment_slow_under_another_brokers_traffic(
    nats_url: str, make_stack: StackFactory
) -> None:
    """Broker a measured deployment `first` fast. It then became slow under broker b's
    traffic alone: b's statistics reach a, and a's requests go to `second` without a having
    called `first` again."""
    async with running_fake() as first, running_fake() as second:
        first.default, second.default = Scripted(delay_s=0.01), Scripted(delay_s=0.05)
        config = config_from(f"""
            [cache]
            enabled = false
            [batch]
            enabled = false
            [admission]
            stats_s = 0.1
            stats_stale_s = 30
            [providers.one]
            kind = "openai_compatible"
            base_url = "{first.base_url}"
            [providers.two]
            kind = "openai_compatible"
            base_url = "{second.base_url}"
            [models.m]
            strategy = "least_latency"
            deployments = [
                {{ name = "first", provider = "one", model = "m" }},
                {{ name = "second", provider = "two", model = "m" }},
            ]
        """)
        stack = await make_stack(nats_url, config, brokers=2)
        a, b = stack.brokers
        for i in range(6):  # a measures both: first is the faster
            await through(a, f"a warm {i}")
        assert a.mesh is not None
        before = [await through(a, f"a before {i}") for i in range(10)]
        assert before.count("first") >= 8

        first.default = Scripted(delay_s=0.4)  # slow from now on, and only b sees it
        called_by_a = len(first.received)
        for i in range(8):
            await through(b, f"b {i}")

        by_name = {d.name: d for d in a.config.models["m"].deployments}
        assert a.router is not None
        async with asyncio.timeout(10):  # a hears b's reports (a few a second)
            while True:
                a.mesh.heard.clear()
                await a.mesh.heard.wait()
                if a.router.latency(by_name["first"]) > a.router.latency(by_name["second"]):
                    break
        after = [await through(a, f"a after {i}") for i in range(20)]
    assert after.count("second") >= 17, after
    assert len(first.received) - called_by_a >= 1  # b's traffic is what found it slow


async def test_a_request_that_cannot_wait_long_enough_is_refused_at_once(
    nats_url: str, make_stack: StackFactory
) -> None:
    """One call at a time, 0.3 s each, eight requests waiting: a request whose deadline is
    0.5 s away is refused before its deadline (503 ``at_capacity``, not a 504) with a
    Retry-After of when capacity is expected; the waiting requests are all answered."""
    async with running_fake(ProviderLimits(concurrency=1)) as fake:
        fake.default = Scripted(delay_s=0.3)
        stack = await make_stack(
            nats_url, one_upstream_config(fake.base_url, "concurrency = 1", tenants())
        )
        queued = [asyncio.create_task(ask(stack, "a", f"queued {i}")) for i in range(10)]
        await asyncio.wait(queued, return_when=asyncio.FIRST_COMPLETED)  # a call ended
        hdrs = {"Authorization": f"Bearer {KEYS['b']}", headers.TIMEOUT_MS: "500"}
        msg = await stack.nc.request("llm.chat", chat("b hurried", "m"), 10, headers=hdrs)
        answered = await asyncio.gather(*queued)
    reply = msg.headers or {}
    assert reply[headers.STATUS] == "503"
    assert msgspec.json.decode(msg.data)["error"]["code"] == "at_capacity"
    assert 1 <= float(reply[headers.RETRY_AFTER]) <= 10
    assert [status for status, _, _ in answered] == [200] * 10
    assert fake.too_many == 0


async def test_brokers_learn_a_providers_limits_from_its_headers_and_stay_under_them(
    nats_url: str, make_stack: StackFactory
) -> None:
    """A provider allows 120 requests a minute and says so in its headers; the configuration
    names no limit. After the first answer both brokers hold that limit between them: a
    burst of 16 waits for it instead of meeting the provider's 429."""
    async with running_fake(ProviderLimits(rpm=120, advertise=True)) as fake:
        admission = f"[admission]\nstats_s = 0.1\nmax_wait_s = 60\n{tenants()}"
        config = one_upstream_config(fake.base_url, 'name = "up"', admission)
        stack = await make_stack(nats_url, config, brokers=2)
        assert (await ask(stack, "a", "first"))[0] == 200
        async with asyncio.timeout(10):  # the other broker hears of the limit
            while not all(
                b.admission is not None and "up" in b.admission.limits for b in stack.brokers
            ):
                waiting = [b.mesh.heard for b in stack.brokers if b.mesh is not None]
                for event in waiting:
                    event.clear()
                await asyncio.wait(
                    [asyncio.create_task(e.wait()) for e in waiting],
                    return_when=asyncio.FIRST_COMPLETED,
                )
        answers = await asyncio.gather(*(ask(stack, "a", f"burst {i}") for i in range(16)))
    assert [status for status, _, _ in answers] == [200] * 16
    assert fake.too_many == 0
    assert max(int(h[headers.QUEUE_MS]) for _, _, h in answers) > 500


async def test_a_dead_brokers_share_returns_to_the_others(
    nats_url: str, make_stack: StackFactory
) -> None:
    """Broker a takes its share of a 4-call deployment and dies without giving it back (its
    connection closed under it). Once its lease runs out, broker b runs 4 calls at once."""
    async with running_fake(ProviderLimits(concurrency=4)) as fake:
        fake.default = Scripted(delay_s=0.3)
        config = one_upstream_config(fake.base_url, "concurrency = 4", "[admission]\nlease_s = 1.0")
        stack = await make_stack(nats_url, config, brokers=2)
        a, b = stack.brokers
        await asyncio.gather(*(through(a, f"a {i}") for i in range(4)))
        await a.nc.close()  # a dies: no more renewals, nothing given back
        fake.peak = 0
        answered = await asyncio.gather(*(through(b, f"b {i}") for i in range(12)))
    assert answered == ["m@up"] * 12
    assert fake.peak == 4  # all four calls at once: a's share came back
    assert fake.too_many == 0


async def test_the_queue_time_reaches_http_callers(nats_url: str, make_stack: StackFactory) -> None:
    """``Llm-Queue-Ms`` is on the bridge's HTTP answers: 0 for a request that found
    capacity (the broker holds its share since the first), more for one that waited for a
    busy deployment."""
    async with running_fake(ProviderLimits(concurrency=1)) as fake:
        fake.default = Scripted(delay_s=0.2)
        stack = await make_stack(
            nats_url, one_upstream_config(fake.base_url, "concurrency = 1"), bridge=True
        )
        assert stack.http is not None
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        first = await stack.http.post("/chat/completions", json={**body, "user": "first"})
        alone = await stack.http.post("/chat/completions", json=body)
        both = await asyncio.gather(
            *(stack.http.post("/chat/completions", json={**body, "user": str(i)}) for i in range(2))
        )
    assert [first.status_code, alone.status_code] == [200, 200]
    assert alone.headers["llm-queue-ms"] == "0"
    assert [r.status_code for r in both] == [200, 200]
    assert max(int(r.headers["llm-queue-ms"]) for r in both) >= 100


async def test_probes_find_a_failed_idle_deployment_and_its_recovery_before_requests_do(
    nats_url: str, make_stack: StackFactory
) -> None:
    """The primary deployment breaks while nobody uses it: its probes open its breaker, so
    the next request goes straight to the backup (one attempt, no failed call first). It
    recovers: a probe closes its breaker, and the next request is the primary's again."""
    async with running_fake() as primary, running_fake() as backup:
        config = config_from(f"""
            [cache]
            enabled = false
            [batch]
            enabled = false
            [breaker]
            failure_threshold = 2
            open_s = 0.3
            [providers.one]
            kind = "openai_compatible"
            base_url = "{primary.base_url}"
            [providers.two]
            kind = "openai_compatible"
            base_url = "{backup.base_url}"
            [models.m]
            strategy = "failover"
            deployments = [
                {{ name = "primary", provider = "one", model = "m", priority = 0, probe_s = 0.1 }},
                {{ name = "backup", provider = "two", model = "m", priority = 1 }},
            ]
        """)
        stack = await make_stack(nats_url, config)
        broker = stack.brokers[0]
        assert broker.prober is not None
        assert broker.router is not None
        prober = broker.prober
        by_name = {d.name: d for d in config.models["m"].deployments}
        primary_stats = broker.router.stats(by_name["primary"])

        async def probed_until(state: BreakerState) -> None:
            async with asyncio.timeout(15), prober.ended:
                await prober.ended.wait_for(lambda: primary_stats.breaker.state is state)

        primary.default = Scripted(status=500, body={"error": {"message": "down"}})
        await probed_until(BreakerState.OPEN)
        calls = len(primary.received)
        down = await ask_plain(stack, "while down")
        assert len(primary.received) == calls  # no request found out the hard way

        primary.default = Scripted()
        await probed_until(BreakerState.CLOSED)
        up = await ask_plain(stack, "after recovery")
    assert (down[headers.DEPLOYMENT], down[headers.ATTEMPTS]) == ("backup", "1")
    assert (up[headers.DEPLOYMENT], up[headers.ATTEMPTS]) == ("primary", "1")


async def ask_plain(stack: Stack, text: str) -> dict[str, str]:
    """One keyless request's reply headers (it must succeed)."""
    msg = await stack.nc.request("llm.chat", chat(text, "m"), 30)
    hdrs = msg.headers or {}
    assert hdrs.get(headers.STATUS, "200") == "200", msg.data
    return hdrs


async def test_waiting_requests_show_in_the_metrics(
    nats_url: str, make_stack: StackFactory
) -> None:
    """While requests wait for a one-call deployment, ``llm_edge_queue_depth`` counts them by
    gate, tenant and class; their waits land in ``llm_edge_queue_wait_seconds``."""
    async with running_fake(ProviderLimits(concurrency=1)) as fake:
        fake.default = Scripted(delay_s=0.2)
        sections = f"[broker]\ntenant_metrics = true\n{tenants()}"
        stack = await make_stack(
            nats_url, one_upstream_config(fake.base_url, "concurrency = 1", sections)
        )
        waits = {"tenant": "a", "class": "background"}
        counted = REGISTRY.get_sample_value("llm_edge_queue_wait_seconds_count", waits) or 0
        asking = [asyncio.create_task(ask(stack, "a", f"m {i}", "background")) for i in range(4)]
        depth = {"gate": "m@up", "tenant": "a", "class": "background"}
        async with asyncio.timeout(10):  # the three behind the first wait (a scrape is a
            # poll: the gauge has no event to wait on)
            while (REGISTRY.get_sample_value("llm_edge_queue_depth", depth) or 0) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        answers = await asyncio.gather(*asking)
    assert [status for status, _, _ in answers] == [200] * 4
    after = REGISTRY.get_sample_value("llm_edge_queue_wait_seconds_count", waits) or 0
    assert after - counted >= 3
    assert (REGISTRY.get_sample_value("llm_edge_queue_depth", depth) or 0) == 0


async def test_a_stream_holds_its_permit_until_it_ends(
    nats_url: str, make_stack: StackFactory
) -> None:
    """Streams through a one-call deployment run one after another: a stream's permit is
    held from its first chunk to its end, then the next waiting stream starts."""
    async with running_fake(ProviderLimits(concurrency=1)) as fake:
        fake.default = Scripted(chunk_delay_s=0.05)
        stack = await make_stack(nats_url, one_upstream_config(fake.base_url, "concurrency = 1"))

        async def stream(i: int) -> str:
            body = {"model": "m", "messages": [{"role": "user", "content": f"s{i}"}]}
            chunks = [c async for c in stream_chat(stack.nc, {**body, "stream": True})]
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        texts = await asyncio.gather(*(stream(i) for i in range(3)))
    assert texts == ["upstream streams to m"] * 3
    assert fake.peak == 1
    assert fake.too_many == 0


async def test_embeddings_wait_for_their_deployments_limits(
    make_stack: StackFactory, nats_url: str
) -> None:
    """Embeddings calls take their deployment's permits as chat calls do: six requests at once
    to a deployment of one call in flight all succeed, the provider never sees two at once nor
    answers a 429, and the later ones say they waited (``Llm-Queue-Ms``)."""
    async with running_fake(ProviderLimits(concurrency=1)) as fake:
        fake.default = Scripted(delay_s=LATENCY_S)
        config = one_upstream_config(
            fake.base_url, "concurrency = 1", "[admission]\nmax_wait_s = 60", model="e"
        )
        stack = await make_stack(nats_url, config)
        hdrs = {headers.TIMEOUT_MS: "60000"}
        replies = await asyncio.gather(
            *(
                stack.nc.request(
                    "llm.embeddings",
                    msgspec.json.encode({"model": "e", "input": f"text {i}"}),
                    timeout=70,
                    headers=hdrs,
                )
                for i in range(6)
            )
        )
        statuses = [int((r.headers or {}).get(headers.STATUS, "200")) for r in replies]
        assert statuses == [200] * 6
        assert (fake.peak, fake.too_many) == (1, 0)
        waited = [int((r.headers or {})[headers.QUEUE_MS]) for r in replies]
        assert max(waited) >= LATENCY_S * 1000


async def test_a_keys_default_priority_orders_its_requests(
    nats_url: str, make_stack: StackFactory
) -> None:
    """Two keys of one tenant, one whose requests default to interactive and one to
    background, neither sending ``Llm-Priority``: at a full one-call deployment the
    interactive key's request waits in the interactive class and goes before the background
    key's earlier ones."""
    held = asyncio.Event()
    async with running_fake(ProviderLimits(concurrency=1)) as fake:
        fake.script.append(Scripted(delay_s=60, release=held))  # holds the one call
        config = config_from(f"""
            [cache]
            enabled = false
            [batch]
            enabled = false
            [broker]
            tenant_metrics = true
            [providers.up]
            kind = "openai_compatible"
            base_url = "{fake.base_url}"
            [models.m]
            deployments = [{{ provider = "up", model = "m", concurrency = 1 }}]
            {tenants()}
        """)
        stack = await make_stack(nats_url, config)
        done: list[str] = []

        async def send(key: str, text: str) -> int:
            status, _, _ = await ask(stack, key, text)
            done.append(key)
            return status

        def depth(klass: str) -> float:
            labels = {"gate": "m@up", "tenant": "mixed", "class": klass}
            return REGISTRY.get_sample_value("llm_edge_queue_depth", labels) or 0

        first = asyncio.create_task(send("bulk", "first"))
        async with asyncio.timeout(10):
            while not fake.received:  # noqa: ASYNC110 (the fake's list has no event)
                await asyncio.sleep(0.01)
        later = [asyncio.create_task(send("bulk", f"later {i}")) for i in range(3)]
        async with asyncio.timeout(10):
            while depth("background") < 3:  # noqa: ASYNC110 (a gauge has no event)
                await asyncio.sleep(0.01)
        urgent = asyncio.create_task(send("urgent", "now"))
        async with asyncio.timeout(10):
            while depth("interactive") < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        held.set()
        statuses = await asyncio.gather(first, *later, urgent)
    assert statuses == [200] * 5
    assert done[:2] == ["bulk", "urgent"], done
