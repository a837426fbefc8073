"""``llm-edge up``'s default: the broker, a worker per provider and the bridge in one process.

Each role keeps its own NATS connection and subscriptions, so producers elsewhere reach them
as they reach separate processes; between the roles of this process, requests and replies
skip the NATS round trip (:mod:`edge_runtime.local`). One interpreter instead of four also
keeps the whole tree small. ``llm-edge up --processes`` runs them as separate processes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from nats.aio.client import Client

from broker.config import Config
from broker.service import BrokerOptions, BrokerService
from edge_bridge import BridgeOptions, BridgeServer
from edge_runtime.local import LocalRoutes, local_view
from edge_runtime.process import (
    DEFAULT_INBOX_PREFIX,
    Lifeline,
    close_quietly,
    connect,
    freeze_startup_heap,
)
from workers import WorkerService, build_provider, http_client

__all__ = ["Together", "serve_together"]

log = logging.getLogger("llm_edge")


@dataclass(frozen=True, slots=True, kw_only=True)
class Together:
    """Where the roles of the one process connect and listen."""

    nats_url: str
    redis_url: str | None
    host: str
    port: int
    inbox_prefix: str = DEFAULT_INBOX_PREFIX


async def serve_together(
    config: Config,
    where: Together,
    environ: Mapping[str, str],
    stop: asyncio.Event,
    ready: Callable[[int], None],
) -> None:
    """Run every role until ``stop`` is set; ``ready(port)`` is called once all serve.

    Raises:
        ConnectionLost: the server closed a role's connection for good (all roles stopped).
    """
    routes = LocalRoutes()
    lifeline = Lifeline(stop)
    broker = BrokerService(
        config,
        BrokerOptions(
            nats_url=where.nats_url, redis_url=where.redis_url, inbox_prefix=where.inbox_prefix
        ),
        lifeline,
        routes,
    )
    bridge = BridgeServer(
        BridgeOptions(
            nats_url=where.nats_url,
            host=where.host,
            port=where.port,
            nats_inbox_prefix=where.inbox_prefix,
            max_request_bytes=config.broker.max_request_bytes,
        ),
        lifeline,
        routes,
    )
    started: list[Callable[[], Awaitable[None]]] = []  # how to stop what started, in order
    async with http_client() as client:
        try:
            await broker.start()
            started.append(broker.stop)
            for name in config.serving_providers():
                settings = config.providers[name]
                nc = local_view(
                    await connect(
                        where.nats_url,
                        f"llm-edge-worker-{name}",
                        inbox_prefix=where.inbox_prefix,
                        lifeline=lifeline,
                    ),
                    routes,
                )
                provider = build_provider(settings, environ, client)
                worker = WorkerService(nc, provider, max_concurrency=settings.max_concurrency)
                started.append(_stopper(worker, nc))
                await worker.start()
            await bridge.start()
            started.append(bridge.stop)
            freeze_startup_heap()
            ready(bridge.port)
            await stop.wait()
        finally:
            lifeline.leaving = True
            for stop_role in reversed(started):  # the bridge first, the broker last
                await stop_role()
    lifeline.check()


def _stopper(worker: WorkerService, nc: Client) -> Callable[[], Awaitable[None]]:
    async def stop_worker() -> None:
        await worker.stop()
        await close_quietly(nc)

    return stop_worker
