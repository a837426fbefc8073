"""Roles in one process serve each other without NATS hops, and still serve everyone else."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from nats.aio.msg import Msg

from broker.service import BrokerOptions, BrokerService
from edge_bridge import BridgeOptions, BridgeServer
from edge_runtime.local import LocalRoutes, local_view
from edge_runtime.process import close_quietly, connect
from schemas import headers, subjects
from tests.support.stack import MOCK_ONLY, config_from
from workers import WorkerService, build_provider, http_client


@pytest.fixture
async def together(nats_url: str) -> AsyncIterator[int]:
    """A broker, a mock worker and the bridge sharing local routes, as `llm-edge up` runs
    them; yields the bridge's port."""
    routes = LocalRoutes()
    config = config_from(MOCK_ONLY)
    broker = BrokerService(config, BrokerOptions(nats_url=nats_url), routes=routes)
    await broker.start()
    session = http_client()
    worker_nc = local_view(await connect(nats_url, "local-worker"), routes)
    worker = WorkerService(worker_nc, build_provider(config.providers["mock"], {}, session))
    await worker.start()
    bridge = BridgeServer(BridgeOptions(nats_url=nats_url, port=0), routes=routes)
    await bridge.start()
    try:
        yield bridge.port
    finally:
        await bridge.stop()
        await worker.stop(1.0)
        await close_quietly(worker_nc)
        await session.close()
        await broker.stop(1.0)


async def test_local_roles_skip_nats_and_outsiders_still_reach_them(
    together: int, nats_url: str
) -> None:
    """An HTTP request crosses no NATS subject (a spy on llm.chat and llm.provider.> sees
    nothing), whole or streamed; a producer on another connection is still served."""
    spy = await connect(nats_url, "spy")
    seen: list[str] = []

    async def record(msg: Msg) -> None:
        seen.append(msg.subject)

    await spy.subscribe(subjects.CHAT, cb=record)
    await spy.subscribe(subjects.PROVIDER_PREFIX + ".>", cb=record)
    await spy.flush()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{together}/v1") as http:
            body = {"model": "mock", "messages": [{"role": "user", "content": "local"}]}
            whole = await http.post("/chat/completions", json=body)
            assert whole.status_code == 200
            assert whole.headers["x-cache"] == "MISS"
            streamed = await http.post(
                "/chat/completions", json={**body, "stream": True}, timeout=10
            )
            assert streamed.status_code == 200
            assert "data: [DONE]" in streamed.text
        await spy.flush()
        assert seen == []
        outside = {"model": "mock", "messages": [{"role": "user", "content": "from afar"}]}
        msg = await spy.request(subjects.CHAT, json.dumps(outside).encode(), timeout=10)
        assert (msg.headers or {})[headers.STATUS] == "200"
        await spy.flush()
        assert subjects.CHAT in seen  # that one did travel over NATS
    finally:
        await close_quietly(spy)
