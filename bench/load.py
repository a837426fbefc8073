"""Load generation: sequential latency and throughput with a fixed number in flight."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["Result", "measure"]


@dataclass(frozen=True, slots=True)
class Result:
    """One scenario's figures."""

    name: str
    p50_ms: float
    p99_ms: float
    rps: float

    def row(self, baseline: Result | None) -> str:
        ratio = f"{self.rps / baseline.rps:.2f}x" if baseline else "1.00x"
        delta = f"{self.p50_ms - baseline.p50_ms:+.3f}" if baseline else "+0.000"
        return (
            f"| {self.name} | {self.p50_ms:.3f} | {self.p99_ms:.3f} | {delta} | "
            f"{self.rps:,.0f} | {ratio} |"
        )


async def measure(
    name: str,
    call: Callable[[int], Awaitable[None]],
    *,
    sequential: int = 2000,
    concurrent: int = 20000,
    in_flight: int = 64,
    warmup: int = 200,
) -> Result:
    """Time ``sequential`` calls one by one, then ``concurrent`` calls with ``in_flight`` open.

    Every call gets its own index (warm-up first), so a scenario can use each key once.
    """
    for i in range(warmup):
        await call(i)
    samples = []
    for i in range(warmup, warmup + sequential):
        started = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - started)
    samples.sort()
    p50 = statistics.median(samples) * 1000
    p99 = samples[int(len(samples) * 0.99) - 1] * 1000

    counter = iter(range(warmup + sequential, warmup + sequential + concurrent))

    async def lane() -> None:
        for i in counter:
            await call(i)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    rps = concurrent / (time.perf_counter() - started)
    return Result(name, p50, p99, rps)
