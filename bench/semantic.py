"""The semantic tier (L3): what one lookup costs, and a semantic hit beside an exact-key hit.

In process, the runtimes taking turns so each sees the same machine: the embedding alone, then the
lookup as the broker does it (the embedding on a worker thread, then the cosine search over
a context of ``ENTRIES`` earlier questions and the anchor guard), with the NumPy float32
reference, ONNX Runtime in float32, and ONNX Runtime with int8 projections (the broker's).
Then over NATS, on a broker stack with the tier on: the raw echo, an exact-key L1 hit, and a
semantic hit (a reworded question answered from an earlier answer), from the same run.
``python -m bench --semantic`` (``--scale`` multiplies the rounds).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import numpy as np
from nats.aio.msg import Msg

from bench.__main__ import HIT, body, deployment, expect
from broker.cache.decision import Decision
from broker.cache.embed import Embedder
from broker.cache.embedder import load_minilm, model_files
from broker.cache.minilm_onnx import OnnxMiniLM
from broker.cache.semantic_index import Entry, SemanticIndex
from schemas import headers

DECISION = Decision()
PAIRS = Path(__file__).parent.parent / "tests" / "data" / "semantic_pairs.tsv"
CONFIG = """
[broker]
request_log = "off"
[providers.mock]
kind = "mock"
[models.mock]
deployments = [{ provider = "mock" }]
[cache.semantic]
enabled = true
"""
#: Earlier questions in the searched context (one context holds one conversation's variants).
ENTRIES = 100


def paraphrases() -> list[tuple[str, str]]:
    """The labelled set's paraphrase pairs (first wording, second wording)."""
    rows = []
    for line in PAIRS.read_text().splitlines():
        if line and not line.startswith("#"):
            kind, first, second = line.split("\t")
            if kind == "para":
                rows.append((first, second))
    return rows


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


def row(name: str, samples: list[float]) -> str:
    p50, p99 = percentiles(samples)
    return f"| {name} | {p50:.3f} | {p99:.3f} | {len(samples)} |"


def index_of(embedder: Embedder, texts: list[str]) -> SemanticIndex:
    index = SemanticIndex()
    for i, text in enumerate(texts):
        vector = embedder.embed(text).tobytes()
        index.put(f"e{i}", Entry("ctx", f"answer{i}", text, vector, time.time() + 3600))
    return index


async def in_process(rounds: int) -> list[str]:
    """Embedding and lookup, NumPy reference and ONNX Runtime interleaved."""
    weights, tokenizer = model_files()
    runtimes: dict[str, Embedder] = {
        "NumPy float32": load_minilm(runtime="numpy"),
        "ONNX Runtime float32": OnnxMiniLM(weights, tokenizer, projections="float32"),
        "ONNX Runtime int8 blocks (before)": OnnxMiniLM(
            weights, tokenizer, projections="int8-blocks"
        ),
        "ONNX Runtime int8 smoothed (after)": load_minilm(runtime="onnx"),
    }
    pairs = paraphrases()
    stored = [first for first, _ in pairs][:ENTRIES]
    asked = [second for _, second in pairs]
    indexes = {name: index_of(embedder, stored) for name, embedder in runtimes.items()}
    embed: dict[str, list[float]] = {name: [] for name in runtimes}
    lookup: dict[str, list[float]] = {name: [] for name in runtimes}
    search: dict[str, list[float]] = {name: [] for name in runtimes}
    hits = dict.fromkeys(runtimes, 0)
    for _ in range(rounds):
        # one runtime at a time over all the questions, the runtimes taking turns: interleaved
        # per call, three models' weights (~100 MB) would evict each other from the caches,
        # which a broker (one model) never sees
        for name, embedder in runtimes.items():
            for text in asked[:5]:  # its weights back in the caches
                embedder.embed(text)
            for text in asked:
                started = time.perf_counter()
                embedder.embed(text)
                embed[name].append(time.perf_counter() - started)
                started = time.perf_counter()
                vector = await asyncio.to_thread(embedder.embed, text)
                searched = time.perf_counter()
                match = indexes[name].search(
                    "ctx", vector, text, DECISION.threshold, time.time(), DECISION.accepts
                )
                done = time.perf_counter()
                lookup[name].append(done - started)
                search[name].append(done - searched)
                hits[name] += match is not None
    lines = []
    for name in runtimes:
        lines.append(row(f"embedding, {name}", embed[name]))
        lines.append(row(f"lookup (thread hop + embed + search + guard), {name}", lookup[name]))
        lines.append(row(f"search + guard over {ENTRIES} entries, {name}", search[name]))
    served = ", ".join(f"{name} {count}" for name, count in hits.items())
    lines.append(f"\nlookups served (same decisions expected): {served}")
    return lines


def _entries(contexts: int, per_context: int) -> Iterator[tuple[str, Entry]]:
    """Entries shaped like the broker's: keys with 64-hex digests, a question's text."""
    rng = np.random.default_rng(0)
    for c in range(contexts):
        context = f"default:default:{c:064x}"
        vectors = rng.standard_normal((per_context, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for i, vector in enumerate(vectors):
            answer = f"default:default:{c * per_context + i:064x}"
            text = f"How do I configure the retention of backup number {i} on my server?"
            entry = Entry(context, answer, text, vector.tobytes(), time.time() + 3600)
            yield f"{context}.{i}".replace(":", "."), entry


def index_scale() -> list[str]:
    """Memory per 100k entries, and a search's time as one context grows."""
    lines = []
    tracemalloc.start()  # NumPy reports its buffers to it too
    index = SemanticIndex()
    for entry_id, entry in _entries(1000, 100):
        index.put(entry_id, entry)
    held = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    lines.append(f"| 100k entries in 1,000 contexts of 100: memory held | {held:.0f} MiB | |")
    del index
    for size in (100, 1_000, 10_000, 100_000):
        index = SemanticIndex()
        for entry_id, entry in _entries(1, size):
            index.put(entry_id, entry)
        asked = np.random.default_rng(1).standard_normal(384).astype(np.float32)
        asked /= np.linalg.norm(asked)
        ranks, writes = [], []
        for i in range(30):
            started = time.perf_counter()
            index.rank("default:default:" + "0" * 64, asked)
            ranks.append(time.perf_counter() - started)
            extra = Entry("default:default:" + "0" * 64, "a", "t", asked.tobytes(), 0.0)
            started = time.perf_counter()
            index.put(f"extra{i}", extra)  # another broker's write arriving
            writes.append(time.perf_counter() - started)
        rank50, rank99 = percentiles(ranks)
        write50, _ = percentiles(writes)
        lines.append(
            f"| one context of {size:,}: rank p50 / p99, write p50 | {rank50:.3f} / {rank99:.3f} ms"
            f" | {write50 * 1000:.1f} us |"
        )
    return lines


async def over_nats(rounds: int) -> list[str]:
    """Echo, exact-key L1 hit and semantic hit on one broker stack, over NATS and then over
    HTTP through the bridge (one kept-alive connection, as an SDK holds)."""
    samples: dict[str, list[float]] = {"echo": [], "exact": [], "semantic": []}
    pairs = paraphrases()
    async with deployment(CONFIG) as (dep, nc):

        async def timed(kind: str, call: Callable[[], Awaitable[Msg]]) -> None:
            started = time.perf_counter()
            msg = await call()
            samples[kind].append(time.perf_counter() - started)
            if kind == "exact":
                expect(msg, headers.CACHE, "HIT-L1")

        await nc.request("llm.chat", HIT, timeout=5)
        for r in range(rounds):
            # the first wordings answered in a namespace each (so each later question has
            # exactly one earlier one to match, and no hit is ever served from L1 instead)
            for j, (first, _) in enumerate(pairs):
                space = {headers.CACHE_NAMESPACE: f"r{r}-{j}"}
                await nc.request("llm.chat", body(first), timeout=10, headers=space)
            await asyncio.sleep(0.5)  # the answers' L3 entries are written after the replies
            for j, (_, second) in enumerate(pairs):
                space = {headers.CACHE_NAMESPACE: f"r{r}-{j}"}
                # a text of its own each round (trailing spaces: same tokens, same anchors),
                # or the broker would reuse the vector its earlier lookup kept for the write
                asked = body(second + " " * r)
                started = time.perf_counter()
                msg = await nc.request("llm.chat", asked, timeout=10, headers=space)
                elapsed = time.perf_counter() - started
                if (msg.headers or {}).get(headers.CACHE) == "HIT-SEMANTIC":
                    samples["semantic"].append(elapsed)
                await timed("echo", lambda: nc.request("bench.echo", HIT, timeout=5))
                await timed("exact", lambda: nc.request("llm.chat", HIT, timeout=5))
        over_http = await _over_http(dep.http_port, nc, pairs, rounds)
    return [
        row("raw nats-py echo (baseline)", samples["echo"]),
        row("exact-key hit (L1) over NATS", samples["exact"]),
        row("semantic hit (L3, answer from L1) over NATS", samples["semantic"]),
        *over_http,
    ]


async def _over_http(port: int, nc: object, pairs: list[tuple[str, str]], rounds: int) -> list[str]:
    """The same exact-key and semantic hits through the HTTP bridge."""
    import httpx

    samples: dict[str, list[float]] = {"exact": [], "semantic": []}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    json_headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(timeout=10) as client:
        await client.post(url, content=HIT, headers=json_headers)
        for r in range(rounds):
            for j, (first, _) in enumerate(pairs):
                space = {**json_headers, headers.CACHE_NAMESPACE: f"http{r}-{j}"}
                await client.post(url, content=body(first), headers=space)
            await asyncio.sleep(0.5)  # the answers' L3 entries are written after the replies
            for j, (_, second) in enumerate(pairs):
                space = {**json_headers, headers.CACHE_NAMESPACE: f"http{r}-{j}"}
                started = time.perf_counter()
                answer = await client.post(url, content=body(second + " " * r), headers=space)
                elapsed = time.perf_counter() - started
                if answer.headers.get(headers.CACHE) == "HIT-SEMANTIC":
                    samples["semantic"].append(elapsed)
                started = time.perf_counter()
                answer = await client.post(url, content=HIT, headers=json_headers)
                samples["exact"].append(time.perf_counter() - started)
                assert answer.headers.get(headers.CACHE) == "HIT-L1", answer.headers
    return [
        row("exact-key hit (L1) over HTTP", samples["exact"]),
        row("semantic hit (L3, answer from L1) over HTTP", samples["semantic"]),
    ]


def main(rounds: int = 3) -> None:
    print("\n| semantic tier | p50 ms | p99 ms | samples |")
    print("|---|---|---|---|")
    for line in asyncio.run(in_process(rounds)):
        print(line)
    print("\n| semantic index | measured | |")
    print("|---|---|---|")
    for line in index_scale():
        print(line)
    print("\n| over NATS and HTTP, tier on | p50 ms | p99 ms | samples |")
    print("|---|---|---|---|")
    for line in asyncio.run(over_nats(rounds)):
        print(line)
    from bench import semantic_placement

    semantic_placement.main()


if __name__ == "__main__":
    main()
