"""JetStream gone (a server back without it): the batch and admin APIs answer 503 at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from edge_runtime.embedded import EmbeddedNats, free_ports
from schemas import headers
from tests.support.stack import StackFactory, config_from

CONFIG = """
    [cache]
    l2 = "nats"
    [batch]
    poll_s = 0.2
    [providers.mock]
    kind = "mock"
    [models.mock]
    deployments = [{ provider = "mock" }]
"""


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server of this test's own on a fixed port (it is restarted at that address)."""
    server = EmbeddedNats(tmp_path / "js", port=free_ports(1)[0])
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def until_reconnected(nc: Client) -> None:
    """Until a broker answers its ping through the restarted server."""
    async with asyncio.timeout(20):
        while True:
            try:
                await nc.request("llm.broker.ping", b"", timeout=0.5)
            except (NoRespondersError, NatsTimeout):
                await asyncio.sleep(0.05)  # the clients are still reconnecting
            else:
                return


async def test_batch_and_admin_requests_answer_503_without_jetstream(
    own_server: EmbeddedNats,
    make_stack: StackFactory,
) -> None:
    """With the server restarted without JetStream, every llm.batch.* operation and a cache
    purge get a 503 with Retry-After (not silence until the caller's timeout), and chat
    requests are still served."""
    stack = await make_stack(own_server.url, config_from(CONFIG))
    own_server.stop()
    own_server.jetstream = False
    own_server.start()
    await until_reconnected(stack.nc)
    requests = {
        "llm.batch.get": {"id": "batch_x"},
        "llm.batch.list": {},
        "llm.batch.cancel": {"id": "batch_x"},
        "llm.batch.create": {"input_file_id": "file_x", "endpoint": "/v1/chat/completions"},
        "llm.batch.submit": {"lines": [{"custom_id": "a"}], "endpoint": "/v1/chat/completions"},
        "llm.admin.cache.purge": {"all": True},
    }
    for subject, body in requests.items():
        reply = await stack.nc.request(subject, msgspec.json.encode(body), timeout=15)
        assert reply.headers is not None
        assert reply.headers[headers.STATUS] == "503", subject
        assert int(reply.headers[headers.RETRY_AFTER]) > 0, subject
        assert msgspec.json.decode(reply.data)["error"]["message"], subject
    chat = {"model": "mock", "messages": [{"role": "user", "content": "still here?"}]}
    reply = await stack.nc.request("llm.chat", msgspec.json.encode(chat), timeout=15)
    assert reply.headers is not None
    assert reply.headers[headers.STATUS] == "200"
