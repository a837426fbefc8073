"""The semantic tier's decision on labelled pairs: precision, recall, and where it errs.

    python -m bench.semantic_quality                   # the tuning half, default decision
    python -m bench.semantic_quality --calibrate       # the tuning half: each rule's bound
    python -m bench.semantic_quality --set heldout     # the held-out half: the reported figure
    python -m bench.semantic_quality --set pairs       # the first 303 pairs

The sets (``tests/data/semantic_tune.tsv`` and ``semantic_heldout.tsv``: 1,780 pairs over 7
kinds of paraphrase and 18 kinds of hard negative, in 11 domains, written by three writers
who saw neither the guard nor the threshold) were split once, at random with seed 20261206,
into halves: tune on the first, report the second. The decision measured is the broker's own
path: each pair's first wording is remembered in a :class:`SemanticIndex`, the second is
looked up with the broker's embedder and :class:`broker.cache.decision.Decision` (the rule
``target_error_rate`` picks, its cosine floor and its check), as :meth:`SemanticCache.lookup`
does. ``--calibrate`` prints each rule's hits, wrong hits and the one-sided 95%
Clopper-Pearson upper bound on the share of wrong hits: the figures in
:data:`broker.cache.decision.RUNGS`.
"""

from __future__ import annotations

import argparse
import collections
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.cache.decision import Decision
    from broker.cache.embed import Vector

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SETS = {
    "tune": DATA / "semantic_tune.tsv",
    "heldout": DATA / "semantic_heldout.tsv",
    "pairs": DATA / "semantic_pairs.tsv",
}

Pair = tuple[str, bool, str, str]  # kind, whether the answers are the same, first, second


def read(name: str) -> list[Pair]:
    """The labelled pairs of a set."""
    pairs = []
    for line in SETS[name].read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) == 3:  # kind, first, second: "para" is the same question
            kind, first, second = fields
            pairs.append((kind, kind == "para", first, second))
        else:
            kind, _domain, label, first, second = fields
            pairs.append((kind, label == "same", first, second))
    return pairs


def served(decision: Decision, vectors: dict[str, Vector], first: str, second: str) -> bool:
    """Whether the broker's index and decision serve ``first``'s answer to ``second``."""
    from broker.cache.semantic_index import Entry, SemanticIndex

    index = SemanticIndex(1)
    index.put("e", Entry("ctx", "answer", first, vectors[first].tobytes(), math.inf))
    match = index.search("ctx", vectors[second], second, decision.threshold, 0.0, decision.accepts)
    return match is not None


def upper_bound(wrong: int, hits: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a rate seen as ``wrong`` of ``hits``."""
    if hits in {0, wrong}:
        return 1.0
    low, high = wrong / hits, 1.0
    for _ in range(60):  # bisection on the binomial tail P(X <= wrong) = 1 - confidence
        mid = (low + high) / 2
        tail = sum(math.comb(hits, i) * mid**i * (1 - mid) ** (hits - i) for i in range(wrong + 1))
        low, high = (mid, high) if tail > 1 - confidence else (low, mid)
    return high


@dataclass(frozen=True, slots=True)
class Result:
    """A decision's figures on a set."""

    pairs: int
    same: int
    hits: int
    wrong: int
    false_hits: dict[str, int]
    misses: dict[str, int]

    @property
    def precision(self) -> float:
        """Right hits over hits."""
        return (self.hits - self.wrong) / max(self.hits, 1)

    @property
    def recall(self) -> float:
        """Right hits over the pairs that ask the same thing."""
        return (self.hits - self.wrong) / max(self.same, 1)

    @property
    def bound(self) -> float:
        """The 95% upper bound on the share of wrong hits."""
        return upper_bound(self.wrong, self.hits)


def evaluate(
    decision: Decision, pairs: list[Pair], vectors: dict[str, Vector]
) -> dict[str, object]:
    """Hits, wrong hits, precision, recall, and wrong hits and misses by kind."""
    hits = wrong = same = 0
    false_hits: collections.Counter[str] = collections.Counter()
    misses: collections.Counter[str] = collections.Counter()
    for kind, is_same, first, second in pairs:
        hit = served(decision, vectors, first, second)
        same += is_same
        hits += hit
        if is_same:
            misses[kind] += not hit
        else:
            wrong += hit
            false_hits[kind] += hit
    return Result(
        len(pairs),
        same,
        hits,
        wrong,
        {k: v for k, v in false_hits.most_common() if v},
        dict(misses.most_common()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=sorted(SETS), default="tune")
    parser.add_argument("--target-error-rate", type=float, default=None)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--calibrate", action="store_true")
    args = parser.parse_args()

    from broker.cache.decision import DEFAULT_TARGET_ERROR_RATE, RUNGS, Decision, rung_for
    from broker.cache.embedder import load_minilm

    embedder = load_minilm()
    words = getattr(embedder, "words", frozenset())
    pairs = read(args.set)
    vectors = {t: embedder.embed(t) for _, _, a, b in pairs for t in (a, b)}
    if args.calibrate:
        for rung in RUNGS:
            result = evaluate(Decision(rung, vocabulary=words), pairs, vectors)
            print(
                f"{rung.check} at {rung.threshold}: {result.hits} hits, {result.wrong} wrong,"
                f" bound {result.bound:.4f}, recall {result.recall:.3f}"
            )
        return
    target = args.target_error_rate or DEFAULT_TARGET_ERROR_RATE
    rung = rung_for(target)
    result = evaluate(Decision(rung, args.threshold, vocabulary=words), pairs, vectors)
    print(
        f"{args.set}: {result.pairs} pairs ({result.same} same), target error rate"
        f" {target} ({rung.check}, cosine {args.threshold or rung.threshold}): precision"
        f" {result.precision:.3f}, recall {result.recall:.3f}, {result.wrong} false"
        f" hits of {result.hits} (95% bound {result.bound:.4f})"
    )
    print("false hits by kind:", result.false_hits)
    print("misses by kind:", result.misses)


if __name__ == "__main__":
    main()
