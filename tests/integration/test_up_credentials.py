"""``llm-edge up`` and NATS credentials: against a NATS server of the operator's, given
with its credentials in the URL, it serves and never prints them (terminals and their
scrollback are logged); ``up --cluster`` runs its own servers closed."""

from __future__ import annotations

import asyncio
import json
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from edge_runtime.embedded import EmbeddedNats
from edge_runtime.servers import parse_servers
from tests.support.up import RunningUp, env_file

pytestmark = pytest.mark.process

PASSWORD = "s3cret-nats-password-0000"


@pytest.fixture
def guarded_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server with JetStream that takes only user ``edge`` with :data:`PASSWORD`."""
    server = EmbeddedNats(
        tmp_path / "js", port=-1, extra_args=["--user", "edge", "--pass", PASSWORD]
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_up_does_not_print_the_nats_credentials(tmp_path: Path, guarded_nats: EmbeddedNats) -> None:
    """The ready line names the server without its user and password, and the API serves."""
    host = guarded_nats.url.removeprefix("nats://")
    up = RunningUp(
        tmp_path, "--nats-url", f"nats://edge:{PASSWORD}@{host}", "--data-dir", str(tmp_path)
    )
    try:
        assert up.ready.wait(60), up.output
        assert "Ready." in up.output, up.output
        assert f"NATS: nats://{host} (subject llm.chat)" in up.output
        assert up.chat("hello").status_code == 200
        assert PASSWORD not in up.output
    finally:
        assert up.interrupt() == 0
    assert PASSWORD not in up.output


def test_up_cluster_refuses_anonymous_connections_and_routes(tmp_path: Path) -> None:
    """`up --cluster 2`: each server refuses a connection without a user, and a route
    without the route password; the producer of producer.env (readable by its owner only)
    is answered; no password of the cluster reaches the output."""
    up = RunningUp(tmp_path, "--cluster", "2", "--data-dir", str(tmp_path))
    try:
        assert up.ready.wait(60), up.output
        assert "Ready." in up.output, up.output
        found = re.search(r"Embedded NATS cluster of 2 servers: (\S+)", up.output)
        assert found is not None, up.output
        servers = found.group(1).split(",")
        producer_file = tmp_path / "cluster" / "producer.env"
        assert stat.S_IMODE(producer_file.stat().st_mode) == 0o600
        producer = env_file(producer_file)
        assert parse_servers(producer["NATS_URL"]).servers == tuple(servers)
        asyncio.run(_anonymous_refused_and_producer_served(servers, producer))
        _route_refused(tmp_path)
        for path in (producer_file, tmp_path / "cluster" / "admin.env"):
            password = parse_servers(env_file(path)["NATS_URL"]).password
            assert password
            assert password not in up.output
    finally:
        assert up.interrupt() == 0, up.output


async def _anonymous_refused_and_producer_served(
    servers: list[str], producer: dict[str, str]
) -> None:
    for server in servers:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(server, allow_reconnect=False, max_reconnect_attempts=0)
    nc = await nats.connect(
        **parse_servers(producer["NATS_URL"]).options(),
        inbox_prefix=producer["NATS_INBOX_PREFIX"],
    )
    try:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "closed"}]}
        reply = await nc.request("llm.chat", json.dumps(body).encode(), timeout=10)
        assert reply.headers is not None
        assert reply.headers["Llm-Status"] == "200"
    finally:
        await nc.close()


def _route_refused(tmp_path: Path) -> None:
    """A server routing to n1 without the route password is refused (its own log says so)."""
    n1 = (tmp_path / "cluster" / "n1" / "cluster.conf").read_text()
    listen = re.search(r'listen: "([^"]+)"', n1)
    assert listen is not None
    rogue = EmbeddedNats(
        tmp_path / "rogue",
        port=-1,
        jetstream=False,
        extra_args=[
            *("--name", "rogue", "--cluster_name", "llm-edge"),
            *("--cluster", "nats://127.0.0.1:-1", "--routes", f"nats://{listen.group(1)}"),
        ],
    )
    rogue.start()
    try:
        deadline = time.monotonic() + 10
        while not any("Authorization Violation" in line for line in rogue.log_lines):
            assert time.monotonic() < deadline, rogue.log_lines
            time.sleep(0.05)  # the log has no event to wait on
    finally:
        rogue.stop()
