"""A provider worker process killed mid-call costs a fast failover, never a deadline."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
from nats.aio.client import Client

from schemas import headers, subjects
from tests.support.stack import Stack, StackFactory, config_from

pytestmark = pytest.mark.process

CONFIG = """
[cache]
enabled = false

[batch]
enabled = false

[providers.mock]
kind = "mock"
latency_ms = 200

[models.mock]
deployments = [{ provider = "mock" }]
"""


@pytest.fixture
def config_file() -> Iterator[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write(CONFIG)
    yield handle.name
    os.unlink(handle.name)


@pytest.fixture
async def stack(nats_url: str, make_stack: StackFactory) -> Stack:
    """A broker in this process; the workers are separate processes (see the test)."""
    return await make_stack(nats_url, config_from(CONFIG), providers=[])


def worker(nats_url: str, config_file: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llm_edge",
            "worker",
            "mock",
            "--nats-url",
            nats_url,
            "--config",
            config_file,
        ],
        env={**os.environ, "LLM_EDGE_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def serving_workers(nc: Client) -> int:
    """How many mock workers answer a discovery ping now."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish("$SRV.PING.llm-edge-worker-mock", b"", reply=inbox)
    seen = set()
    try:
        while True:
            msg = await sub.next_msg(timeout=0.3)
            seen.add(json.loads(msg.data)["id"])
    except Exception:
        return len(seen)
    finally:
        await sub.unsubscribe()


async def test_sigkill_of_a_worker_fails_no_request(
    stack: Stack, nats_url: str, config_file: str
) -> None:
    """Kill -9 one of two workers at 100 req/s (200 ms calls): every request still gets 200,
    its lost calls retried on the other worker within seconds, not at the deadline."""
    procs = [worker(nats_url, config_file) for _ in range(2)]
    try:
        async with asyncio.timeout(30):
            while await serving_workers(stack.nc) < 2:  # noqa: ASYNC110  (polling discovery)
                await asyncio.sleep(0.1)

        async def one(i: int) -> int:
            body = {"model": "mock", "messages": [{"role": "user", "content": f"q {i}"}]}
            msg = await stack.nc.request(
                subjects.CHAT,
                json.dumps(body).encode(),
                timeout=40,
                headers={headers.TIMEOUT_MS: "30000"},
            )
            return int((msg.headers or {})[headers.STATUS])

        calls = []
        for i in range(200):
            calls.append(asyncio.ensure_future(one(i)))
            if i == 60:  # about 20 calls are in flight, half of them at the victim
                procs[0].send_signal(signal.SIGKILL)
            await asyncio.sleep(0.01)
        statuses = await asyncio.gather(*calls)
        assert statuses == [200] * 200
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
