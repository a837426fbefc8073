"""Whether the semantic tier serves an earlier answer: the rule, picked by an error rate.

An operator sets ``[cache.semantic] target_error_rate``: the share of semantic hits that may
serve an answer to a different question. Each rule the broker knows (:data:`RUNGS`) was
measured once on the tuning half of the labelled set (``tests/data/semantic_tune.tsv``, 890
pairs, split from the held-out half with seed 20261206) by ``python -m bench.semantic_quality
--calibrate``; its *bound* is the one-sided 95% Clopper-Pearson upper bound on the share of
its hits there that were wrong. The broker takes the rule of highest recall whose bound is
within the target; a target below every bound is refused (it cannot be shown from the data).

- ``verified`` (the default): cosine at or over 0.75, and the token-level verifier of
  :mod:`broker.cache.verify` passes. On the tuning half: 149 hits, none wrong (bound 0.020),
  recall 0.390. The cosine floor is not what makes it precise (the verifier alone made no
  false hit either, 152 hits at 0.0; 143 at 0.80): it keeps a candidate that shares the
  words but not the topic's embedding out.
- ``anchored`` (the rule before the verifier): cosine at or over 0.90 and the anchors of
  :mod:`broker.cache.anchors` agree. 259 hits, 126 wrong (bound 0.54), recall 0.348: below
  ``verified``'s recall, so no target picks it any more; it stays measured here (and
  usable as ``Decision(RUNGS[-1])``) because on FAQ-like text such as
  ``tests/data/semantic_pairs.tsv`` it reaches recall 0.83.

Per-entry thresholds (vCache) learn each cached entry's own cosine from served-and-checked
outcomes; the broker has no such outcomes to learn from, so the offline analogue is this
calibration of one rule per error rate.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass

from broker.cache.anchors import agree
from broker.cache.verify import Parsed, Verifier, parse

__all__ = [
    "DEFAULT_TARGET_ERROR_RATE",
    "RUNGS",
    "Check",
    "Decision",
    "Rung",
    "rung_for",
]


class Check(enum.StrEnum):
    """What two wordings must pass besides their cosine."""

    VERIFIED = "verified"  # the token-level verifier (broker/cache/verify.py)
    ANCHORED = "anchored"  # numbers, units, names, negations and code agree


@dataclass(frozen=True, slots=True)
class Rung:
    """One decision rule and what it measured on the tuning half."""

    check: Check
    threshold: float
    #: 95% Clopper-Pearson upper bound on the share of wrong hits.
    bound: float
    hits: int
    false_hits: int
    recall: float


#: Measured by ``python -m bench.semantic_quality --calibrate`` (2026-12-07) on the tuning
#: half (890 pairs: 382 paraphrases, 508 hard negatives), strictest first.
RUNGS = (
    Rung(Check.VERIFIED, 0.75, bound=0.0199, hits=149, false_hits=0, recall=0.390),
    Rung(Check.ANCHORED, 0.90, bound=0.5394, hits=259, false_hits=126, recall=0.348),
)
#: The default target: met by ``verified`` (bound 0.020).
DEFAULT_TARGET_ERROR_RATE = 0.025


def rung_for(target_error_rate: float) -> Rung:
    """The rule of highest recall whose bound is within ``target_error_rate``.

    Raises:
        ValueError: no rule's bound is that low.
    """
    eligible = [rung for rung in RUNGS if rung.bound <= target_error_rate]
    if not eligible:
        lowest = min(rung.bound for rung in RUNGS)
        raise ValueError(
            f"cache.semantic.target_error_rate {target_error_rate} is below what the labelled "
            f"set can show for any rule (lowest bound {lowest})"
        )
    return max(eligible, key=lambda rung: rung.recall)


class Decision:
    """The serve-or-miss check of a candidate that ranked at or over the cosine threshold.

    Args:
        rung: the rule (:func:`rung_for`).
        threshold: the cosine floor, when an operator set one; else the rule's.
        vocabulary: the embedding model's whole words, so the verifier can tell a typo
            from another word (empty: no typo is forgiven).
    """

    def __init__(
        self,
        rung: Rung = RUNGS[0],
        threshold: float | None = None,
        vocabulary: frozenset[str] = frozenset(),
    ) -> None:
        self.rung = rung
        self.threshold = rung.threshold if threshold is None else threshold
        self._verifier = Verifier(vocabulary)
        self.accepts: Callable[[str, str], bool] = (
            self._verified if rung.check is Check.VERIFIED else agree
        )

    def _verified(self, asked: str, cached: str) -> bool:
        return self._verifier(_parsed(asked), _parsed(cached))


@functools.lru_cache(maxsize=4096)
def _parsed(text: str) -> Parsed:
    # a cached question is checked again by every lookup that ranks it first
    return parse(text)
