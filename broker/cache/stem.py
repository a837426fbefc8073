"""The verifier's stemmer: "creates", "created", "creating" and "create" read ``creat``."""

from __future__ import annotations

from broker.cache.lexicon import IRREGULAR

__all__ = ["stem"]


def stem(word: str) -> str:
    """A light English stem: plural, ``-ing`` and ``-ed`` stripped, a final ``e`` dropped,
    so "creates", "created", "creating" and "create" all read ``creat``."""
    word = IRREGULAR.get(word, word)
    if len(word) <= 2 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(("sses", "xes", "ches", "shes", "zes")):
        word = word[:-2]
    elif word.endswith("s") and len(word) > 3 and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    elif word.endswith("ied") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("ing") and len(word) > 5:
        word = _undouble(word[:-3])
    elif word.endswith("ed") and len(word) > 3:
        word = _undouble(word[:-2])
    if len(word) > 2 and word.endswith("e"):
        word = word[:-1]
    return word


def _undouble(word: str) -> str:
    if len(word) > 2 and word[-1] == word[-2] and word[-1] not in "lsz":
        return word[:-1]
    return word
