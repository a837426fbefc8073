"""Where the semantic tier's embedding should run, by figures.

Three placements of the same embedder (ONNX Runtime, smoothed int8 projections), called from
an asyncio event loop as the broker calls it:

- a worker thread of the broker's process (``asyncio.to_thread``: ONNX Runtime and the Rust
  tokenizer release the GIL);
- a process pool in the broker (one child holding the model; the text pickled there, the
  vector back);
- an embedding service on its own NATS queue group (another process; a request and its reply
  through nats-server), the shape that would scale apart from the brokers.

Each is timed one call at a time over the labelled set's questions (the lookup's latency),
then with 32 calls in flight (throughput), while a ticker on the caller's loop measures how
late its 1 ms sleeps wake (what the broker's other requests would feel).
Part of ``python -m bench --semantic``.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.__main__ import spawn, wait_ready
from bench.semantic import paraphrases, percentiles
from broker.cache.embed import Embedder
from broker.cache.embedder import load_minilm
from edge_runtime.embedded import EmbeddedNats

SUBJECT = "bench.embed"
IN_FLIGHT = 32
_child: Embedder | None = None
Call = Callable[[str], Awaitable[bytes]]


def _load_child() -> None:
    global _child  # noqa: PLW0603  (the pool child's model)
    _child = load_minilm()


def _embed_in_child(text: str) -> bytes:
    assert _child is not None
    return _child.embed(text).tobytes()


async def serve(url: str) -> None:
    """The embedding service: text in, float32 vector bytes out, on a queue group."""
    embedder = load_minilm()
    nc = await nats.connect(url)

    async def answer(msg: Msg) -> None:
        if not msg.data:  # the readiness probe
            await msg.respond(b"")
            return
        vector = await asyncio.to_thread(embedder.embed, msg.data.decode())
        await msg.respond(vector.tobytes())

    await nc.subscribe(SUBJECT, queue="embedders", cb=answer, pending_msgs_limit=-1)
    await asyncio.Event().wait()


async def _one_at_a_time(call: Call, texts: list[str], into: list[float]) -> None:
    for text in texts:
        started = time.perf_counter()
        vector = await call(text)
        into.append(time.perf_counter() - started)
        assert len(vector) == 384 * 4


async def _in_flight(call: Call, texts: list[str]) -> tuple[float, list[float]]:
    """Embeddings per second with ``IN_FLIGHT`` calls waiting, and the loop's lateness."""
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - started - 0.001)

    queue = [t for _ in range(3) for t in texts]
    total = len(queue)

    async def lane() -> None:
        while queue:
            await call(queue.pop())

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
    elapsed = time.perf_counter() - started
    done.set()
    await tick
    return total / elapsed, lags


async def _with_placements(texts: list[str], rounds: int) -> list[str]:
    embedder = load_minilm()
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        own = stack.enter_context(ThreadPoolExecutor(max_workers=1))
        pool = stack.enter_context(
            ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_load_child,
            )
        )
        nc = await stack.enter_async_context(_service())

        async def inline(text: str) -> bytes:
            return embedder.embed(text).tobytes()

        async def default_pool(text: str) -> bytes:
            return (await asyncio.to_thread(embedder.embed, text)).tobytes()

        async def one_thread(text: str) -> bytes:
            return (await loop.run_in_executor(own, embedder.embed, text)).tobytes()

        async def process(text: str) -> bytes:
            return await loop.run_in_executor(pool, _embed_in_child, text)

        async def service(text: str) -> bytes:
            reply = await nc.request(SUBJECT, text.encode(), timeout=10)
            return bytes(reply.data)

        calls: dict[str, Call] = {
            "on the event loop itself (baseline: blocks it)": inline,
            "asyncio's default thread pool (up to 6 threads)": default_pool,
            "one embedding thread": one_thread,
            "process pool (1 child)": process,
            "NATS queue-group service (another process)": service,
        }
        single: dict[str, list[float]] = {name: [] for name in calls}
        rates: dict[str, list[float]] = {name: [] for name in calls}
        lags: dict[str, list[float]] = {name: [] for name in calls}
        for call in calls.values():
            await _one_at_a_time(call, texts[:10], [])
        for _ in range(rounds):  # the placements take turns, each round
            for name, call in calls.items():
                await _one_at_a_time(call, texts, single[name])
            for name, call in calls.items():
                rate, lag = await _in_flight(call, texts)
                rates[name].append(rate)
                lags[name] += lag
    rows = []
    for name in calls:
        p50, p99 = percentiles(single[name])
        lag50, lag99 = percentiles(lags[name])
        rate = statistics.median(rates[name])
        rows.append(f"| {name} | {p50:.2f} | {p99:.2f} | {rate:,.0f} | {lag50:.2f} / {lag99:.2f} |")
    return rows


@contextlib.asynccontextmanager
async def _service() -> AsyncIterator[Client]:
    """A nats-server and the embedding service in a process of its own."""
    with tempfile.TemporaryDirectory(prefix="llm-edge-bench-") as workdir:
        server = EmbeddedNats(Path(workdir) / "js", port=-1)
        url = server.start()
        child = spawn("bench.semantic_placement", "serve", url)
        try:
            nc = await nats.connect(url)
            try:
                await wait_ready(nc, SUBJECT)
                yield nc
            finally:
                await nc.close()
        finally:
            child.terminate()
            child.wait()
            server.stop()


async def placements(rounds: int = 3) -> list[str]:
    """One table row per placement."""
    return await _with_placements([second for _, second in paraphrases()], rounds)


def main() -> None:
    print(
        f"\n| embedding placement | p50 ms | p99 ms | embeddings/s at {IN_FLIGHT} in flight"
        " | caller's loop lag p50 / p99 ms |"
    )
    print("|---|---|---|---|---|")
    for line in asyncio.run(placements()):
        print(line)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        asyncio.run(serve(sys.argv[2]))
    else:
        main()
