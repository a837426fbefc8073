"""The verifier's order check: two content words keep their order in both wordings.

"Convert a CSV file to Parquet" and "Convert a Parquet file to CSV" have the same words; only
their order tells them apart. Run after :mod:`broker.cache.voice` put each passive in
active order, so a change of voice is not a change of order and a role swap across one is.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["same_order"]

Token = tuple[str, str, int, bool]


def same_order(a: tuple[Token, ...], b: tuple[Token, ...]) -> bool:
    """Whether every two content words that share a clause in both texts come in the same
    order in both (a word's n-th occurrence in one is its n-th in the other): within each
    pair of clauses, the words in one text's order have increasing places in the other."""
    where_a, where_b = _positions(a), _positions(b)
    last: dict[tuple[int, int], int] = {}
    for word, (_, clause_a) in where_a.items():  # in a's order
        found = where_b.get(word)
        if found is None:
            continue
        pos_b, clause_b = found
        if last.get((clause_a, clause_b), -1) > pos_b:
            return False
        last[clause_a, clause_b] = pos_b
    return True


def _positions(tokens: tuple[Token, ...]) -> dict[tuple[str, int], tuple[int, int]]:
    seen: Counter[str] = Counter()
    where = {}
    for i, token in enumerate(tokens):
        where[token[0], seen[token[0]]] = (i, token[2])
        seen[token[0]] += 1
    return where
