"""The semantic tier's in-process index: remembered questions by context, searched exactly.

A request's candidates are the entries of its own context only (same tenant, namespace,
model, system prompt, earlier turns and parameters: :func:`broker.cache.key.context_key`),
so the index is a map from context to that context's entries. An application with one
system prompt puts every question it caches in one context: that context may hold
hundreds of thousands of entries, and every broker receives every broker's writes.

So each context keeps its vectors as the rows of one float32 matrix that grows by a quarter:
an entry is added in amortised O(1) and removed in O(1) (the last row moves into its place);
nothing is rebuilt when the index changes. A search is one matrix-vector product and a
partial sort for the few best rows (:meth:`SemanticIndex.rank`, run on the embedding thread:
at 100k entries in one context it takes ~6 ms), then a rescoring of those rows and the anchor
guard, most similar first (:meth:`SemanticIndex.choose`, on the event loop). Exact, not
approximate: an HNSW graph (usearch) searched 100k entries in 0.5 ms, but cost every broker
0.5 ms of CPU per write anywhere and ~50 s to index 100k entries at start (docs/semantic-cache.md).
The vectors live only in the matrix: the entries kept beside them drop their wire copy.

Bounded: an entry leaves the index when it expires (:meth:`SemanticIndex.sweep`; an entry
the bucket drops by its age sends no watch event, so each broker sweeps its own index), and
past ``max_entries`` the entries closest to expiry leave first. Each entry costs about 2.3 KB
(its 1.5 KB vector, text, keys and bookkeeping: 230 MiB at 100k, measured).

NumPy is imported by the methods that need it: a broker without the tier never loads it.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from broker.cache.anchors import agree
from broker.cache.settings import DEFAULT_MAX_ENTRIES

if TYPE_CHECKING:
    from broker.cache.embed import Vector

__all__ = ["DEFAULT_MAX_ENTRIES", "DIM", "Entry", "Match", "SemanticIndex"]

#: Width of the vectors (all-MiniLM-L6-v2); entries of another width are not indexed.
DIM = 384
#: Candidates checked by the guard, most similar first, before a search gives up: questions
#: of one template ("... town number 17 ...") embed within a hair of each other, and the
#: one whose anchors agree may rank well below the first few (a guard check costs ~20 us).
GUARDED = 16
_FIRST_ROWS = 8


class Entry(msgspec.Struct, array_like=True, frozen=True):
    """One remembered question: its context, exact answer key, text, vector, expiry."""

    context: str
    answer: str
    text: str
    vector: bytes
    expires: float


@dataclass(frozen=True, slots=True)
class Match:
    """The earlier question that serves a request."""

    answer: str
    similarity: float


class _Context:
    """One context's entries, their vectors the first ``len(ids)`` rows of ``matrix``."""

    __slots__ = ("entries", "ids", "matrix", "rows")

    def __init__(self) -> None:
        import numpy as np  # noqa: PLC0415  (only with the tier on)

        self.ids: list[str] = []
        self.entries: list[Entry] = []
        self.rows: dict[str, int] = {}
        self.matrix: Any = np.empty((_FIRST_ROWS, DIM), np.float32)

    def put(self, entry_id: str, entry: Entry, vector: Vector) -> None:
        row = self.rows.get(entry_id)
        if row is None:
            row = len(self.ids)
            if row == len(self.matrix):  # a quarter more: amortised O(1), little slack
                self._resize(row + max(row // 4, _FIRST_ROWS))
            self.ids.append(entry_id)
            self.entries.append(entry)
            self.rows[entry_id] = row
        else:
            self.entries[row] = entry
        self.matrix[row] = vector

    def remove(self, entry_id: str) -> None:
        row = self.rows.pop(entry_id)
        last = len(self.ids) - 1
        if row != last:  # the last entry takes the freed row
            moved = self.ids[last]
            self.ids[row], self.entries[row] = moved, self.entries[last]
            self.matrix[row] = self.matrix[last]
            self.rows[moved] = row
        self.ids.pop()
        self.entries.pop()
        if _FIRST_ROWS < len(self.matrix) >= 2 * len(self.ids):
            self._resize(len(self.ids) + max(len(self.ids) // 4, _FIRST_ROWS))

    def _resize(self, rows: int) -> None:
        import numpy as np  # noqa: PLC0415

        grown = np.empty((rows, DIM), np.float32)
        used = len(self.ids)
        grown[:used] = self.matrix[:used]
        self.matrix = grown

    def best(self, vector: Vector) -> list[int]:
        """The rows of the most similar entries, most similar first."""
        import numpy as np  # noqa: PLC0415

        scores = self.matrix[: len(self.ids)] @ vector
        if len(scores) <= GUARDED:
            return [int(row) for row in np.argsort(-scores)]
        top = np.argpartition(-scores, GUARDED - 1)[:GUARDED]
        return [int(row) for row in top[np.argsort(-scores[top])]]


class SemanticIndex:
    """In-process vectors by context; exact cosine search within one context.

    Args:
        max_entries: the most entries held; past it, those closest to expiry leave first.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._contexts: dict[str, _Context] = {}
        self._where: dict[str, str] = {}  # entry id -> context
        self._expires: dict[str, float] = {}  # entry id -> its expiry
        #: (expiry, entry id), soonest first; an item whose expiry is no longer its entry's
        #: (replaced or removed) is skipped when it comes up
        self._queue: list[tuple[float, str]] = []
        self.max_entries = max_entries

    def __len__(self) -> int:
        return len(self._where)

    def sweep(self, now: float) -> int:
        """Remove the entries expired by ``now``; how many left."""
        removed = 0
        while self._queue and self._queue[0][0] <= now:
            removed += self._pop()
        return removed

    def _pop(self) -> int:
        """Remove the entry soonest to expire (1), or drop a stale queue item (0)."""
        expires, entry_id = heapq.heappop(self._queue)
        if self._expires.get(entry_id) != expires:
            return 0
        self.remove(entry_id)
        return 1

    def _compact(self) -> None:
        """Rebuild the queue when stale items outnumber live ones (replaced entries)."""
        if len(self._queue) > 2 * len(self._expires) + 64:
            self._queue = [(e, i) for i, e in self._expires.items()]
            heapq.heapify(self._queue)

    def put(self, entry_id: str, entry: Entry) -> bool:
        """Add or replace an entry; ``False`` (and nothing indexed) when its vector is not
        ``DIM`` float32 values."""
        import numpy as np  # noqa: PLC0415

        if len(entry.vector) != DIM * 4:
            return False
        vector = np.frombuffer(entry.vector, np.float32)
        if self._where.get(entry_id, entry.context) != entry.context:
            self.remove(entry_id)
        key = sys.intern(entry.context)  # one copy per context, not one per entry
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = _Context()
        context.put(entry_id, msgspec.structs.replace(entry, context=key, vector=b""), vector)
        self._where[entry_id] = key
        self._expires[entry_id] = entry.expires
        heapq.heappush(self._queue, (entry.expires, entry_id))
        while len(self._where) > self.max_entries:
            self._pop()
        self._compact()
        return True

    def remove(self, entry_id: str) -> None:
        """Drop an entry (absent is fine)."""
        context_key = self._where.pop(entry_id, None)
        if context_key is None:
            return
        del self._expires[entry_id]  # its queue item goes stale
        context = self._contexts[context_key]
        context.remove(entry_id)
        if not context.ids:
            del self._contexts[context_key]

    def ids(self, prefix: str) -> list[str]:
        """The ids of entries whose context starts with ``prefix``."""
        return [i for i, context in self._where.items() if context.startswith(prefix)]

    def rank(self, context_key: str, vector: Vector) -> list[int]:
        """The rows of the context's most similar entries, most similar first.

        The part of a search that grows with the context (a matrix-vector product), safe to
        run on another thread while the event loop changes the index: rows that moved in the
        meantime are rescored by :meth:`choose`, so a stale rank costs at most a miss."""
        context = self._contexts.get(context_key)
        return [] if context is None else context.best(vector)

    def choose(
        self,
        context_key: str,
        rows: list[int],
        vector: Vector,
        text: str,
        *,
        threshold: float,
        now: float,
        accepts: Callable[[str, str], bool] = agree,
    ) -> Match | None:
        """Of ranked ``rows``, the most similar live entry at or over ``threshold`` that
        ``accepts(text, entry's text)`` (the decision's check, by default the anchors');
        each row's similarity is computed again from its current vector."""
        context = self._contexts.get(context_key)
        if context is None:
            return None
        scored = []
        for row in rows:
            if row < len(context.ids):
                score = float(context.matrix[row] @ vector)
                if score >= threshold:
                    scored.append((score, context.entries[row]))
        for score, entry in sorted(scored, key=lambda pair: -pair[0]):
            if entry.expires > now and accepts(text, entry.text):
                return Match(entry.answer, score)
        return None

    def search(  # noqa: PLR0917 - the same arguments as choose, which callers pass in order
        self,
        context_key: str,
        vector: Vector,
        text: str,
        threshold: float,
        now: float,
        accepts: Callable[[str, str], bool] = agree,
    ) -> Match | None:
        """:meth:`rank` then :meth:`choose`, on one thread."""
        rows = self.rank(context_key, vector)
        return self.choose(
            context_key, rows, vector, text, threshold=threshold, now=now, accepts=accepts
        )
