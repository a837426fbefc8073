"""The health probes on a broker's and a worker's metrics port, through the real path: the
``llm-edge`` command as its own process, a real nats-server stopped and started again."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge_runtime.health import STUCK_S, Health, Verdict
from edge_runtime.process import close_quietly, connect
from tests.support.servers import EmbeddedNats, free_port

CONFIG = """
[cache]
enabled = false

[batch]
enabled = false

[providers.mock]
kind = "mock"

[models.mock]
deployments = [{ provider = "mock" }]
"""
ROLES = {"broker": ["broker"], "worker": ["worker", "mock"]}


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server of this test's own, on a port it keeps when restarted."""
    server = EmbeddedNats(tmp_path / "nats", port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def spawn(role: str, nats_url: str, tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    """``llm-edge <role> --metrics-port PORT`` as its own process."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    return subprocess.Popen(
        [sys.executable, "-m", "llm_edge", *ROLES[role], "--metrics-port", str(port)],
        env={
            **os.environ,
            "NATS_URL": nats_url,
            "LLM_EDGE_CONFIG": str(config),
            "LLM_EDGE_LOG_LEVEL": "ERROR",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def verdict(http: httpx.AsyncClient, path: str) -> tuple[int, str]:
    """A probe's status and reason (0 while nothing listens on the port)."""
    try:
        response = await http.get(path)
    except httpx.TransportError:
        return 0, "not listening"
    return response.status_code, response.json()["reason"]


async def until(http: httpx.AsyncClient, path: str, status: int, within_s: float) -> str:
    """Wait until the probe answers ``status``; its reason."""
    last: tuple[int, str] = (0, "")
    try:
        async with asyncio.timeout(within_s):
            while (last := await verdict(http, path))[0] != status:  # noqa: ASYNC110  (polled)
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{path} still answers {last} after {within_s} s") from None
    return last[1]


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.process
async def test_ready_follows_the_nats_connection_and_live_the_event_loop(
    role: str, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """Started: /readyz 200 once connected and subscribed (/metrics still served on the
    port). The nats-server stops: /readyz 503 within seconds, naming NATS, while /healthz
    stays 200 (the loop turns; restarting the process would not help). The server is back:
    ready again."""
    port = free_port()
    proc = spawn(role, nats_server.url, tmp_path, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            assert await until(http, "/readyz", 200, 30) == "connected and subscribed"
            assert (await http.get("/healthz")).status_code == 200
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200
            assert "python_info" in metrics.text

            nats_server.stop()
            reason = await until(http, "/readyz", 503, 5)
            assert "NATS" in reason
            assert await verdict(http, "/healthz") == (200, "the event loop turns")

            nats_server.start()
            await until(http, "/readyz", 200, 15)
        assert proc.poll() is None  # one process throughout: the probes followed its state
    finally:
        proc.terminate()
        proc.wait(30)


async def test_ready_needs_every_subscription_and_live_a_turning_loop(nats_url: str) -> None:
    """In-process: ready once a round trip to the server came back; a subscription the
    service watches that is gone makes it not ready; a loop that stopped marking for
    STUCK_S is not live (nor ready); a stopping service is not ready."""
    now = [100.0]
    health = Health(lambda: now[0])
    assert health.live().ok
    assert not health.ready().ok  # nothing served yet
    nc = await connect(nats_url, "probed")
    try:
        subs = [await nc.subscribe("probe.a"), await nc.subscribe("probe.b")]
        health.watch("probed", nc, lambda: subs)
        async with asyncio.timeout(5):
            while not health.ready().ok:  # noqa: ASYNC110  (the marker's first round trip)
                await asyncio.sleep(0.02)
        await subs[1].unsubscribe()
        assert health.ready() == Verdict(False, "probed: subscriptions gone: probe.b")
        subs.pop()
        assert health.ready().ok
        now[0] += STUCK_S + 1  # the loop has not marked since
        assert not health.live().ok
        assert "event loop" in health.ready().reason
        now[0] -= STUCK_S + 1
        await health.stop()
        assert health.ready() == Verdict(False, "not serving (starting or stopping)")
    finally:
        await health.stop()
        await close_quietly(nc)
