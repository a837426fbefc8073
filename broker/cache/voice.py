"""The verifier's passive to active: "X is written by Y" reads "Y write X".

The order check of :mod:`broker.cache.verify` compares the order of content words, which a
change of voice moves: "How does the kernel schedule threads?" / "How are threads scheduled
by the kernel?". Skipping the order check whenever one text was passive let a role swap
through ("The client calls the server" / "The client is called by the server"), so each
clause's first simple passive is put in active order instead, and the order check always
runs: ``S be V-ed [by A] R`` and the question's ``be S V-ed [by A] R`` become ``A V S R``
(``V S R`` without an agent, as an imperative reads: "How is a context cancelled?" / "How do
I cancel a context?"). A passive it does not recognise stays as written and, against an
active wording, is a miss.
"""

from __future__ import annotations

from broker.cache.lexicon import _words

__all__ = ["Entry", "active"]

#: ``(stem, word as written, clause, quoted, free)``: one word of a clause before the free
#: words are dropped.
Entry = tuple[str, str, int, bool, bool]

#: Irregular past participles (others end in ``-ed``).
_PARTICIPLES = _words("""
written given taken done made found built sent bought sold got gotten gone seen known thought
told said paid kept left meant begun chosen drawn spent led held brought caught taught put set
cut read run shown grown thrown driven eaten broken spoken stolen frozen hidden ridden worn
torn sung swum won lost hung dug fed felt heard laid lit met shut spun stuck struck sworn
""")
#: Words that may stand between the auxiliary and the participle ("is always used").
_BETWEEN = _words("being been not never also often usually always still then just")
#: Words an agent phrase may start with before its noun ("by the kernel").
_DETERMINERS = _words("a an the this that these those my your our their its his her")
_REACH = 10  # how far after the auxiliary the participle may be ("is the new user created")
#: Words that end an agent phrase ("by the page every time ...").
_AGENT_ENDS = _words("every each all some any when while during after before")
#: Words between a subject and its auxiliary ("a tool call should be").
_MODALS = _words("can could should would will may might must shall not")


def _participle(word: str) -> bool:
    if word in _PARTICIPLES:
        return True
    return len(word) > 4 and word.endswith("ed") and not word.endswith("eed")


def active(clause: list[Entry]) -> list[Entry]:
    """The clause with its first simple passive in active order (else as it is)."""
    for b, entry in enumerate(clause):
        if entry[0] != "be" or entry[3]:
            continue
        adjacent = True
        for p in range(b + 1, min(b + 1 + _REACH, len(clause))):
            word = clause[p][1]
            # after the subject ("is a nested loop join executed"), a participle that a
            # content word follows is the subject's own ("nested"), not the verb
            ends = p + 1 == len(clause) or clause[p + 1][4]
            if _participle(word) and (adjacent or ends):
                return _reorder(clause, b, p)
            if clause[p][0] == "be" or word in {"by", "to"}:
                break
            adjacent = adjacent and word in _BETWEEN
    return clause


def _reorder(clause: list[Entry], b: int, p: int) -> list[Entry]:
    inverted = [i for i in range(b + 1, p) if not clause[i][4]]
    if inverted:  # "how is a context cancelled"
        subject = inverted
    else:  # "a context is cancelled": the content words just before the auxiliary
        subject = []
        i = b - 1
        while i >= 0 and clause[i][4] and clause[i][1] in _MODALS:
            i -= 1
        while i >= 0 and not clause[i][4]:
            subject.insert(0, i)
            i -= 1
    if not subject:
        return clause
    agent: list[int] = []
    if p + 1 < len(clause) and clause[p + 1][1] == "by":
        for i in range(p + 2, len(clause)):
            if (clause[i][4] and clause[i][1] not in _DETERMINERS) or clause[i][1] in _AGENT_ENDS:
                break
            if not clause[i][4]:
                agent.append(i)
    elif clause[0][1] == "by":  # "by whom was it written"
        agent = [i for i in range(1, b) if not clause[i][4]]
        subject = [i for i in subject if i not in agent]
        if not subject:
            return clause
    moved = [*agent, p, *subject]
    taken, first = set(moved), min(moved)
    before = [e for i, e in enumerate(clause) if i < first and i not in taken]
    after = [e for i, e in enumerate(clause) if i > first and i not in taken]
    return [*before, *(clause[i] for i in moved), *after]
