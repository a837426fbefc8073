"""``python -m bench.batch [LINES] [CONCURRENCY]``: a 50,000-line batch, mock provider (0 ms).

Reports lines per second, the broker's peak RSS before and after (it must stay flat: files
are streamed, never loaded whole), and interactive ``llm.chat`` latency with and without the
batch running, measured in the same run.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from bench.__main__ import spawn, wait_ready
from edge_runtime.batch_store import BatchStore
from edge_runtime.embedded import EmbeddedNats
from schemas.batch import FileObject

CONFIG = """
[cache]
enabled = false
[batch]
concurrency = {concurrency}
[providers.mock]
kind = "mock"
[models.mock]
deployments = [{ provider = "mock" }]
"""
INTERACTIVE = b'{"model":"mock","messages":[{"role":"user","content":"interactive"}]}'


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


async def interactive(nc: Client, seconds: float) -> list[float]:
    """Sequential interactive requests for ``seconds``; their latencies in ms."""
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        await nc.request(
            "llm.chat", INTERACTIVE, timeout=10, headers={"Cache-Control": "no-cache, no-store"}
        )
        samples.append((time.perf_counter() - started) * 1000)
    return sorted(samples)


def p(samples: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``samples``."""
    return samples[min(len(samples) - 1, int(len(samples) * q))]


async def await_batch(
    events: Subscription, batch_id: str, *, timeout_s: float
) -> tuple[dict[str, Any], float | None]:
    """Follow ``llm.batch.events.*.*`` until the batch ends: its last event, and when it went
    in progress (``time.perf_counter()``, or ``None`` if that event was not seen)."""
    status, in_progress_at = "validating", None
    while status not in {"completed", "failed", "expired", "cancelled"}:
        event: dict[str, Any] = json.loads((await events.next_msg(timeout=timeout_s)).data)
        if event["id"] != batch_id:
            continue
        status = event["status"]
        if status == "in_progress" and in_progress_at is None:
            in_progress_at = time.perf_counter()
    return event, in_progress_at


async def run(lines: int, concurrency: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="llm-edge-bench-batch-"))
    server = EmbeddedNats(tmp / "js", port=-1)
    url = server.start()
    (tmp / "c.toml").write_text(CONFIG.replace("{concurrency}", str(concurrency)))
    cfg = ["--nats-url", url, "--config", str(tmp / "c.toml")]
    broker = spawn("llm_edge", "broker", *cfg)
    worker = spawn("llm_edge", "worker", "mock", *cfg)
    nc = await nats.connect(url)
    try:
        await wait_ready(nc, "llm.broker.ping")
        quiet = await interactive(nc, 5)
        idle_rss = rss_mb(broker.pid)
        path = tmp / "input.jsonl"
        with path.open("wb") as handle:
            for i in range(lines):
                handle.write(
                    json.dumps(
                        {
                            "custom_id": f"line-{i}",
                            "method": "POST",
                            "url": "/v1/chat/completions",
                            "body": {
                                "model": "mock",
                                "messages": [{"role": "user", "content": f"question {i}"}],
                            },
                        }
                    ).encode()
                    + b"\n"
                )
        store = await BatchStore.open(nc)
        file = FileObject(
            id="file-bench",
            bytes=path.stat().st_size,
            created_at=int(time.time()),
            filename="bench.jsonl",
            purpose="batch",
        )
        with path.open("rb") as handle:
            await store.put_file(file, handle)  # type: ignore[arg-type]
        events = await nc.subscribe("llm.batch.events.*.*")
        started = time.perf_counter()
        reply = await nc.request(
            "llm.batch.create",
            msgspec.json.encode({"input_file_id": file.id, "endpoint": "/v1/chat/completions"}),
            timeout=30,
        )
        batch_id = json.loads(reply.data)["id"]
        busy_task = asyncio.ensure_future(interactive(nc, 15))
        final, in_progress_at = await await_batch(events, batch_id, timeout_s=600)
        status = final["status"]
        finished = time.perf_counter()
        busy = await busy_task
        peak_rss = rss_mb(broker.pid)
    finally:
        await nc.close()
        for proc in (broker, worker):
            proc.terminate()
            proc.wait()
        server.stop()
    counts = final["request_counts"]
    print(f"\nbatch of {lines} lines: {status}, {counts}")
    print(
        f"wall time {finished - started:.1f}s (validation+queueing "
        f"{(in_progress_at or started) - started:.1f}s): "
        f"{lines / (finished - started):,.0f} lines/s end to end"
    )
    print(
        f"broker RSS idle {idle_rss[0]:.0f} MiB -> after {peak_rss[0]:.0f} MiB "
        f"(peak {peak_rss[1]:.0f} MiB)"
    )
    print("\n| interactive llm.chat (miss, mock 0 ms) | p50 ms | p99 ms | n |\n|---|---|---|---|")
    for name, samples in (("without batch", quiet), ("during batch", busy)):
        print(
            f"| {name} | {statistics.median(samples):.3f} | {p(samples, 0.99):.3f} | "
            f"{len(samples)} |"
        )


if __name__ == "__main__":
    asyncio.run(
        run(
            int(sys.argv[1]) if len(sys.argv) > 1 else 50_000,
            int(sys.argv[2]) if len(sys.argv) > 2 else 64,
        )
    )
