"""Session fixtures: one real nats-server and one real redis-server for the whole run."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.servers import (
    EmbeddedCluster,
    EmbeddedNats,
    RedisServer,
    start_cluster,
    start_nats,
)
from tests.support.upstream import FakeOpenAI, running_fake

if TYPE_CHECKING:  # the services are imported by the tests that start them, not by every test
    from tests.support.stack import StackFactory

#: Seconds before a still-running test gets its asyncio tasks dumped to stderr; pytest-timeout
#: (``timeout`` in pyproject.toml) fails the test a little later.
WATCHDOG_S = 45.0


def _dump_tasks() -> None:
    """Print every pending asyncio task's stack: where a hung test is waiting."""
    tasks = [task for task in asyncio.all_tasks() if not task.done()]
    print(f"\n--- watchdog: {len(tasks)} pending asyncio tasks ---", file=sys.stderr)
    for task in tasks:
        task.print_stack(limit=12, file=sys.stderr)


def _watchdog_fire(nodeid: str) -> None:
    print(f"\n--- watchdog: {nodeid} still running after {WATCHDOG_S:.0f} s ---", file=sys.stderr)
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.AbstractEventLoop) and obj.is_running():
            obj.call_soon_threadsafe(_dump_tasks)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[object]:
    timer = threading.Timer(WATCHDOG_S, _watchdog_fire, args=(item.nodeid,))
    timer.daemon = True
    timer.start()
    try:
        return (yield)
    finally:
        timer.cancel()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks derived from what a test uses. The other cost markers (``process``, ``browser``,
    ``node``, ``model``) are set in the test modules themselves; ``scripts/dev test-fast``
    leaves all of them out.

    The ``slow`` tests that may share the machine (not ``alone``) are put first, in their
    order: they mostly wait (90 s for the slow upstream), and with two processes a long wait
    begun among the last files would end the run that long after every other test."""
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
        if "nats_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)
    items.sort(key=lambda item: not _waits_beside_others(item))  # stable: the rest keep order


def _waits_beside_others(item: pytest.Item) -> bool:
    return item.get_closest_marker("slow") is not None and item.get_closest_marker("alone") is None


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real nats-server with JetStream on a free port, for the session."""
    server = start_nats(Path(tmp_path_factory.mktemp("jetstream")))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    """A real 3-server NATS cluster with JetStream, of this test's own (tests kill servers)."""
    cluster = start_cluster(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server with JetStream of this test's own: no service another test left behind on
    the session's server shares its subjects, and its streams and buckets hold only what the
    test stores."""
    server = start_nats(tmp_path / "own-nats")
    try:
        yield server
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
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own: one the test may pause, kill and restart, whose
    database holds only what the test stores."""
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
async def make_stack() -> AsyncIterator[StackFactory]:
    """Starts in-process stacks: ``await make_stack(nats_url, config, bridge=True, ...)`` takes
    :func:`~tests.support.stack.start_stack`'s arguments. Every stack it started is stopped at
    teardown, the last first (a test may stop one earlier itself: it is not stopped twice)."""
    from tests.support.stack import StackFactory

    factory = StackFactory()
    try:
        yield factory
    finally:
        await factory.stop_all()


@pytest.fixture
def namespace() -> str:
    """A fresh cache namespace: isolates a test's cache entries on the shared servers."""
    return f"t{uuid.uuid4().hex[:12]}"
