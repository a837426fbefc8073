"""The semantic tier's in-process index: growth, removal, stale ranks, bad entries."""

from __future__ import annotations

import random

import numpy as np

from broker.cache.semantic_index import DIM, Entry, SemanticIndex

TEXT = "How do I reset my password?"
FAR_FUTURE = 4e9


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _entry(context: str, answer: str, vector: np.ndarray, text: str = TEXT) -> Entry:
    return Entry(context, answer, text, vector.astype(np.float32).tobytes(), FAR_FUTURE)


def test_every_entry_is_found_after_growth_and_random_removals() -> None:
    """Thousands of entries in one context, then half removed in random order: each remaining
    entry's own vector finds its own answer, each removed one finds nothing."""
    rng = np.random.default_rng(7)
    index = SemanticIndex()
    vectors = {f"e{i}": _unit(rng) for i in range(3000)}
    for entry_id, vector in vectors.items():
        assert index.put(entry_id, _entry("ctx", "answer-" + entry_id, vector))
    gone = set(random.Random(7).sample(sorted(vectors), 1500))
    for entry_id in gone:
        index.remove(entry_id)
    assert len(index) == 1500
    for entry_id, vector in vectors.items():
        match = index.search("ctx", vector, TEXT, 0.99, 0.0)
        if entry_id in gone:
            assert match is None
        else:
            assert match is not None
            assert match.answer == "answer-" + entry_id
            assert match.similarity > 0.999


def test_a_replaced_entry_moves_to_its_new_context() -> None:
    rng = np.random.default_rng(1)
    index = SemanticIndex()
    vector = _unit(rng)
    index.put("e", _entry("old", "first", vector))
    index.put("e", _entry("new", "second", vector))
    assert index.search("old", vector, TEXT, 0.9, 0.0) is None
    match = index.search("new", vector, TEXT, 0.9, 0.0)
    assert match is not None
    assert match.answer == "second"
    assert len(index) == 1


def test_an_entry_whose_vector_is_not_384_floats_is_not_indexed() -> None:
    """A bad value in the shared bucket (another version, a corrupt write) is skipped, and the
    context's good entries are still searched."""
    rng = np.random.default_rng(2)
    index = SemanticIndex()
    good = _unit(rng)
    assert index.put("good", _entry("ctx", "kept", good))
    assert not index.put("short", Entry("ctx", "bad", TEXT, b"\x00" * 12, FAR_FUTURE))
    assert len(index) == 1
    match = index.search("ctx", good, TEXT, 0.9, 0.0)
    assert match is not None
    assert match.answer == "kept"


def test_a_stale_rank_never_serves_a_moved_entry() -> None:
    """Rows ranked on the embedding thread may move before the loop chooses (a removal moves
    the last entry into the freed row): the choice rescores each row's current vector, so the
    entry that moved in is not served for a vector it does not match."""
    rng = np.random.default_rng(3)
    index = SemanticIndex()
    asked = _unit(rng)
    index.put("match", _entry("ctx", "right", asked))
    for i in range(20):
        index.put(f"other{i}", _entry("ctx", f"wrong{i}", _unit(rng)))
    rows = index.rank("ctx", asked)
    index.remove("match")  # the last entry now sits in the ranked best row
    assert index.choose("ctx", rows, asked, TEXT, threshold=0.9, now=0.0) is None


def test_expired_entries_and_disagreeing_anchors_are_passed_over() -> None:
    """The most similar entry serves only while live and when its anchors agree; the next
    most similar one is tried."""
    rng = np.random.default_rng(4)
    index = SemanticIndex()
    asked = _unit(rng)
    near = asked + 0.05 * _unit(rng)
    index.put("expired", Entry("ctx", "old", TEXT, asked.tobytes(), 10.0))
    index.put("other-number", _entry("ctx", "five", asked, "Convert 5 km to miles"))
    index.put("live", _entry("ctx", "fresh", near / np.linalg.norm(near)))
    match = index.search("ctx", asked, TEXT, 0.9, 20.0)
    assert match is not None
    assert match.answer == "fresh"


async def test_a_watch_event_older_than_a_purge_does_not_bring_the_entry_back() -> None:
    """An entry written before a purge but delivered by the watch after it stays purged; one
    written after the purge (a higher revision), or outside its prefix, is indexed."""
    from types import SimpleNamespace

    import msgspec

    from broker.cache.semantic import SemanticCache
    from broker.cache.settings import SemanticSettings

    cache = SemanticCache(SemanticSettings(enabled=True), embedder=None)  # type: ignore[arg-type]
    cache._purged.append(("default.ns.", 10))  # what purge("default:ns:") records
    vector = _unit(np.random.default_rng(7))

    def event(key: str, context: str, revision: int) -> SimpleNamespace:
        value = msgspec.msgpack.encode(_entry(context, f"{context}:answer", vector))
        return SimpleNamespace(key=key, value=value, revision=revision, operation=None)

    async def watcher():  # type: ignore[no-untyped-def]
        yield event("default.ns.aaa.1", "default:ns:aaa", 9)  # before the purge: dropped
        yield event("default.ns.bbb.2", "default:ns:bbb", 11)  # after it: kept
        yield event("default.other.ccc.3", "default:other:ccc", 5)  # another namespace: kept

    await cache._follow(watcher())
    assert sorted(cache.index.ids("default:")) == ["default.ns.bbb.2", "default.other.ccc.3"]


def _expiring(context: str, answer: str, vector: np.ndarray, expires: float) -> Entry:
    return Entry(context, answer, TEXT, vector.astype(np.float32).tobytes(), expires)


def test_expired_entries_leave_the_index() -> None:
    """A sweep removes every entry expired by then, and only those; an entry written again
    with a later expiry stays until that one."""
    rng = np.random.default_rng(3)
    index = SemanticIndex()
    vectors = [_unit(rng) for _ in range(100)]
    for i, vector in enumerate(vectors):
        index.put(f"e{i}", _expiring("ctx", f"a{i}", vector, expires=float(i)))
    index.put("e10", _expiring("ctx", "a10", vectors[10], expires=500.0))  # refreshed
    assert index.sweep(49.5) == 49  # e0..e49 but e10
    assert len(index) == 51
    assert index.search("ctx", vectors[10], TEXT, 0.99, 0.0) is not None
    assert index.search("ctx", vectors[20], TEXT, 0.99, 0.0) is None
    assert index.sweep(1000.0) == 51
    assert len(index) == 0
    assert index.sweep(2000.0) == 0


def test_the_index_holds_at_most_max_entries_dropping_the_soonest_to_expire() -> None:
    rng = np.random.default_rng(5)
    index = SemanticIndex(max_entries=1000)
    vectors = [_unit(rng) for _ in range(5000)]
    for i, vector in enumerate(vectors):
        index.put(f"e{i}", _expiring(f"ctx{i % 7}", f"a{i}", vector, expires=1e6 + i))
        assert len(index) <= 1000
    assert len(index) == 1000
    kept = [i for i in range(5000) if index.search(f"ctx{i % 7}", vectors[i], TEXT, 0.99, 0.0)]
    assert kept == list(range(4000, 5000))  # the latest to expire


def test_the_entry_whose_anchors_agree_is_found_among_near_identical_ones() -> None:
    """Questions of one template differing by a number embed almost alike: the one asked
    about is found even when a dozen others rank above it by cosine."""
    rng = np.random.default_rng(11)
    base = _unit(rng)
    index = SemanticIndex()
    vectors = {}
    for n in range(50):
        v = base + 0.01 * _unit(rng)
        vectors[n] = v / np.linalg.norm(v)
        text = f"What is the population of town number {n}?"
        index.put(f"e{n}", Entry("ctx", f"a{n}", text, vectors[n].tobytes(), FAR_FUTURE))
    query = "What's the population of town number 37?"
    ranked = sorted(range(50), key=lambda n: -float(vectors[n] @ base))
    assert ranked.index(37) >= 4  # not among the first few by cosine alone
    match = index.search("ctx", base, query, 0.9, 0.0)
    assert match is not None
    assert match.answer == "a37"
