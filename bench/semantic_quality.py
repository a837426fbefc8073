"""The semantic tier's decision on labelled pairs: precision, recall, and where it errs.

    python -m bench.semantic_quality                 # the tuning half
    python -m bench.semantic_quality --set heldout   # the held-out half: the reported figure
    python -m bench.semantic_quality --set pairs     # the first 303 pairs

The sets (``tests/data/semantic_tune.tsv`` and ``semantic_heldout.tsv``: 1,780 pairs over 7
kinds of paraphrase and 18 kinds of hard negative, in 11 domains, written by three writers
who saw neither the guard nor the threshold) were split once, at random with seed 20261206,
into halves: tune on the first, report the second. The decision measured is the broker's own:
cosine of the broker's embedder at or over the threshold, and the anchors' agreement.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=sorted(SETS), default="tune")
    parser.add_argument("--threshold", type=float, default=None)
    args = parser.parse_args()

    from broker.cache.anchors import agree
    from broker.cache.embedder import load_minilm
    from broker.cache.settings import DEFAULT_THRESHOLD

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    embedder = load_minilm()
    pairs = read(args.set)
    vectors = {t: embedder.embed(t) for _, _, a, b in pairs for t in (a, b)}
    served_same = served_other = same = 0
    false_hits: collections.Counter[str] = collections.Counter()
    misses: collections.Counter[str] = collections.Counter()
    for kind, is_same, first, second in pairs:
        served = float(vectors[first] @ vectors[second]) >= threshold and agree(first, second)
        same += is_same
        if is_same:
            served_same += served
            misses[kind] += not served
        else:
            served_other += served
            false_hits[kind] += served
    precision = served_same / max(served_same + served_other, 1)
    print(
        f"{args.set}: {len(pairs)} pairs ({same} same), threshold {threshold}: "
        f"precision {precision:.3f}, recall {served_same / max(same, 1):.3f}, "
        f"{served_other} false hits"
    )
    print("false hits by kind:", dict(false_hits.most_common()))
    print("misses by kind:", dict(misses.most_common()))


if __name__ == "__main__":
    main()
