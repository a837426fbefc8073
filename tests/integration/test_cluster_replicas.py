"""``[nats] replicas``: every JetStream asset the project creates has that many copies."""

from __future__ import annotations

import logging

import pytest

from broker.service import BrokerOptions, BrokerService
from edge_runtime.batch_store import BatchStore
from edge_runtime.jetstream import ReplicasError
from edge_runtime.process import close_quietly, connect
from schemas.jetstream import (
    AUDIT_STREAM,
    BATCHES_BUCKET,
    CACHE_BUCKET,
    FILES_BUCKET,
    LINES_STREAM,
    RESULTS_BUCKET,
)
from tests.support.servers import EmbeddedCluster
from tests.support.stack import config_from

ASSETS = [
    f"KV_{CACHE_BUCKET}",
    f"OBJ_{FILES_BUCKET}",
    f"KV_{BATCHES_BUCKET}",
    f"KV_{RESULTS_BUCKET}",
    LINES_STREAM,
    AUDIT_STREAM,
]
R3 = """
    [nats]
    replicas = 3
    [cache]
    l2 = "nats"
    [providers.mock]
    kind = "mock"
    [models.mock]
    deployments = [{ provider = "mock" }]
"""


async def test_every_asset_has_the_configured_replicas_and_r1_ones_are_raised(
    nats_cluster: EmbeddedCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Assets left at R1 (by an older version, or a process without the setting) are raised
    to R3 in place when a broker with replicas = 3 starts, and the log names each one; a
    process with the default never lowers them again."""
    nc = await connect(nats_cluster.url, "replicas-test")
    broker = BrokerService(config_from(R3), BrokerOptions(nats_url=nats_cluster.url))
    try:
        await BatchStore.open(nc)  # R1, as every version before [nats] replicas made them
        js = nc.jetstream()
        assert (await js.stream_info(LINES_STREAM)).config.num_replicas == 1
        with caplog.at_level(logging.WARNING, logger="llm_edge.jetstream"):
            await broker.start()
        replicas = {s: (await js.stream_info(s)).config.num_replicas for s in ASSETS}
        assert replicas == dict.fromkeys(ASSETS, 3)
        raised = [r.getMessage() for r in caplog.records if "raised from 1 to 3" in r.getMessage()]
        assert len(raised) == 4  # the cache bucket and the audit stream were new: made at R3
        await BatchStore.open(nc)  # the default (1) binds without shrinking anything
        assert (await js.stream_info(LINES_STREAM)).config.num_replicas == 3
    finally:
        await broker.stop(1.0)
        await close_quietly(nc)


async def test_more_replicas_than_servers_is_refused_at_start(nats_url: str) -> None:
    """replicas = 3 against a single server stops the broker at start with an error saying
    what the server is and what to change, before it creates anything."""
    broker = BrokerService(config_from(R3), BrokerOptions(nats_url=nats_url))
    with pytest.raises(ReplicasError, match=r"replicas = 3, but the NATS server is not part"):
        await broker.start()
    await broker.stop(1.0)
