"""``python -m bench.clients URL``: CPU per call and latency of HTTP clients against one upstream.

The measurement behind the workers' choice of upstream client. Each candidate POSTs a chat
body to ``URL`` (an OpenAI-shaped ``.../v1`` base, e.g. the nginx mock of ``bench.upstream``)
with N calls in flight for a fixed duration, reads each answer whole (or each stream to its
end), and reports calls/s, p50/p99 and this process's CPU per call. Candidates missing from
the environment are skipped. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import uvloop

Call = Callable[[bytes], Awaitable[int]]
Close = Callable[[], Awaitable[None]]
Factory = Callable[[], Awaitable[tuple[Call, Close]]]

BODY = b'{"model":"mock-gpt","messages":[{"role":"user","content":"%d"}]}'
STREAM = b'{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"%d"}]}'
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}


@dataclass(frozen=True, slots=True)
class Figures:
    """One candidate at one concurrency."""

    client: str
    in_flight: int
    stream: bool
    calls: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_call: float
    errors: int

    def row(self) -> str:
        kind = "stream" if self.stream else "whole"
        return (
            f"| {self.client} | {kind} | {self.in_flight} | {self.rps:,.0f} | {self.p50_ms:.1f} | "
            f"{self.p99_ms:.1f} | {self.cpu_ms_per_call:.3f} | {self.errors} |"
        )


async def drive(
    call: Call, in_flight: int, seconds: float, stream: bool
) -> tuple[list[float], int]:
    """Run ``in_flight`` lanes of calls for ``seconds``; return latencies and error count."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    counter = iter(range(10**9))
    template = STREAM if stream else BODY

    async def lane() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                status = await call(template % next(counter))
            except Exception:
                errors += 1
                continue
            if status != 200:
                errors += 1
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return latencies, errors


async def measure(name: str, call: Call, in_flight: int, seconds: float, stream: bool) -> Figures:
    await drive(call, min(in_flight, 64), 0.5, stream)  # warm the pool, not recorded
    cpu0, wall0 = time.process_time(), time.perf_counter()
    latencies, errors = await drive(call, in_flight, seconds, stream)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    latencies.sort()
    n = max(len(latencies), 1)
    return Figures(
        name,
        in_flight,
        stream,
        len(latencies),
        len(latencies) / wall,
        statistics.median(latencies or [0.0]) * 1000,
        latencies[min(int(n * 0.99), n - 1)] * 1000 if latencies else 0.0,
        cpu * 1000 / n,
        errors,
    )


def candidates(
    url: str,
) -> dict[str, Callable[[], Awaitable[tuple[Call, Callable[[], Awaitable[None]]]]]]:
    """Each candidate: a factory returning (one call, close)."""
    chat = f"{url}/chat/completions"

    async def httpx_default() -> tuple[Call, Close]:
        import httpx

        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            timeout=httpx.Timeout(60.0, connect=10.0),
        )
        return _httpx_call(client, chat), client.aclose

    async def httpx_aiohttp() -> tuple[Call, Close]:
        import httpx
        from httpx_aiohttp import AiohttpTransport

        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        client = httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits), timeout=httpx.Timeout(60.0, connect=10.0)
        )
        return _httpx_call(client, chat), client.aclose

    async def aiohttp_direct() -> tuple[Call, Close]:
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
        timeout = aiohttp.ClientTimeout(total=60, connect=10)

        async def call(body: bytes) -> int:
            async with session.post(chat, data=body, headers=HEADERS, timeout=timeout) as resp:
                if b'"stream":true' in body:
                    async for _ in resp.content.iter_any():
                        pass
                else:
                    await resp.read()
                return resp.status

        return call, session.close

    async def pyreqwest() -> tuple[Call, Close]:
        from datetime import timedelta

        from pyreqwest.client import ClientBuilder

        client = (
            await ClientBuilder()
            .max_connections(1000)
            .timeout(timedelta(seconds=60))
            .error_for_status(False)
            .build()
            .__aenter__()
        )

        async def call(body: bytes) -> int:
            req = client.post(chat).body_bytes(body).headers(HEADERS)
            if b'"stream":true' in body:
                async with req.build_streamed() as resp:
                    while await resp.body_reader.read_chunk() is not None:
                        pass
                    return int(resp.status)
            resp = await req.build().send()
            await resp.bytes()
            return int(resp.status)

        async def close() -> None:
            await client.__aexit__(None, None, None)

        return call, close

    found = {
        "workers.h1 (ours)": (lambda: _ours(chat), "httptools"),
        "httpx (httpcore)": (httpx_default, "httpx"),
        "httpx + AiohttpTransport": (httpx_aiohttp, "httpx_aiohttp"),
        "aiohttp": (aiohttp_direct, "aiohttp"),
        "pyreqwest": (pyreqwest, "pyreqwest"),
    }
    return {
        name: factory
        for name, (factory, module) in found.items()
        if importlib.util.find_spec(module) is not None
    }


async def _ours(chat: str) -> tuple[Call, Close]:
    from workers.h1 import UpstreamClient

    client = UpstreamClient(1000)

    async def call(body: bytes) -> int:
        async with client.post(chat, data=body, headers=HEADERS, timeout=60.0) as resp:
            if b'"stream":true' in body:
                async for _ in resp.iter_chunks():
                    pass
            else:
                await resp.read()
            return resp.status

    return call, client.close


def _httpx_call(client: object, url: str) -> Call:
    import httpx

    assert isinstance(client, httpx.AsyncClient)

    async def call(body: bytes) -> int:
        if b'"stream":true' in body:
            async with client.stream("POST", url, content=body, headers=HEADERS) as resp:
                async for _ in resp.aiter_bytes():
                    pass
                return resp.status_code
        resp = await client.post(url, content=body, headers=HEADERS)
        return resp.status_code

    return call


async def run(url: str, levels: list[int], seconds: float, only: str | None) -> list[Figures]:
    results = []
    for name, factory in candidates(url).items():
        if only and only not in name:
            continue
        call, close = await factory()
        try:
            for stream in (False, True):
                for in_flight in levels:
                    results.append(await measure(name, call, in_flight, seconds, stream))
                    print(results[-1].row(), flush=True)
        finally:
            await close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="OpenAI-shaped base URL on 127.0.0.1, ending in /v1")
    parser.add_argument("--levels", default="64,1000", help="calls in flight, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each run")
    parser.add_argument("--only", help="run only candidates whose name contains this")
    args = parser.parse_args()
    if not args.url.startswith(("http://127.0.0.1:", "http://localhost:")):
        parser.error("loopback upstreams only")
    print("| client | answer | in flight | calls/s | p50 ms | p99 ms | CPU ms/call | errors |")
    print("|---|---|---|---|---|---|---|---|")
    levels = [int(level) for level in args.levels.split(",")]
    uvloop.run(run(args.url, levels, args.seconds, args.only))


if __name__ == "__main__":
    main()
