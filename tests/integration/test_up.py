"""``llm-edge up`` as a user runs it: one command, mock provider, clean Ctrl-C."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from edge_runtime.process import close_quietly, connect
from llm_edge.up import EMBEDDED_GOGC
from tests.support.up import RunningUp, env_file

pytestmark = pytest.mark.process


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("mode", [(), ("--processes",)], ids=["one-process", "processes"])
def test_up_serves_with_mock_and_stops_cleanly(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """With no keys, `up` says the mock serves, answers HTTP and the console, and Ctrl-C
    leaves no process; by default every role runs in the one process, with --processes each
    in its own; the embedded nats-server runs with the collector target `up` gives it."""
    up = RunningUp(tmp_path, "--nats-port", "-1", "--data-dir", str(tmp_path), *mode)
    role_pids: list[int] = []
    try:
        assert up.ready.wait(60), up.output
        assert "mock provider serves" in up.output, up.output
        assert "Ready." in up.output, up.output
        assert f"console: http://127.0.0.1:{up.port}/console" in up.output, up.output
        assert "the console is open to loopback callers only" in up.output, up.output
        console = httpx.get(f"http://127.0.0.1:{up.port}/console/api/state", timeout=10)
        assert console.status_code == 200  # no keys: open to this loopback caller
        roles = {s["role"] for s in console.json()["services"]}
        assert roles == {"bridge", "broker", "worker-mock"}
        response = up.chat("hello")
        assert response.status_code == 200
        assert "hello" in response.json()["choices"][0]["message"]["content"]
        assert len(processes_mentioning(str(tmp_path))) == 2  # up and its nats-server
        server = next(
            pid
            for pid in processes_mentioning(str(tmp_path))
            if b"nats-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
        environ = Path(f"/proc/{server}/environ").read_bytes().split(b"\0")
        gogc = os.environ.get("GOGC", EMBEDDED_GOGC)
        assert f"GOGC={gogc}".encode() in environ  # its collector bounds its memory
        role_pids = [c for c in children_of(up.proc.pid) if c != server]
        assert len(role_pids) == (3 if mode else 0), role_pids  # broker, worker, bridge
    finally:
        code = up.interrupt()
    assert code == 0, up.output
    assert "Stopped." in up.output
    assert processes_mentioning(str(tmp_path)) == []
    assert processes_mentioning(f"--port {up.port}") == []
    assert all(not Path(f"/proc/{pid}").exists() for pid in role_pids)  # the roles' too


CLUSTER_CONFIG = """
[nats]
replicas = 3
[providers.mock]
kind = "mock"
[models."gpt-4o-mini"]
deployments = [{ provider = "mock" }]
"""


def test_up_cluster_runs_three_servers_and_replicated_jetstream(tmp_path: Path) -> None:
    """`up --cluster 3` starts three nats-servers with their own stores, gives the services
    all three, creates the batch store at R3, serves HTTP, and Ctrl-C stops everything."""
    config = tmp_path / "r3.toml"
    config.write_text(CLUSTER_CONFIG)
    up = RunningUp(tmp_path, "--cluster", "3", "--config", str(config), "--data-dir", str(tmp_path))
    try:
        assert up.ready.wait(60), up.output
        assert "Embedded NATS cluster of 3 servers" in up.output, up.output
        assert up.chat("clustered").status_code == 200
        assert len(processes_mentioning(str(tmp_path / "cluster"))) == 3
        stores = sorted(p.name for p in (tmp_path / "cluster").iterdir() if p.is_dir())
        assert stores == ["n1", "n2", "n3"]
        admin = env_file(tmp_path / "cluster" / "admin.env")  # the cluster is closed
        assert admin["NATS_URL"].count("nats://") == 3
        assert asyncio.run(replicas_of(admin, "LLM_EDGE_BATCH_LINES")) == 3
    finally:
        code = up.interrupt()
    assert code == 0, up.output
    assert processes_mentioning(str(tmp_path / "cluster")) == []


async def replicas_of(user: dict[str, str], stream: str) -> int:
    """A stream's replica count, asked of the cluster as the user of an ``up`` env file."""
    nc = await connect(user["NATS_URL"], "up-test", inbox_prefix=user["NATS_INBOX_PREFIX"])
    try:
        return int((await nc.jetstream().stream_info(stream)).config.num_replicas or 1)
    finally:
        await close_quietly(nc)
