"""In-process service stacks (broker, workers, bridge) on a real NATS server."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import httpx
from nats.aio.client import Client

from broker.config import Config
from broker.service import BrokerOptions, BrokerService
from edge_bridge import BridgeOptions, BridgeServer
from edge_runtime.process import close_quietly, connect
from workers import WorkerService, build_provider, http_client
from workers.h1 import UpstreamClient

__all__ = ["MOCK_ONLY", "Stack", "config_from", "start_stack"]


#: One mock model, no L2, no batch engine: the smallest stack that answers llm.chat.
MOCK_ONLY = """
    [cache]
    l2 = "off"
    [batch]
    enabled = false
    [providers.mock]
    kind = "mock"
    [models.mock]
    deployments = [{ provider = "mock" }]
"""


def config_from(toml: str) -> Config:
    """A config from an indented TOML snippet."""
    return Config.from_toml(textwrap.dedent(toml))


@dataclass
class Stack:
    """Running services and a client connection for the test."""

    nc: Client
    brokers: list[BrokerService] = field(default_factory=list)
    workers: list[tuple[WorkerService, Client]] = field(default_factory=list)
    bridge: BridgeServer | None = None
    http: httpx.AsyncClient | None = None
    upstream_sessions: list[UpstreamClient] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        assert self.bridge is not None
        return f"http://127.0.0.1:{self.bridge.port}/v1"

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        if self.bridge is not None:
            await self.bridge.stop()
        for broker in self.brokers:
            await broker.stop(1.0)
        for worker, nc in self.workers:
            await worker.stop(1.0)
            await close_quietly(nc)
        for session in self.upstream_sessions:
            await session.close()
        await close_quietly(self.nc)


async def start_stack(
    nats_url: str,
    config: Config,
    *,
    providers: list[str] | None = None,
    redis_url: str | None = None,
    bridge: bool = False,
    brokers: int = 1,
    environ: dict[str, str] | None = None,
) -> Stack:
    """Start brokers, a worker per provider (each with its own upstream session, as a worker
    process has), and optionally the bridge."""
    stack = Stack(nc=await connect(nats_url, "test-client"))
    for _ in range(brokers):
        service = BrokerService(config, BrokerOptions(nats_url=nats_url, redis_url=redis_url))
        await service.start()
        stack.brokers.append(service)
    for name in providers if providers is not None else config.serving_providers():
        settings = config.providers[name]
        session = http_client()
        stack.upstream_sessions.append(session)
        provider = build_provider(settings, environ or {}, session)
        nc = await connect(nats_url, f"test-worker-{name}")
        worker = WorkerService(nc, provider, max_concurrency=settings.max_concurrency)
        await worker.start()
        await nc.flush()
        stack.workers.append((worker, nc))
    if bridge:
        stack.bridge = BridgeServer(BridgeOptions(nats_url=nats_url, port=0))
        await stack.bridge.start()
        stack.http = httpx.AsyncClient(base_url=stack.base_url, timeout=30)
    return stack
