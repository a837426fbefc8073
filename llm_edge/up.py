"""``llm-edge up``: the whole stack on one machine from one command.

nats-server (embedded unless ``NATS_URL`` is given; ``--cluster N``: N embedded servers with
routes and clustered JetStream, the services given all of them), one broker, one worker per
provider the configuration routes to, and the bridge: by default all three roles in this process
(:mod:`llm_edge.together`), or with ``--processes`` as child processes, restarted when they
exit. Ctrl-C (or SIGTERM) stops everything; children and the embedded server also die with
this process if it is killed (Linux ``PR_SET_PDEATHSIG``), so nothing is orphaned.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from broker.config import Config
from edge_runtime.cluster_auth import ClusterAuth
from edge_runtime.embedded import EmbeddedCluster, EmbeddedNats, die_with_parent
from edge_runtime.process import (
    DEFAULT_INBOX_PREFIX,
    ConnectionLost,
    run_until_stopped,
    stop_event,
)
from edge_runtime.servers import parse_servers
from llm_edge.cluster_users import CLUSTER_USERS, SERVICES_USER, write_user_files
from llm_edge.together import Together, serve_together

__all__ = ["UpOptions", "run_up"]

READY_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class UpOptions:
    """What ``llm-edge up`` starts and where."""

    config_path: str | None
    nats_url: str | None
    redis_url: str | None
    host: str
    port: int
    nats_port: int
    data_dir: Path
    inbox_prefix: str = DEFAULT_INBOX_PREFIX
    #: Each role in its own process (default: all roles in this one).
    processes: bool = False
    cluster: int = 1  # embedded nats-servers; more than one form a cluster


def _spawn(args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603  (our own interpreter and module)
        [sys.executable, "-m", "llm_edge", *args],
        env=dict(env),
        preexec_fn=die_with_parent,  # noqa: PLW1509  (only prctl, async-signal-safe)
    )


def _wait_ready(url: str, procs: Sequence[subprocess.Popen[bytes]]) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                return False
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return True
            time.sleep(0.2)
    return False


def _stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: A service is restarted when it exits, at most this many times within RESTART_WINDOW_S.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


class _Restarts:
    """Counts restarts per service in a sliding window (a crash loop stops ``up``)."""

    def __init__(self) -> None:
        self._times: dict[int, list[float]] = {}

    def allow(self, service: int) -> bool:
        now = time.monotonic()
        recent = [t for t in self._times.get(service, []) if now - t < RESTART_WINDOW_S]
        recent.append(now)
        self._times[service] = recent
        return len(recent) <= MAX_RESTARTS


def run_up(options: UpOptions, environ: Mapping[str, str]) -> int:
    """Start everything, print where it listens, and supervise until interrupted.

    Returns:
        The process exit code.
    """
    config, mocked = Config.load(options.config_path).with_mock_fallback(environ)
    if mocked:
        print(
            f"No provider key set for {', '.join(sorted(mocked))}: "
            "the built-in mock provider serves these models.",
            flush=True,
        )
    if not any(t.keys for t in config.tenants.values()) and not options.redis_url:
        print(
            "WARNING: no API keys are configured: the API is OPEN to anyone who can reach "
            f"{options.host}:{options.port} and NATS. Add [tenants.<name>] keys to require "
            "them.",
            flush=True,
        )
    if not config.console.keys and not any(t.admin for t in config.tenants.values()):
        print(
            "WARNING: no admin key is configured: the console is open to loopback callers "
            "only, with full control of the mesh. Add [console] keys or a tenant with "
            "admin = true to require one.",
            flush=True,
        )
    embedded: EmbeddedNats | EmbeddedCluster | None = None
    nats_url = options.nats_url
    if not nats_url:
        embedded, nats_url = _start_nats(options, config)
    try:
        if options.processes:
            return _run_processes(options, config, nats_url, environ)
        return _run_together(options, config, nats_url, environ)
    finally:
        if embedded is not None:
            embedded.stop()
        print("Stopped.", flush=True)


def _ready_line(options: UpOptions, config: Config, nats_url: str, port: int) -> str:
    """What ``up`` prints once it serves: where everything is, never a NATS credential (a
    ``NATS_URL`` of ``nats://user:password@host`` is shown as ``nats://host``: terminals and
    their scrollback are logged)."""
    base = f"http://{options.host}:{port}"
    servers = ",".join(parse_servers(nats_url).servers)
    return (
        f"Ready. OpenAI-compatible API: {base}/v1  |  console: {base}/console  |  "
        f"NATS: {servers} (subject llm.chat)  |  workers: {', '.join(config.serving_providers())}"
    )


def _run_together(
    options: UpOptions, config: Config, nats_url: str, environ: Mapping[str, str]
) -> int:
    """Every role in this process; restarted together if the server drops a connection."""
    where = Together(
        nats_url=nats_url,
        redis_url=options.redis_url,
        host=options.host,
        port=options.port,
        inbox_prefix=options.inbox_prefix,
    )
    restarts = _Restarts()

    def ready(port: int) -> None:
        print(_ready_line(options, config, nats_url, port), flush=True)

    async def main() -> None:
        await serve_together(config, where, environ, stop_event(), ready)

    while True:
        try:
            run_until_stopped(main())
        except ConnectionLost as exc:
            if not restarts.allow(0):
                print("llm-edge: connections keep closing; stopping.", file=sys.stderr, flush=True)
                return 1
            print(f"llm-edge: {exc}; restarting the services.", file=sys.stderr, flush=True)
            continue
        return 0


def _run_processes(
    options: UpOptions, config: Config, nats_url: str, environ: Mapping[str, str]
) -> int:
    """Each role in its own child process, restarted when it exits."""
    env = {**environ, "NATS_URL": nats_url}  # not --nats-url: `ps` would show credentials
    connection = ["--inbox-prefix", options.inbox_prefix]
    common = connection + (["--config", options.config_path] if options.config_path else [])
    broker_args = ["broker", *common, "--mock-fallback"]
    if options.redis_url:
        broker_args += ["--redis-url", options.redis_url]
    roles = [broker_args]
    roles += [["worker", name, *common, "--mock-fallback"] for name in config.serving_providers()]
    roles.append(["bridge", *connection, "--host", options.host, "--port", str(options.port)])
    procs = [_spawn(role, env) for role in roles]
    restarts = _Restarts()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if not _wait_ready(f"http://{options.host}:{options.port}/ready", procs):
            print("llm-edge: a service failed to start; stopping.", file=sys.stderr, flush=True)
            return 1
        print(_ready_line(options, config, nats_url, options.port), flush=True)
        while not stop.wait(0.5):
            exited = [i for i, p in enumerate(procs) if p.poll() is not None]
            if any(not restarts.allow(i) for i in exited):
                print("llm-edge: a service keeps exiting; stopping.", file=sys.stderr, flush=True)
                return 1
            for i in exited:
                print(
                    f"llm-edge: {roles[i][0]} exited ({procs[i].returncode}); restarting it.",
                    file=sys.stderr,
                    flush=True,
                )
                procs[i] = _spawn(roles[i], env)
    finally:
        _stop_all(procs)
    return 0


def _start_nats(options: UpOptions, config: Config) -> tuple[EmbeddedNats | EmbeddedCluster, str]:
    """The embedded server, or ``options.cluster`` of them as a cluster; and the URL (list)
    the services are given."""
    if options.cluster <= 1:
        single = EmbeddedNats(
            options.data_dir / "jetstream", port=options.nats_port, env=_server_environ()
        )
        url = single.start()
        print(f"Embedded nats-server {url} (JetStream in {single.data_dir})", flush=True)
        return single, url
    auth = ClusterAuth(CLUSTER_USERS)
    cluster = EmbeddedCluster(
        options.data_dir / "cluster", options.cluster, auth=auth, env=_server_environ()
    )
    servers = cluster.start()
    print(
        f"Embedded NATS cluster of {options.cluster} servers: {servers} "
        f"(JetStream in {cluster.nodes[0].data_dir.parent}/n1 …)",
        flush=True,
    )
    print(
        _closed_cluster_note(
            write_user_files(auth, cluster.urls, cluster.nodes[0].data_dir.parent)
        ),
        flush=True,
    )
    if config.nats.replicas < options.cluster:
        print(
            f"JetStream assets have {config.nats.replicas} replica(s): set [nats] replicas = "
            f"{min(options.cluster, 3)} in the configuration to survive the loss of a server.",
            flush=True,
        )
    return cluster, auth.url(SERVICES_USER, cluster.urls)


def _closed_cluster_note(files: Sequence[Path]) -> str:
    """How to connect to the closed cluster (the files' paths, never a password)."""
    names = ", ".join(str(f) for f in files)
    return (
        "NATS is closed: anonymous connections are refused. Connect as admin or producer "
        f"with the URL and inbox prefix in {names} (`set -a; . FILE; set +a`; new passwords "
        "at each start)."
    )


#: The embedded server's Go garbage collector target (the user's ``GOGC`` wins). Measured
#: over 15 s of misses at about 2,000 a second: at Go's default of 100 nats-server went from
#: 17 to 74 MiB resident; at 50 to 60-65 MiB (0.039 ms of its CPU per miss); at 25 to 55 MiB
#: (0.056 ms). Much of what stays is the bucket's per-key index, which no collector frees.
EMBEDDED_GOGC = "25"


def _server_environ() -> dict[str, str]:
    return {**os.environ, "GOGC": os.environ.get("GOGC", EMBEDDED_GOGC)}


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """``$LLM_EDGE_DATA_DIR``, else ``$XDG_DATA_HOME/llm-edge`` or ``~/.local/share/llm-edge``."""
    if environ.get("LLM_EDGE_DATA_DIR"):
        return Path(environ["LLM_EDGE_DATA_DIR"])
    base = environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "llm-edge"
