"""``llm-edge up`` as a user runs it: a child process whose output is collected."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.support.servers import free_port

__all__ = ["RunningUp", "env_file"]


class RunningUp:
    """``llm-edge up`` as a child process, its output collected line by line."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"OPENAI_API_KEY", "NATS_URL", "REDIS_URL", "LLM_EDGE_CONFIG"}
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llm_edge", "up", "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith(("Ready.", "llm-edge:")):
                self.ready.set()
        self.ready.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def chat(self, content: str) -> httpx.Response:
        return httpx.post(
            f"http://127.0.0.1:{self.port}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]},
            timeout=10,
        )

    def interrupt(self) -> int:
        """What Ctrl-C in a terminal does; the exit code."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(30)


def env_file(path: Path) -> dict[str, str]:
    """The ``NAME=value`` lines of a file ``up`` wrote for a shell to source."""
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
