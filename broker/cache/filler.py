"""The verifier's asides: a sentence about the asker that does not change the question.

"Hi! My team lead asked me to look into this today. How do I iterate over a HashMap in
Rust?" asks what "How do I iterate over a HashMap in Rust?" asks. A sentence is an *aside*
(:func:`is_aside`) when it is a statement about the asker or the moment, with nothing an
answer could hinge on: not a question, no number, code, quote or negation, no name (a
capitalised word past the first: "I'm on Windows", "My aunt is in Paris"), and none of the
words that usually set up a constraint (:data:`~broker.cache.lexicon.SETUP`: "I use ...",
"I'm vegetarian", "on a budget", "a beginner"). The verifier of
:mod:`broker.cache.verify` may drop asides that open or close one wording when the rest
then verifies against the other wording, none of the dropped words is a content word of
the rest (a sentence about the question's own subject is context: "My old card expired.
How do I update my card?"), and the rest asks nothing open-ended, whose answer depends on
who asks (:data:`~broker.cache.lexicon.OPEN`: "I'm vegetarian. Suggest a dinner.").
"""

from __future__ import annotations

from collections.abc import Iterator

from broker.cache.lexicon import OPEN, SETUP

__all__ = ["OPEN", "SENTENCE_ENDS", "cores", "is_aside"]

#: What ends a sentence for this purpose: an aside may also be a clause before a colon or
#: a dash ("Quick one before my standup: how do I ...").
SENTENCE_ENDS = frozenset((".", "!", "?", "\n", ":", "\u2014", "\u2013", " - "))

Token = tuple[str, str, int, bool]


def is_aside(words: list[tuple[str, str, bool]], end: str) -> bool:
    """Whether a sentence may be an aside.

    Args:
        words: its tokens, ``(kind, token as written, quoted)``, kind one of ``word``,
            ``num``, ``sym``, ``neg`` (a negation).
        end: what ended it (``"?"``, ``"."`` ... or ``""`` at the end of the text).
    """
    if end == "?" or not words:
        return False
    for k, (kind, raw, quoted) in enumerate(words):
        if kind != "word" or quoted:
            return False
        if k and raw[:1].isupper() and raw != "I" and not raw.startswith("I'"):
            return False
        if raw.lower() in SETUP:
            return False
    return True


def cores(
    tokens: tuple[Token, ...],
    sentences: tuple[int, ...],
    asides: frozenset[int],
    open_ended: frozenset[int],
) -> Iterator[tuple[Token, ...]]:
    """The wordings left when leading and trailing asides are dropped (each choice, fewest
    dropped first), where no dropped word is a content word of the rest and the rest asks
    nothing open-ended."""
    order = sorted(set(sentences))
    lead = 0
    while lead < len(order) and order[lead] in asides:
        lead += 1
    trail = 0
    while trail < len(order) - lead and order[-1 - trail] in asides:
        trail += 1
    for i in range(lead + 1):
        for j in range(trail + 1):
            if (i or j) and i + j < len(order):
                kept = set(order[i : len(order) - j])
                if not kept & open_ended:
                    yield from _core(tokens, sentences, kept)


def _core(
    tokens: tuple[Token, ...], sentences: tuple[int, ...], kept: set[int]
) -> Iterator[tuple[Token, ...]]:
    core = tuple(t for t, s in zip(tokens, sentences, strict=True) if s in kept)
    stems = {t[0] for t in core}
    dropped = {t[0] for t, s in zip(tokens, sentences, strict=True) if s not in kept}
    if core and not (stems & dropped):
        yield core
