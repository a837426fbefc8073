"""Brokers and workers started on chosen servers of a test's NATS cluster."""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.aio.client import Client

from broker.config import Config
from broker.service import BrokerOptions, BrokerService
from edge_runtime.embedded import EmbeddedCluster
from edge_runtime.process import close_quietly, connect
from workers import WorkerService, build_provider, http_client
from workers.h1 import UpstreamClient

__all__ = ["CHAT_CONFIG", "Services", "home_of", "start_services"]

#: Chat only, from a mock that takes 50 ms (requests are in flight when a server dies).
CHAT_CONFIG = """
    [cache]
    enabled = false
    [batch]
    enabled = false
    [providers.mock]
    kind = "mock"
    latency_ms = 50
    [models.mock]
    deployments = [{ provider = "mock" }]
"""


@dataclass
class Services:
    """Brokers and workers, each on its own server of the cluster."""

    brokers: list[BrokerService] = field(default_factory=list)
    workers: list[tuple[WorkerService, Client, UpstreamClient]] = field(default_factory=list)

    async def stop(self) -> None:
        for broker in self.brokers:
            await broker.stop(1.0)
        for worker, nc, http in self.workers:
            await worker.stop(1.0)
            await close_quietly(nc)
            await http.close()


async def start_services(
    cluster: EmbeddedCluster, config: Config, homes: list[int], *, provider: str = "mock"
) -> Services:
    """A broker and a worker of ``provider`` connected to each server of ``homes``."""
    services = Services()
    try:
        for home in homes:
            broker = BrokerService(config, BrokerOptions(nats_url=cluster.urls[home]))
            services.brokers.append(broker)
            await broker.start()
            http = http_client()
            nc = await connect(cluster.urls[home], f"worker-n{home + 1}")
            worker = WorkerService(nc, build_provider(config.providers[provider], {}, http))
            services.workers.append((worker, nc, http))
            await worker.start()
            await nc.flush()
    except BaseException:
        await services.stop()
        raise
    return services


def home_of(cluster: EmbeddedCluster, nc: Client) -> int:
    """The index of the server ``nc`` is connected to (nats-py picks one of its list)."""
    port = nc.connected_url.port if nc.connected_url is not None else None
    return next(i for i, url in enumerate(cluster.urls) if url.endswith(f":{port}"))
