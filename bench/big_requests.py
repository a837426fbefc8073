"""What big requests cost in memory: ``llm-edge up`` (one process: bridge, broker, worker,
and its nats-server child) in front of the tests' fake OpenAI upstream (a process of its
own), one 32 MiB request, then 8 concurrent 8 MiB requests, over HTTP.

    python -m bench.big_requests

Reads each process's peak resident set (``VmHWM``) from ``/proc`` before and after each
step: the rise is what the step cost at its peak. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from edge_runtime.embedded import free_ports

MiB = 1024 * 1024


def _status(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field in bytes (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """``pid`` and its children (``up`` runs nats-server as its child)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(c) for c in children)]


def _peaks(pids: list[int]) -> dict[int, int]:
    return {pid: _status(pid, "VmHWM") for pid in pids}


def _body(size: int, tag: str) -> bytes:
    line = f"{tag}: the agent's repository, one line of it. "
    content = (line * (size // len(line) + 1))[:size]
    return json.dumps({"model": "big", "messages": [{"role": "user", "content": content}]}).encode()


async def _send(http: httpx.AsyncClient, url: str, body: bytes) -> int:
    reply = await http.post(url, content=body, headers={"content-type": "application/json"})
    return reply.status_code


#: (name, body size, concurrent requests): each step runs in a fresh ``up``.
STEPS = (("one 32 MiB request", 32 * MiB - 4096, 1), ("8 x 8 MiB at once", 8 * MiB, 8))


async def _run(
    url: str, up_pid: int, size: int, count: int
) -> tuple[dict[int, int], dict[int, int], float]:
    async with httpx.AsyncClient(timeout=120) as http:
        assert await _send(http, url, _body(1000, "warm")) == 200
        pids = _tree(up_pid)
        before = _peaks(pids)
        bodies = [_body(size, f"request {i}") for i in range(count)]
        started = time.perf_counter()
        codes = await asyncio.gather(*(_send(http, url, b) for b in bodies))
        elapsed = time.perf_counter() - started
        assert codes == [200] * count, codes
        return before, _peaks(pids), elapsed


def main() -> int:
    print("| step | process | peak RSS before | peak RSS after | rise | wall s |")
    print("|---|---|---|---|---|---|")
    for step, size, count in STEPS:
        before, after, elapsed, up_pid = _measure(size, count)
        for pid in before:
            name = "llm-edge up" if pid == up_pid else "nats-server"
            rise = (after[pid] - before[pid]) / MiB
            print(
                f"| {step} | {name} | {before[pid] / MiB:.0f} MiB | "
                f"{after[pid] / MiB:.0f} MiB | {rise:+.0f} MiB | {elapsed:.2f} |"
            )
    return 0


def _measure(size: int, count: int) -> tuple[dict[int, int], dict[int, int], float, int]:
    """One step in a fresh ``up`` (peaks are since a process started)."""
    upstream_port, http_port, nats_port = free_ports(3)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(
            "[cache]\nenabled = false\n"
            f'[providers.up]\nkind = "openai_compatible"\nbase_url = "http://127.0.0.1:{upstream_port}/v1"\n'
            '[models.big]\ndeployments = [{ provider = "up", model = "big" }]\n'
        )
        env = {**os.environ, "LLM_EDGE_LOG_LEVEL": "WARNING"}
        upstream = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_upstream", str(upstream_port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        up = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "llm-edge"),
                *("up", "--config", str(config), "--data-dir", str(Path(tmp) / "data")),
                *("--port", str(http_port), "--nats-port", str(nats_port)),
            ],
            env=env,
        )
        try:
            assert upstream.stdout is not None
            assert upstream.stdout.readline().strip() == "ready"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if (
                        httpx.get(f"http://127.0.0.1:{http_port}/ready", timeout=1).status_code
                        == 200
                    ):
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            url = f"http://127.0.0.1:{http_port}/v1/chat/completions"
            before, after, elapsed = asyncio.run(_run(url, up.pid, size, count))
            return before, after, elapsed, up.pid
        finally:
            up.terminate()
            upstream.terminate()
            up.wait(30)
            upstream.wait(30)


if __name__ == "__main__":
    sys.exit(main())
