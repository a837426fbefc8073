"""``python -m bench``: cache-tier round trips over NATS and HTTP beside the raw NATS echo,
then the miss path to a real HTTP upstream beside that upstream called directly.

Starts its own nats-server and redis-server, the broker, a worker (the zero-latency mock, then
an OpenAI-compatible one in front of nginx) and the bridge as separate processes, as a
deployment runs them, and drives them from this process. Every figure is printed beside its
baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import nats
from nats.aio.client import Client

from bench import nginx_upstream, upstream
from bench.http_load import wrk_available, wrk_measure
from bench.load import Result, measure
from edge_runtime.embedded import EmbeddedNats
from tests.support.servers import RedisServer, free_port

CONFIG = """
[broker]
request_log = "off"   # measured separately: a log line per request costs its formatting and I/O
[providers.mock]
kind = "mock"
[models.mock]
deployments = [{ provider = "mock" }]
"""
#: The upstream scenario's stack: one OpenAI-compatible provider in front of nginx.
UPSTREAM_CONFIG = """
[broker]
request_log = "off"
[providers.up]
kind = "openai_compatible"
base_url = "http://127.0.0.1:{port}/v1"
[models.mock-gpt]
deployments = [{{ provider = "up", model = "mock-gpt" }}]
"""
HIT = b'{"model":"mock","messages":[{"role":"user","content":"the same question every time"}]}'
NO_CACHE = {"Cache-Control": "no-cache, no-store"}


def body(prompt: str) -> bytes:
    return msgspec.json.encode({"model": "mock", "messages": [{"role": "user", "content": prompt}]})


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", *args], env=dict(os.environ))


async def wait_ready(nc: Client, subject: str) -> None:
    for _ in range(300):
        with contextlib.suppress(nats.errors.NoRespondersError, nats.errors.TimeoutError):
            await nc.request(subject, b"", timeout=0.5)
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing answers {subject}")


@dataclass
class Deployment:
    """The processes under test."""

    nats_url: str
    redis_url: str
    http_port: int
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def broker_args(self) -> list[str]:
        return [
            "llm_edge",
            "broker",
            "--nats-url",
            self.nats_url,
            "--redis-url",
            self.redis_url,
            "--config",
            str(self.workdir / "config.toml"),
        ]

    def restart_broker(self) -> None:
        """A fresh broker process: empty L1, same L2."""
        self.procs["broker"].terminate()
        self.procs["broker"].wait()
        self.procs["broker"] = spawn(*self.broker_args())


@contextlib.asynccontextmanager
async def deployment(
    config_text: str = CONFIG, provider: str = "mock"
) -> AsyncIterator[tuple[Deployment, Client]]:
    workdir = Path(tempfile.mkdtemp(prefix="llm-edge-bench-"))
    (workdir / "config.toml").write_text(config_text)
    server = EmbeddedNats(workdir / "js", port=-1)
    redis_server = RedisServer()
    dep = Deployment(server.start(), redis_server.url, free_port(), workdir)
    redis_server.start()
    config = ["--config", str(workdir / "config.toml")]
    dep.procs = {
        "echo": spawn("bench.echo", dep.nats_url, "bench.echo"),
        "broker": spawn(*dep.broker_args()),
        "worker": spawn("llm_edge", "worker", provider, "--nats-url", dep.nats_url, *config),
        "bridge": spawn(
            "llm_edge", "bridge", "--nats-url", dep.nats_url, "--port", str(dep.http_port)
        ),
    }
    nc = await nats.connect(dep.nats_url)
    try:
        await wait_ready(nc, "bench.echo")
        await wait_ready(nc, "llm.broker.ping")
        yield dep, nc
    finally:
        await nc.close()
        for proc in dep.procs.values():
            proc.terminate()
        for proc in dep.procs.values():
            proc.wait()
        redis_server.stop()
        server.stop()


def expect(msg: nats.aio.msg.Msg, header: str, value: str) -> None:
    got = (msg.headers or {}).get(header)
    if got != value:
        raise AssertionError(f"{header}: expected {value}, got {got} ({msg.data[:200]!r})")


async def nats_scenarios(dep: Deployment, nc: Client, seq: int, conc: int) -> list[Result]:
    async def echo(i: int) -> None:
        await nc.request("bench.echo", HIT, timeout=5)

    async def l1(i: int) -> None:
        expect(await nc.request("llm.chat", HIT, timeout=5), "X-Cache", "HIT-L1")

    async def miss(i: int) -> None:
        msg = await nc.request("llm.chat", body(f"miss {i}"), timeout=5, headers=NO_CACHE)
        expect(msg, "Llm-Status", "200")

    async def l2(i: int) -> None:
        expect(await nc.request("llm.chat", body(f"l2 {i}"), timeout=5), "X-Cache", "HIT-L2")

    results = [await measure("raw nats-py echo (baseline)", echo, sequential=seq, concurrent=conc)]
    await nc.request("llm.chat", HIT, timeout=5)
    results.append(await measure("L1 hit over NATS", l1, sequential=seq, concurrent=conc))
    results.append(
        await measure(
            "miss: broker + mock worker over NATS", miss, sequential=seq // 2, concurrent=conc // 4
        )
    )
    # L2: fill Redis through the broker, restart it (empty L1), then read each entry once.
    for i in range(200 + seq // 2 + conc // 4):
        await nc.request("llm.chat", body(f"l2 {i}"), timeout=5)
    dep.restart_broker()
    await wait_ready(nc, "llm.broker.ping")
    results.append(
        await measure("L2 hit (Redis) over NATS", l2, sequential=seq // 2, concurrent=conc // 4)
    )
    return results


async def http_scenarios(dep: Deployment, nc: Client) -> list[Result]:
    if not wrk_available():
        print("wrk not installed (apt-get install wrk): HTTP figures skipped", file=sys.stderr)
        return []
    await nc.request("llm.chat", HIT, timeout=5)  # fill the restarted broker's L1
    url = f"http://127.0.0.1:{dep.http_port}/v1/chat/completions"
    return [
        wrk_measure("L1 hit over HTTP (wrk)", url, HIT),
        wrk_measure("miss: bridge + broker + mock worker over HTTP (wrk)", url, HIT, NO_CACHE),
    ]


async def run(scale: float) -> list[Result]:
    async with deployment() as (dep, nc):
        results = await nats_scenarios(dep, nc, int(2000 * scale), int(20000 * scale))
        results += await http_scenarios(dep, nc)
    return results


def our_pids(dep: Deployment) -> dict[str, int]:
    """The stack's processes: bridge, broker, worker, and the nats-server we started."""
    pids = {name: dep.procs[name].pid for name in ("bridge", "broker", "worker")}
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for child in (task / "children").read_text().split():
            if Path(f"/proc/{child}/comm").read_text().strip() == "nats-server":
                pids["nats-server"] = int(child)
    return pids


async def run_upstream(seconds: int, delay_ms: float) -> list[upstream.Row] | None:
    """Direct to nginx, then through the stack, at each level, whole and streamed."""
    if (missing := nginx_upstream.missing()) or not wrk_available():
        reason = missing or "wrk is not installed (apt-get install wrk)"
        print(f"real-upstream scenario skipped: {reason}", file=sys.stderr)
        return None
    port = free_port()
    with nginx_upstream.nginx_upstream(port, delay_ms / 1000) as nginx:
        config = UPSTREAM_CONFIG.format(port=port)
        async with deployment(config, "up") as (dep, _):
            with up_process(config) as together:
                targets = {
                    "direct": (f"http://127.0.0.1:{port}/v1/chat/completions", nginx_pids(nginx)),
                    "llm-edge up": together,
                    "4 processes": (
                        f"http://127.0.0.1:{dep.http_port}/v1/chat/completions",
                        our_pids(dep),
                    ),
                }
                return [
                    upstream.wrk_run(
                        target, url, stream=stream, connections=conns, seconds=seconds, pids=pids
                    )
                    for (target, (url, pids)), stream, conns in itertools.product(
                        targets.items(), (False, True), upstream.LEVELS
                    )
                ]


@contextlib.contextmanager
def up_process(config: str) -> Iterator[tuple[str, dict[str, int]]]:
    """``llm-edge up`` (every role in one process, its own embedded nats-server) on free
    ports: its chat URL and its processes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "up.toml"
        path.write_text(config)
        port, nats_port = free_port(), free_port()
        args = ["up", "--config", str(path), "--data-dir", f"{tmp}/data", "--host", "127.0.0.1"]
        args += ["--port", str(port), "--nats-port", str(nats_port)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "llm_edge", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # "Ready. ..." once every role serves
                if line.startswith("Ready."):
                    break
            else:
                raise RuntimeError("llm-edge up exited before it was ready")
            pids = {"llm-edge up": proc.pid}
            for task in Path(f"/proc/{proc.pid}/task").iterdir():
                for child in (task / "children").read_text().split():
                    pids["nats-server"] = int(child)
            yield f"http://127.0.0.1:{port}/v1/chat/completions", pids
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def nginx_pids(master: subprocess.Popen[bytes]) -> dict[str, int]:
    """nginx's worker process (the master only forks it)."""
    task = Path(f"/proc/{master.pid}/task/{master.pid}/children")
    return {"nginx": int(task.read_text().split()[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply request counts")
    parser.add_argument("--upstream-seconds", type=int, default=3, help="length of each wrk run")
    parser.add_argument("--upstream-delay-ms", type=float, default=20.0, help="nginx's latency")
    parser.add_argument("--only-upstream", action="store_true", help="run only that scenario")
    parser.add_argument(
        "--semantic", action="store_true", help="run only the semantic tier's (bench/semantic.py)"
    )
    args = parser.parse_args()
    if args.semantic:
        from bench import semantic

        semantic.main(max(1, round(3 * args.scale)))
        return
    if not args.only_upstream:
        results = asyncio.run(run(args.scale))
        baseline = results[0]
        print("\n| scenario | p50 ms | p99 ms | p50 vs echo ms | req/s (64 in flight) | vs echo |")
        print("|---|---|---|---|---|---|")
        for result in results:
            print(result.row(None if result is baseline else baseline))
    rows = asyncio.run(run_upstream(args.upstream_seconds, args.upstream_delay_ms))
    if rows is not None:
        upstream.print_rows(rows, args.upstream_delay_ms)


if __name__ == "__main__":
    main()
