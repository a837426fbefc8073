"""``python -m bench.ttfc``: streaming time to first chunk, straight to the fake upstream and
through bridge -> broker -> worker -> the same upstream, measured in the same run."""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.__main__ import spawn
from edge_runtime.embedded import EmbeddedNats
from tests.support.servers import free_port

BODY = {"model": "up", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def first_chunk_ms(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    first = None
    async with client.stream("POST", url, json=BODY, headers=headers) as response:
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: {"):
                first = (time.perf_counter() - started) * 1000
    if first is None:
        raise RuntimeError("no chunk")
    return first


async def series(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], n: int
) -> list[float]:
    for _ in range(20):
        await first_chunk_ms(client, url, headers)
    return sorted([await first_chunk_ms(client, url, headers) for _ in range(n)])


async def wait_http(client: httpx.AsyncClient, url: str) -> None:
    for _ in range(200):
        try:
            if (await client.get(url)).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} never answered")


async def run(n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="llm-edge-ttfc-"))
    nats_server = EmbeddedNats(tmp / "js", port=-1)
    url = nats_server.start()
    up_port, http_port = free_port(), free_port()
    (tmp / "c.toml").write_text(
        f'[cache]\nenabled = false\n[providers.up]\nkind = "openai_compatible"\n'
        f'base_url = "http://127.0.0.1:{up_port}/v1"\n'
        f'[models.up]\ndeployments = [{{ provider = "up", model = "gpt-4o-mini" }}]\n'
    )
    cfg = ["--nats-url", url, "--config", str(tmp / "c.toml")]
    procs = [
        spawn("bench.fake_upstream", str(up_port)),
        spawn("llm_edge", "broker", *cfg),
        spawn("llm_edge", "worker", "up", *cfg),
        spawn("llm_edge", "bridge", "--nats-url", url, "--port", str(http_port)),
    ]
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            await wait_http(client, f"http://127.0.0.1:{up_port}/v1/models")
            await wait_http(client, f"http://127.0.0.1:{http_port}/ready")
            direct = await series(client, f"http://127.0.0.1:{up_port}/v1/chat/completions", {}, n)
            broker = await series(
                client, f"http://127.0.0.1:{http_port}/v1/chat/completions", {}, n
            )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        nats_server.stop()
    print("\n| path | TTFC p50 ms | TTFC p99 ms |\n|---|---|---|")
    for name, samples in (("fake upstream directly", direct), ("through LLM Edge", broker)):
        print(
            f"| {name} | {statistics.median(samples):.3f} | "
            f"{samples[int(len(samples) * 0.99) - 1]:.3f} |"
        )
    print(f"\noverhead p50: {statistics.median(broker) - statistics.median(direct):+.3f} ms")


if __name__ == "__main__":
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 300))
