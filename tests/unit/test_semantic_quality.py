"""The semantic tier's decision on a labelled set of paraphrases and hard negatives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.semantic_quality import evaluate, read
from broker.cache.anchors import agree
from broker.cache.decision import RUNGS, Decision

# Loading two runtimes and embedding the set's ~600 wordings twice (float32 NumPy ~10 ms
# each) takes ~25 s on an idle 2-core machine and went past the 60 s default under load:
# this module's own bound is the CPU work it does, not the hang guard.
pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

PAIRS = Path(__file__).parent.parent / "data" / "semantic_pairs.tsv"


def _pairs() -> list[tuple[str, str, str]]:
    rows = []
    for line in PAIRS.read_text().splitlines():
        if line and not line.startswith("#"):
            kind, first, second = line.split("\t")
            rows.append((kind, first, second))
    return rows


@pytest.fixture(scope="module")
def embedder():  # type: ignore[no-untyped-def]
    from broker.cache.embedder import load_minilm

    return load_minilm()


@pytest.fixture(scope="module")
def reference():  # type: ignore[no-untyped-def]
    from broker.cache.embedder import load_minilm

    return load_minilm(runtime="numpy")


def test_broker_embeddings_match_the_float32_reference(embedder, reference) -> None:  # type: ignore[no-untyped-def]
    """The broker's embedder (ONNX Runtime, smoothed int8 projections) stays close to the
    NumPy float32 reference: cosine >= 0.985 on every wording of the labelled set and on a
    text cut at 128 tokens, and the same serve-or-not decision on >= 99% of the pairs, with
    no false hit the reference does not make."""
    from broker.cache.minilm_onnx import OnnxMiniLM

    assert isinstance(embedder, OnnxMiniLM)
    rows = _pairs()
    texts = sorted({text for _, first, second in rows for text in (first, second)})
    texts.append("a long question " * 100)  # cut at 128 tokens by both
    ours = {t: embedder.embed(t) for t in texts}
    theirs = {t: reference.embed(t) for t in texts}
    worst = min(float(ours[t] @ theirs[t]) for t in texts)
    differing, false_hits = 0, 0
    # the anchors' rule: its cosine floor (0.90) sits among these pairs' similarities, so it
    # is the one that shows a drift between the runtimes
    threshold = RUNGS[-1].threshold
    for kind, first, second in rows:
        guarded = agree(first, second)
        served = guarded and float(ours[first] @ ours[second]) >= threshold
        expected = guarded and float(theirs[first] @ theirs[second]) >= threshold
        differing += served != expected
        false_hits += served and not expected and kind != "para"
    print(
        f"\nONNX int8 vs NumPy float32: {len(texts)} texts, lowest cosine {worst:.5f};"
        f" {differing} of {len(rows)} decisions differ"
    )
    vector = ours[texts[0]]
    assert vector.dtype == np.float32
    assert vector.shape == (384,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    assert worst >= 0.985
    assert differing <= len(rows) // 100
    assert false_hits == 0


def test_labelled_pairs_meet_precision_and_recall(embedder) -> None:  # type: ignore[no-untyped-def]
    """The default decision, through the broker's index, makes no more wrong hits on the
    303 labelled pairs than its bound from the tuning half allows (0 of 32 there; 95% bound
    0.020), and still serves near a quarter of the paraphrases (recall >= 0.22, 0.239
    measured: the verifier refuses a paraphrase that changes a content word outside its
    synonyms, so the anchors' 0.83 is gone)."""
    pairs = read("pairs")
    assert len(pairs) >= 300
    words = getattr(embedder, "words", frozenset())
    vectors = {t: embedder.embed(t) for _, _, a, b in pairs for t in (a, b)}
    decision = Decision(vocabulary=words)
    result = evaluate(decision, pairs, vectors)
    print(f"\nsemantic pairs, default decision: {result}")
    assert result.wrong / max(result.hits, 1) <= decision.rung.bound
    assert result.recall >= 0.22


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("What is the capital of France?", "What is the capital of Germany?"),
        ("Convert 5 km to miles", "Convert 50 km to miles"),
        ("Convert 5 km to miles", "Convert 5 miles to km"),
        ("Is coffee bad for you?", "Is coffee not bad for you?"),
        ("What does `git rebase` do?", "What does `git merge` do?"),
    ],
)
def test_guard_refuses_a_changed_anchor(first: str, second: str) -> None:
    """A changed name, number, unit order, negation or code token is never a candidate."""
    assert not agree(first, second)


def test_guard_accepts_a_reworded_question() -> None:
    """Rewording around the same anchors is a candidate."""
    assert agree("What is the capital of France?", "Which city is France's capital?")
    assert agree("Convert 5 km to miles", "Convert five kilometres to miles")


def test_int8_weights_cannot_saturate_a_cpu_without_vnni() -> None:
    """Every int8 weight of the broker's graph is within 7 bits: on an AVX2-only CPU the
    integer GEMM adds two uint8 x int8 products into a saturating int16, which no pair can
    overflow at this range, so its integer results equal those of AVX-512 and VNNI CPUs (an
    8-bit weight made 3 of 303 decisions differ from the reference on an AVX2-only CPU)."""
    import onnx
    from onnx import numpy_helper

    from broker.cache.calibration import activation_ranges
    from broker.cache.embedder import model_files
    from broker.cache.minilm_onnx import WEIGHT_LIMIT, build_graph

    weights, tokenizer = model_files()
    model = onnx.load_from_string(
        build_graph(weights, ranges=activation_ranges(weights, tokenizer))
    )
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantized = [
        inits[node.input[1]] for node in model.graph.node if node.op_type == "DynamicQuantizeMatMul"
    ]
    assert len(quantized) == 6 * 4  # four projections in each of six layers
    largest = max(int(np.abs(q.astype(np.int32)).max()) for q in quantized)
    assert largest <= WEIGHT_LIMIT
    assert 2 * 255 * largest <= np.iinfo(np.int16).max
