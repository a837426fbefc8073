"""``llm-edge up`` as a user runs it: one command, mock provider, clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port


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


@pytest.mark.parametrize("mode", [None, "--processes"], ids=["one-process", "processes"])
def test_up_serves_with_mock_and_stops_cleanly(tmp_path: Path, mode: str | None) -> None:
    """With no keys, `up` says the mock serves, answers HTTP, and Ctrl-C leaves no process;
    by default every role runs in the one process, with --processes each in its own."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"OPENAI_API_KEY", "NATS_URL", "REDIS_URL", "LLM_EDGE_CONFIG"}
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llm_edge",
            "up",
            "--port",
            str(port),
            "--nats-port",
            "-1",
            "--data-dir",
            str(tmp_path),
            *([mode] if mode else []),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(("Ready.", "llm-edge:")):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(60), "".join(lines)
        output = "".join(lines)
        assert "mock provider serves" in output, output
        assert "Ready." in output, output
        assert f"console: http://127.0.0.1:{port}/console" in output, output
        assert "the console is open to loopback callers only" in output, output
        console = httpx.get(f"http://127.0.0.1:{port}/console/api/state", timeout=10)
        assert console.status_code == 200  # no keys: open to this loopback caller
        assert {s["role"] for s in console.json()["services"]} == {"broker", "worker-mock"}
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
            timeout=10,
        )
        assert response.status_code == 200
        assert "hello" in response.json()["choices"][0]["message"]["content"]
        assert len(processes_mentioning(str(tmp_path))) == 2  # up and its nats-server
        nats_url = next(w for line in lines for w in line.split() if w.startswith("nats://"))
        children = processes_mentioning(nats_url)  # broker, worker and bridge processes
        assert len(children) == (3 if mode else 0), children
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        code = proc.wait(30)
    assert code == 0, "".join(lines)
    assert "Stopped." in "".join(lines)
    assert processes_mentioning(str(tmp_path)) == []
    assert processes_mentioning(f"--port {port}") == []
    assert processes_mentioning(nats_url) == []  # broker and worker children too
