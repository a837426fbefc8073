"""What a running bridge holds in memory: none of the broker's or the workers' machinery.

The bridge runs as ``llm-edge bridge`` does (the command's own ``main``) against a real
nats-server; once it answers ``/health`` its modules are listed and it is stopped with
SIGTERM, as a supervisor would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.process

PROBE = """
import os, signal, sys, threading, time
import httpx
from llm_edge.cli import main

url, port = sys.argv[1], int(sys.argv[2])

def report_when_serving():
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                print("LOADED", " ".join(sorted(sys.modules)), flush=True)
                break
        except httpx.HTTPError:
            time.sleep(0.05)  # not listening yet: the next try connects or is refused at once
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=report_when_serving, daemon=True).start()
sys.exit(main(["bridge", "--nats-url", url, "--port", str(port)]))
"""


def test_a_serving_bridge_loads_no_broker_or_worker_code(nats_url: str) -> None:
    """A bridge serving HTTP holds no broker module (metrics, cache tiers, semantic tier), no
    worker runner, and no FastStream, Redis or tenacity; it exits cleanly on SIGTERM."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, nats_url, str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("LOADED ")]
    assert lines, done.stderr
    loaded = set(lines[0].split()[1:])
    assert "edge_bridge.server" in loaded  # the probe saw a running bridge
    assert sorted(m for m in loaded if m.split(".")[0] in {"broker", "workers"}) == []
    assert [m for m in ("faststream", "redis", "tenacity", "numpy") if m in loaded] == []
    assert done.returncode == 0, done.stderr
