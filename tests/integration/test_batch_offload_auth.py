"""Native batch offload under the shipped NATS permissions (nats/auth.conf): the broker,
the OpenAI worker and the producer connect as their own users, so a permission the offload
needs and the roles lack (the worker's batch subject, the files bucket, the receipt) fails
the batch here."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import nats
import pytest

from broker.service import BrokerOptions, BrokerService
from broker.tenancy.tenants import hash_key
from edge_client import EdgeClient
from schemas.batch import BatchStatus
from schemas.offload import SubBatch
from tests.integration.test_nats_permissions import AUTH_CONF, PASSWORDS, as_user, user_url
from tests.support.batch import lines
from tests.support.fake_provider_batches import FakeBatches, running_batches
from tests.support.servers import EmbeddedNats
from tests.support.stack import config_from
from tests.support.violations import Violations
from workers import WorkerService, build_provider, http_client

KEY_GLOBEX = f"sk-le-test-globex-{uuid.uuid4().hex}"  # alice's tenant under auth.conf
WAIT_S = 30.0
LINES = 30


@pytest.fixture(scope="module")
def secured_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nats-server with nats/auth.conf, JetStream in a temp directory."""
    server = EmbeddedNats(
        tmp_path_factory.mktemp("js-offload-auth"),
        port=-1,
        config_file=AUTH_CONF,
        env={**os.environ, **PASSWORDS},
    )
    try:
        yield server.start().removeprefix("nats://")
    finally:
        server.stop()


@pytest.fixture
async def fake() -> AsyncIterator[FakeBatches]:
    async with running_batches(polls=1) as server:
        yield server


@pytest.fixture
async def services(
    secured_url: str, fake: FakeBatches
) -> AsyncIterator[tuple[BrokerService, Violations]]:
    """A broker (user broker) offloading every 24h line of model gpt to OpenAI's Batch API
    in sub-batches of 20, and an OpenAI worker (user worker-openai) whose upstream is the
    fake; the worker's permission violations are collected."""
    config = config_from(f"""
        [cache]
        enabled = false
        [batch]
        poll_s = 0.05
        offload = "auto"
        offload_poll_s = 0.02
        offload_limits = {{ default = [20, 10000000] }}
        [providers.openai]
        kind = "openai"
        base_url = "{fake.base_url}"
        api_key_env = "OPENAI_KEY"
        [models.gpt]
        deployments = [{{ provider = "openai", model = "gpt-4o-mini" }}]
        [tenants.globex]
        keys = ["{hash_key(KEY_GLOBEX)}"]
    """)
    broker = BrokerService(config, BrokerOptions(nats_url=user_url(secured_url, "broker")))
    await broker.start()
    violations = Violations()
    worker_nc = await nats.connect(
        user_url(secured_url, "worker-openai"),
        inbox_prefix="_INBOX.worker-openai",
        error_cb=violations.on_error,
    )
    session = http_client()
    provider = build_provider(config.providers["openai"], {"OPENAI_KEY": "sk-test"}, session)
    worker = WorkerService(worker_nc, provider)
    await worker.start()
    try:
        yield broker, violations
    finally:
        await worker.stop(1)
        await worker_nc.close()
        await session.close()
        await broker.stop(1)


async def test_offloaded_batch_runs_under_the_roles_own_permissions(
    secured_url: str, fake: FakeBatches, services: tuple[BrokerService, Violations]
) -> None:
    """Alice's 30-line batch runs as two OpenAI provider batches through the worker's batch
    subject and the files bucket (the first submit's record write is interrupted, so the
    worker's receipt is read back too) and completes with every line offloaded; no role
    breaks a permission."""
    broker, worker_violations = services
    assert broker.batch is not None
    interrupted: list[int] = []

    async def interrupt(sub: SubBatch) -> None:
        if not interrupted:
            interrupted.append(sub.index)
            raise RuntimeError("the step ends before the record names the provider batch")

    broker.batch.offloader.after_submit = interrupt
    violations = Violations()
    alice_nc = await as_user(secured_url, "alice", violations, inbox_prefix="_INBOX.alice")
    try:
        alice = EdgeClient(alice_nc, api_key=KEY_GLOBEX, deadline_s=WAIT_S)
        batch = await alice.batches.submit(lines(LINES, model="gpt"), completion_window="24h")
        done = await alice.batches.wait(batch.id, timeout_s=WAIT_S)
        assert done.status is BatchStatus.COMPLETED
        assert interrupted == [0]
        assert done.offload is not None
        assert done.offload.completed == {"openai": LINES}
        assert [len(b.rows) for b in fake.created("openai")] == [20, 10]
        results = await alice.batches.results(done)
        assert Counter(r.custom_id for r in results) == {f"req-{i}": 1 for i in range(LINES)}
        await alice_nc.flush()
        assert violations.seen == []
        assert worker_violations.seen == []
    finally:
        await alice_nc.close()
