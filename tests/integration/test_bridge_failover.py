"""The HTTP bridge on a 3-server NATS cluster losing a server (SIGKILL) under HTTP load.

The bridge sends an attempt lost with the server again, within the request's deadline and
under the same ``X-Request-Id`` (one it made before the first attempt when the caller sent
none): every HTTP request is answered 200.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from nats.aio.client import Client
from nats.aio.msg import Msg

from edge_bridge import BridgeOptions, BridgeServer
from edge_client import RetryPolicy
from edge_runtime.process import close_quietly, connect
from schemas import headers
from tests.support.cluster import CHAT_CONFIG, Services, home_of, start_services
from tests.support.servers import EmbeddedCluster
from tests.support.stack import config_from

TOTAL = 400
CONCURRENCY = 40


@dataclass
class Load:
    """What the HTTP callers got, and every attempt the bridge published."""

    statuses: Counter[int]
    echoed: list[bool]  # each given X-Request-Id came back on its response
    ids: list[str]  # the X-Request-Id of each response
    attempts: Counter[str]  # attempts published, by request id
    after_kill_s: float  # from the SIGKILL to the last answer


async def spy_on(url: str) -> tuple[Client, Counter[str]]:
    """Counts the attempts published on ``llm.chat`` by request id."""
    nc = await connect(url, "spy")
    attempts: Counter[str] = Counter()

    async def count(msg: Msg) -> None:
        attempts[(msg.headers or {}).get(headers.REQUEST_ID, "?")] += 1

    await nc.subscribe("llm.chat", cb=count)
    await nc.flush()
    return nc, attempts


@dataclass
class Layout:
    """The bridge on one server, a broker and a worker on each of the two others."""

    bridge: BridgeServer
    home: int  # the bridge's server
    others: list[int]  # the brokers' servers
    services: Services
    spy: Client
    attempts: Counter[str]

    async def stop(self) -> None:
        await self.bridge.stop()
        await self.services.stop()
        await close_quietly(self.spy)


async def lay_out(cluster: EmbeddedCluster, retry: RetryPolicy, spy_on_index: int) -> Layout:
    """The bridge first, given every server (it connects to one of them); then the brokers
    and workers on the two servers it did not pick; the spy on ``others[spy_on_index]``."""
    bridge = BridgeServer(BridgeOptions(nats_url=",".join(cluster.urls), port=0, retry=retry))
    await bridge.start()
    home = home_of(cluster, bridge.nc)
    others = [i for i in range(len(cluster.urls)) if i != home]
    services = await start_services(cluster, config_from(CHAT_CONFIG), homes=others)
    spy, attempts = await spy_on(cluster.urls[others[spy_on_index]])
    return Layout(bridge, home, others, services, spy, attempts)


async def http_load(bridge: BridgeServer, kill: Callable[[], None], attempts: Counter[str]) -> Load:
    """TOTAL chat requests, CONCURRENCY at a time (every other one without X-Request-Id);
    ``kill`` runs once a quarter of them are answered."""
    slots = asyncio.Semaphore(CONCURRENCY)
    quarter = asyncio.Event()
    answered = 0
    statuses: Counter[int] = Counter()
    echoed: list[bool] = []
    ids: list[str] = []
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{bridge.port}/v1", timeout=60, limits=limits
    ) as http:

        async def one(i: int) -> None:
            nonlocal answered
            given = {"x-request-id": f"h-{i}"} if i % 2 == 0 else {}
            body = {"model": "mock", "messages": [{"role": "user", "content": f"request {i}"}]}
            async with slots:
                response = await http.post("/chat/completions", json=body, headers=given)
            statuses[response.status_code] += 1
            rid = response.headers.get("x-request-id", "")
            ids.append(rid)
            if given:
                echoed.append(rid == given["x-request-id"])
            answered += 1
            if answered == TOTAL // 4:
                quarter.set()

        running = asyncio.gather(*(one(i) for i in range(TOTAL)))
        async with asyncio.timeout(60):
            await quarter.wait()
        kill()
        killed = time.monotonic()
        async with asyncio.timeout(60):
            await running
        return Load(statuses, echoed, ids, attempts, time.monotonic() - killed)


def check(load: Load, label: str) -> None:
    retried = sum(1 for n in load.attempts.values() if n > 1)
    print(
        f"\n{label}: {TOTAL} HTTP requests, last answer {load.after_kill_s:.1f} s after the "
        f"SIGKILL, {retried} sent more than once by the bridge"
    )
    assert load.statuses == {200: TOTAL}
    assert load.echoed == [True] * (TOTAL // 2)
    assert len(set(load.ids)) == TOTAL  # one id per request, whatever its attempts
    assert all(rid and rid in load.attempts for rid in load.ids)  # the id its attempts carried


async def test_bridge_loses_no_request_when_a_broker_server_dies(
    nats_cluster: EmbeddedCluster,
) -> None:
    """Bridge on one server, a broker and a worker on each of the two others; SIGKILL the
    server of one broker while 400 HTTP requests run, 40 at a time: every one is answered
    200 (an attempt that went down with the server is sent again after the attempt
    timeout, under the same request id)."""
    retry = RetryPolicy(attempts=6, attempt_timeout_s=3.0, backoff_s=0.1, max_backoff_s=1.0)
    layout = await lay_out(nats_cluster, retry, spy_on_index=1)
    try:
        victim = nats_cluster.nodes[layout.others[0]]
        load = await http_load(layout.bridge, victim.kill, layout.attempts)
        check(load, "a broker's server killed")
    finally:
        await layout.stop()


async def test_bridge_loses_no_request_when_its_own_server_dies(
    nats_cluster: EmbeddedCluster,
) -> None:
    """SIGKILL the bridge's own server under HTTP load: the bridge reconnects to another
    server of its list and at once sends again the attempts whose replies may have been
    lost. The attempt timeout is long (30 s): answering everything well before it means no
    reply lost in the switch waited for the timeout."""
    retry = RetryPolicy(attempts=4, attempt_timeout_s=30.0, backoff_s=0.1, max_backoff_s=1.0)
    layout = await lay_out(nats_cluster, retry, spy_on_index=0)
    try:
        load = await http_load(layout.bridge, nats_cluster.nodes[layout.home].kill, layout.attempts)
        check(load, "the bridge's server killed")
        assert home_of(nats_cluster, layout.bridge.nc) != layout.home
        assert load.after_kill_s < 15
    finally:
        await layout.stop()
