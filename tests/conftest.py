"""Session fixtures: one real nats-server and one real redis-server for the whole run."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.servers import RedisServer, start_nats
from tests.support.upstream import FakeOpenAI, running_fake


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real nats-server with JetStream on a free port, for the session."""
    server = start_nats(Path(tmp_path_factory.mktemp("jetstream")))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free port, for the session."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """A fake OpenAI upstream on a free port."""
    async with running_fake() as server:
        yield server


@pytest.fixture
def namespace() -> str:
    """A fresh cache namespace: isolates a test's cache entries on the shared servers."""
    return f"t{uuid.uuid4().hex[:12]}"
