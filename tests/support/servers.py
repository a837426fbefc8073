"""Real nats-server and redis-server processes on free loopback ports."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

from edge_runtime.embedded import EmbeddedCluster, EmbeddedNats

__all__ = ["EmbeddedCluster", "EmbeddedNats", "RedisServer", "free_port", "start_cluster"]


def free_port() -> int:
    """A port the kernel says is free now (redis-server cannot pick one itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server child on a fixed port, restartable for outage tests."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/dev test installs it)")
        self.binary = binary
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait for 'Ready to accept connections'."""
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()
        lines: list[str] = []

        def read() -> None:
            assert self._proc is not None
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                lines.append(line)
                if "Ready to accept connections" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout) or self._proc.poll() is not None:
            raise RuntimeError("redis-server did not start:\n" + "".join(lines[-10:]))

    def pause(self) -> None:
        """SIGSTOP: the server hangs (connections stay open, nothing is answered)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: the hung server answers again."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: an outage."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self) -> None:
        """Terminate (a paused server is resumed first, or it could not exit)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)
            self._proc.terminate()
            self._proc.wait(10)


def start_nats(data_dir: Path) -> EmbeddedNats:
    """A nats-server with JetStream on a random port."""
    server = EmbeddedNats(data_dir, port=-1)
    server.start()
    return server


def start_cluster(data_dir: Path, size: int = 3) -> EmbeddedCluster:
    """``size`` nats-server processes with routes to each other (route, client and monitoring
    ports picked free beforehand) and clustered JetStream, healthy on every server."""
    cluster = EmbeddedCluster(data_dir, size)
    cluster.start()
    return cluster
