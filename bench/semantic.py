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
from collections.abc import Awaitable, Callable
from pathlib import Path

from nats.aio.msg import Msg

from bench.__main__ import HIT, body, deployment, expect
from broker.cache.embed import Embedder, load_minilm, model_files
from broker.cache.minilm_onnx import OnnxMiniLM
from broker.cache.semantic import DEFAULT_THRESHOLD, Entry, SemanticIndex
from schemas import headers

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
                match = indexes[name].search("ctx", vector, text, DEFAULT_THRESHOLD, time.time())
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


async def over_nats(rounds: int) -> list[str]:
    """Echo, exact-key L1 hit and semantic hit on one broker stack."""
    samples: dict[str, list[float]] = {"echo": [], "exact": [], "semantic": []}
    pairs = paraphrases()
    async with deployment(CONFIG) as (_, nc):

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
    return [
        row("raw nats-py echo (baseline)", samples["echo"]),
        row("exact-key hit (L1) over NATS", samples["exact"]),
        row("semantic hit (L3, answer from L1) over NATS", samples["semantic"]),
    ]


def main(rounds: int = 3) -> None:
    print("\n| semantic tier | p50 ms | p99 ms | samples |")
    print("|---|---|---|---|")
    for line in asyncio.run(in_process(rounds)):
        print(line)
    print("\n| over NATS, tier on | p50 ms | p99 ms | samples |")
    print("|---|---|---|---|")
    for line in asyncio.run(over_nats(rounds)):
        print(line)
    from bench import semantic_placement

    semantic_placement.main()


if __name__ == "__main__":
    main()
