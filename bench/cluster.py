"""``python -m bench.cluster``: what replication costs, and what one broker and one worker serve.

The same stack (one broker, one mock worker with zero latency, separate processes) runs twice
in one run: on a single nats-server with ``[nats] replicas = 1``, then on a 3-server cluster
(routes, clustered JetStream) with ``[nats] replicas = 3``. For each:

- interactive misses with the NATS KV L2 (a unique prompt per request: an L2 read that misses,
  the worker's answer, the L2 write): sequential p50/p99, then 64 in flight for a fixed time
  (req/s, p50/p99), with the CPU each process spent per request;
- a batch of ``--lines`` lines (lines/s from ``llm.batch.create`` to ``completed``);
- on the single server only, the miss path without the cache (``no-cache, no-store``), with
  the CPU per process: what one broker and one worker cost per request.

Every figure is printed beside its R3/R1 ratio. 127.0.0.1 only; each measurement is a fixed
duration (``--seconds``) or count (``--lines``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import nats
from nats.aio.client import Client

from bench.__main__ import wait_ready
from bench.batch import await_batch, p
from edge_runtime.batch_store import BatchStore
from edge_runtime.embedded import EmbeddedCluster, EmbeddedNats
from schemas.batch import FileObject

CONFIG = """
[broker]
request_log = "off"
[cache]
l2 = "nats"
[batch]
concurrency = 64
[nats]
replicas = {replicas}
[providers.mock]
kind = "mock"
[models.mock]
deployments = [{{ provider = "mock" }}]
"""
TICKS = os.sysconf("SC_CLK_TCK")
IN_FLIGHT = 64


def body(prompt: str) -> bytes:
    return msgspec.json.encode({"model": "mock", "messages": [{"role": "user", "content": prompt}]})


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def nats_server_pids() -> list[int]:
    """The nats-servers this process started (children of any of its threads)."""
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for child in (task / "children").read_text().split():
            if Path(f"/proc/{child}/comm").read_text().strip() == "nats-server":
                pids.append(int(child))
    return pids


@dataclass
class Interactive:
    """Figures of the interactive miss path."""

    seq_p50: float
    seq_p99: float
    rps: float
    p50: float
    p99: float
    cpu_ms: dict[str, float]  # process -> CPU ms per request at 64 in flight
    cpu_share: dict[str, float]  # process -> share of one core at 64 in flight


@dataclass
class Batch:
    lines: int
    status: str
    lines_per_s: float
    run_lines_per_s: float  # from in_progress to completed


@dataclass
class Topology:
    name: str
    replicas: int
    interactive: Interactive | None = None
    no_cache: Interactive | None = None
    load: list[float] = field(default_factory=list)
    batch: Batch | None = None
    l2_entries: int = 0
    l2_replicas: int = 0
    notes: list[str] = field(default_factory=list)


def spawn(*args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return subprocess.Popen([sys.executable, "-m", *args], env=env)


@contextlib.asynccontextmanager
async def stack(replicas: int) -> AsyncIterator[tuple[Client, dict[str, int]]]:
    """nats-server(s), a broker and a mock worker; yields a client and the processes' pids."""
    workdir = Path(tempfile.mkdtemp(prefix="llm-edge-bench-cluster-"))
    (workdir / "config.toml").write_text(CONFIG.format(replicas=replicas))
    server: EmbeddedNats | EmbeddedCluster
    server = EmbeddedNats(workdir / "js", port=-1) if replicas == 1 else EmbeddedCluster(workdir)
    url = server.start()
    cfg = ["--nats-url", url, "--config", str(workdir / "config.toml")]
    procs = {
        "broker": spawn("llm_edge", "broker", *cfg),
        "worker": spawn("llm_edge", "worker", "mock", *cfg),
    }
    nc = await nats.connect(url.split(","))
    try:
        await wait_ready(nc, "llm.broker.ping")
        pids = {name: proc.pid for name, proc in procs.items()}
        for i, pid in enumerate(sorted(nats_server_pids())):
            pids[f"nats-server {i + 1}"] = pid
        yield nc, pids
    finally:
        await nc.close()
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait()
        server.stop()


async def interactive(
    nc: Client, pids: dict[str, int], seconds: float, *, l2: bool = True
) -> Interactive:
    """Unique prompts: with ``l2`` each reads and writes the L2; without, ``no-cache, no-store``
    skips every cache tier (the broker's and worker's own cost)."""
    headers = None if l2 else {"Cache-Control": "no-cache, no-store"}
    counter = iter(range(10**9))
    run = f"{time.time_ns()}"

    async def miss() -> float:
        started = time.perf_counter()
        msg = await nc.request(
            "llm.chat", body(f"miss {run} {next(counter)}"), timeout=10, headers=headers
        )
        elapsed = (time.perf_counter() - started) * 1000
        cache = (msg.headers or {}).get("X-Cache")
        status = (msg.headers or {}).get("Llm-Status")
        if status != "200" or cache not in {None, "MISS", "BYPASS"}:
            raise AssertionError(f"expected a 200 miss, got {status} {cache}: {msg.data[:200]!r}")
        return elapsed

    warm_end = time.perf_counter() + 1.0
    while time.perf_counter() < warm_end:
        await miss()
    seq: list[float] = []
    end = time.perf_counter() + seconds / 2
    while time.perf_counter() < end:
        seq.append(await miss())
    seq.sort()

    loaded: list[float] = []
    end = time.perf_counter() + seconds

    async def lane() -> None:
        while time.perf_counter() < end:
            loaded.append(await miss())

    pids = {**pids, "load generator": os.getpid()}
    before = {name: cpu_s(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
    wall = time.perf_counter() - started
    used = {name: cpu_s(pid) - before[name] for name, pid in pids.items()}
    loaded.sort()
    return Interactive(
        seq_p50=statistics.median(seq),
        seq_p99=p(seq, 0.99),
        rps=len(loaded) / wall,
        p50=statistics.median(loaded),
        p99=p(loaded, 0.99),
        cpu_ms={name: cpu / len(loaded) * 1000 for name, cpu in used.items()},
        cpu_share={name: cpu / wall for name, cpu in used.items()},
    )


async def batch(nc: Client, lines: int, workdir: Path) -> Batch:
    path = workdir / "input.jsonl"
    run = f"{time.time_ns()}"
    with path.open("wb") as handle:
        for i in range(lines):
            line = {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "mock",
                    "messages": [{"role": "user", "content": f"batch {run} {i}"}],
                },
            }
            handle.write(json.dumps(line).encode() + b"\n")
    store = await BatchStore.open(nc)
    file = FileObject(
        id=f"file-bench-{run}",
        bytes=path.stat().st_size,
        created_at=int(time.time()),
        filename="bench.jsonl",
        purpose="batch",
    )
    with path.open("rb") as handle:
        await store.put_file(file, handle)
    events = await nc.subscribe("llm.batch.events.*.*")
    started = time.perf_counter()
    reply = await nc.request(
        "llm.batch.create",
        msgspec.json.encode({"input_file_id": file.id, "endpoint": "/v1/chat/completions"}),
        timeout=30,
    )
    batch_id = json.loads(reply.data)["id"]
    event, in_progress = await await_batch(events, batch_id, timeout_s=300)
    status, in_progress_at = event["status"], in_progress or started
    finished = time.perf_counter()
    await events.unsubscribe()
    done = event["request_counts"]["completed"]
    return Batch(
        lines=lines,
        status=f"{status}, {done} completed",
        lines_per_s=lines / (finished - started),
        run_lines_per_s=lines / (finished - in_progress_at),
    )


async def measure(replicas: int, seconds: float, lines: int) -> Topology:
    topo = Topology("1 server, R1" if replicas == 1 else "3-server cluster, R3", replicas)
    async with stack(replicas) as (nc, pids):
        topo.load.append(os.getloadavg()[0])
        if replicas == 1:
            topo.no_cache = await interactive(nc, pids, seconds, l2=False)
        topo.interactive = await interactive(nc, pids, seconds)
        info = await nc.jetstream().stream_info("KV_llm_edge_cache")
        topo.l2_entries = info.state.messages
        topo.l2_replicas = info.config.num_replicas or 1
        topo.load.append(os.getloadavg()[0])
        topo.batch = await batch(nc, lines, Path(tempfile.mkdtemp(prefix="llm-edge-batch-")))
        topo.load.append(os.getloadavg()[0])
    return topo


def report(r1: Topology, r3: Topology, seconds: float) -> None:
    def ratio(a: float, b: float) -> str:
        return f"{b / a:.2f}"

    a, b = r1.interactive, r3.interactive
    assert a is not None
    assert b is not None
    assert r1.batch is not None
    assert r3.batch is not None
    print(f"\n## Replication: one broker, one mock worker (0 ms), {os.cpu_count()} cores\n")
    print(f"Interactive misses with the NATS KV L2, {seconds:g} s at {IN_FLIGHT} in flight:\n")
    print("| figure | 1 server, R1 | 3 servers, R3 | R3/R1 |\n|---|---|---|---|")
    rows = [
        ("sequential p50 ms", a.seq_p50, b.seq_p50, "{:.3f}"),
        ("sequential p99 ms", a.seq_p99, b.seq_p99, "{:.3f}"),
        (f"req/s ({IN_FLIGHT} in flight)", a.rps, b.rps, "{:,.0f}"),
        (f"p50 ms ({IN_FLIGHT} in flight)", a.p50, b.p50, "{:.2f}"),
        (f"p99 ms ({IN_FLIGHT} in flight)", a.p99, b.p99, "{:.2f}"),
    ]
    for name, x, y, fmt in rows:
        print(f"| {name} | {fmt.format(x)} | {fmt.format(y)} | {ratio(x, y)} |")
    print(
        f"| L2 entries written (stream replicas) | {r1.l2_entries:,} ({r1.l2_replicas}) | "
        f"{r3.l2_entries:,} ({r3.l2_replicas}) | |"
    )
    print(f"\nBatch of {r1.batch.lines:,} lines (mock 0 ms, `batch.concurrency` 64):\n")
    print("| figure | 1 server, R1 | 3 servers, R3 | R3/R1 |\n|---|---|---|---|")
    print(f"| status | {r1.batch.status} | {r3.batch.status} | |")
    for name, x, y in (
        ("lines/s, create to completed", r1.batch.lines_per_s, r3.batch.lines_per_s),
        ("lines/s, in_progress to completed", r1.batch.run_lines_per_s, r3.batch.run_lines_per_s),
    ):
        print(f"| {name} | {x:,.0f} | {y:,.0f} | {ratio(x, y)} |")
    print(
        f"\n## CPU per interactive miss at {IN_FLIGHT} in flight\n\n"
        "ms per request (share of one core)\n"
    )
    print("| process | 1 server, R1 | 3 servers, R3 |\n|---|---|---|")
    names = list(dict.fromkeys([*a.cpu_ms, *b.cpu_ms]))
    for name in names:
        cells = [
            f"{t.cpu_ms[name]:.3f} ({t.cpu_share[name]:.0%})" if name in t.cpu_ms else "-"
            for t in (a, b)
        ]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    servers = [sum(v for k, v in t.cpu_ms.items() if k.startswith("nats-server")) for t in (a, b)]
    print(f"| all nats-servers | {servers[0]:.3f} | {servers[1]:.3f} |")
    total = [sum(t.cpu_ms.values()) for t in (a, b)]
    print(f"| all processes | {total[0]:.3f} | {total[1]:.3f} |")
    c = r1.no_cache
    if c is not None:
        print("\n## Sizing: the miss path without the cache (`no-cache, no-store`), 1 server\n")
        print(
            f"{c.rps:,.0f} req/s at {IN_FLIGHT} in flight (p50 {c.p50:.2f} ms, p99 {c.p99:.2f} ms;"
            f" sequential p50 {c.seq_p50:.3f} ms, p99 {c.seq_p99:.3f} ms)\n"
        )
        print("| process | CPU ms per request | share of a core |\n|---|---|---|")
        for name in c.cpu_ms:
            print(f"| {name} | {c.cpu_ms[name]:.3f} | {c.cpu_share[name]:.0%} |")
    loads = ", ".join(f"{x:.2f}" for x in [*r1.load, *r3.load])
    print(f"\n1-minute load average before and between the measurements: {loads}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the loaded run")
    parser.add_argument("--lines", type=int, default=3000, help="lines of the batch")
    args = parser.parse_args()
    r1 = asyncio.run(measure(1, args.seconds, args.lines))
    r3 = asyncio.run(measure(3, args.seconds, args.lines))
    report(r1, r3, args.seconds)


if __name__ == "__main__":
    main()
