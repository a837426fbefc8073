"""Appending to the audit trail: one chain for every writer, serialized by JetStream.

Each record names the stream sequence it will have and links to the record before it
(:mod:`schemas.audit`). A writer publishes with ``Nats-Expected-Last-Sequence`` set to the
last sequence it read: JetStream stores the record only if nothing was written since, so
several brokers writing at once cannot interleave two records on one link. The loser of such
a race is told so (``wrong last sequence``), reads the new last record and publishes again.
Admin actions come a few a minute, so this costs a round trip in the rare race and nothing
otherwise (the writer remembers the last record it wrote). A publish whose ack never came may
have been stored: before trying again the writer looks at the sequence it aimed for, so a
record is never written twice.

Records wait in a bounded queue and are written by one background task, in the order given,
so an admin action never waits on JetStream. While JetStream cannot take them (a server
lost, quorum being elected) they stay queued and are retried with backoff; past
``max_pending`` the caller is told the trail is full (:attr:`AuditWriter.full`: brokers then
refuse admin actions instead of taking one unrecorded). Refusal records are best effort: past
half the bound they are counted and dropped, and the count is written as one record once
JetStream is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NoStreamResponseError, NotFoundError

from edge_runtime.audit.stream import ensure_audit_stream
from schemas.audit import (
    AUDIT_DROPPED,
    CHAIN_RESET,
    Actor,
    AuditRecord,
    Origin,
    encode_record,
    link_hash,
)
from schemas.jetstream import AUDIT_STREAM, AUDIT_SUBJECT

__all__ = ["DEFAULT_MAX_PENDING", "AuditWriter", "Entry", "iso_time"]

log = logging.getLogger("llm_edge.audit")

#: Records a writer holds while JetStream cannot take them.
DEFAULT_MAX_PENDING = 1000
#: JetStream's error code for a publish whose ``Nats-Expected-Last-Sequence`` is not the last.
WRONG_LAST_SEQUENCE = 10071
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
#: Races lost in a row before the write is retried after a backoff.
MAX_RACES = 8
#: Backoff between tries while JetStream is unavailable (doubling up to the second figure).
BACKOFF_S = (0.1, 2.0)


def iso_time(seconds: float) -> str:
    """UTC, ISO 8601 with milliseconds: ``2026-12-07T10:00:00.123Z``."""
    stamp = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """What is recorded, before it is placed in the chain (see :class:`AuditRecord`)."""

    time: str
    action: str
    outcome: str
    status: int
    actor: Actor = field(default_factory=Actor)
    origin: Origin = field(default_factory=Origin)
    params: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class _Head:
    """The stream's last sequence, and the last record in it (sequence and link hash)."""

    last_seq: int
    seq: int
    hash: str


class _Raced(Exception):
    """Other writers kept winning; try again after a backoff."""


class _Behind(Exception):
    """The stream is behind what this writer wrote: a note of it was queued to go first."""


class AuditWriter:
    """Writes entries to the audit stream in the background, chained, in the order given.

    Args:
        js: a JetStream context (its timeout bounds every call).
        config: the stream's settings (it is made, or made again, with them).
        writer: who is writing (a broker's host, pid and service id), asked per record.
        max_pending: entries held while JetStream cannot take them.
        clock: wall-clock seconds.
        sleep: the backoff's sleep (tests pass one that records).
    """

    def __init__(
        self,
        js: JetStreamContext,
        config: api.StreamConfig,
        writer: Callable[[], str],
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._js = js
        self._config = config
        self._writer = writer
        self.max_pending = max_pending
        self._clock = clock
        self._sleep = sleep
        self._queue: deque[Entry] = deque()
        self._notes: deque[Entry] = deque()  # the writer's own: resets, drop counts
        self._dropped = 0
        self._head: _Head | None = None
        self._written = 0  # the last sequence this writer wrote
        #: (sequence, link hash) of a record published whose ack never came: stored or not?
        self._unsure: tuple[int, str] | None = None
        self._stream_ready = False
        self._failing = False
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Entries not written yet."""
        return len(self._queue) + len(self._notes)

    @property
    def full(self) -> bool:
        """Whether the queue is at its bound (JetStream has been unavailable for a while)."""
        return len(self._queue) >= self.max_pending

    async def open(self) -> None:
        """Make the stream (or bring it to the settings); when JetStream cannot answer now,
        the first write does it."""
        try:
            await ensure_audit_stream(self._js, self._config)
            self._stream_ready = True
        except Exception as exc:  # JetStream unavailable at start: the writer retries
            log.warning("audit stream not ready (%r); records wait until it is", exc)

    def start(self) -> None:
        """Start the background task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    def submit(self, entry: Entry, *, droppable: bool = False) -> bool:
        """Queue an entry; ``False`` when a droppable one was dropped (past half the bound)."""
        if droppable and len(self._queue) >= self.max_pending // 2:
            self._dropped += 1
            return False
        self._queue.append(entry)
        self._idle.clear()
        self._wake.set()
        return True

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every entry queued is written; ``False`` when ``timeout_s`` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Write what is queued (for at most ``timeout_s``), then stop."""
        if self._task is None:
            return
        if not await self.flush(timeout_s):
            log.error("audit: %d record(s) not written at stop (JetStream away)", self.pending)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        delay = BACKOFF_S[0]
        while True:
            entry = self._next()
            if entry is None:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._append(entry)
            except _Behind:
                continue
            except (msgspec.EncodeError, TypeError):  # a bug: never block the queue
                log.exception("audit: dropped an entry that cannot be encoded: %s", entry)
            except Exception as exc:  # JetStream unavailable, or the stream gone: retry in order
                self._trouble(exc)
                await self._sleep(delay)
                delay = min(delay * 2, BACKOFF_S[1])
                continue
            if self._failing:
                log.warning("audit: writing again (%d record(s) waiting)", self.pending - 1)
                self._failing = False
            delay = BACKOFF_S[0]
            self._done(entry)

    def _next(self) -> Entry | None:
        if self._dropped and not self._notes:
            count, self._dropped = self._dropped, 0
            self._notes.append(self._note(AUDIT_DROPPED, {"count": count}))
        if self._notes:
            return self._notes[0]
        return self._queue[0] if self._queue else None

    def _done(self, entry: Entry) -> None:
        if self._notes and self._notes[0] is entry:
            self._notes.popleft()
        elif self._queue and self._queue[0] is entry:
            self._queue.popleft()

    def _trouble(self, exc: Exception) -> None:
        self._head = None
        if isinstance(exc, NoStreamResponseError | NotFoundError):
            self._stream_ready = False  # deleted: made again on the next try
        if not self._failing:
            log.warning("audit: writing failed (%r); %d record(s) wait, retried", exc, self.pending)
            self._failing = True

    def _note(self, action: str, params: dict[str, Any]) -> Entry:
        now = iso_time(self._clock())
        return Entry(time=now, action=action, outcome="ok", status=200, params=params)

    async def _append(self, entry: Entry) -> None:
        if not self._stream_ready:
            await ensure_audit_stream(self._js, self._config)
            self._stream_ready = True
        if self._unsure is not None and await self._stored(*self._unsure):
            return  # the last try was stored, only its ack was lost: not written twice
        for _ in range(MAX_RACES):
            head = self._head or await self._read_head()
            data = encode_record(self._record(head, entry))
            try:
                ack = await self._js.publish(
                    AUDIT_SUBJECT,
                    data,
                    stream=AUDIT_STREAM,
                    headers={EXPECTED_LAST_SEQUENCE: str(head.last_seq)},
                )
            except BadRequestError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
                self._head = None  # another writer was first: link to its record
                continue
            except Exception:
                self._unsure = (head.last_seq + 1, link_hash(data))  # the next try looks
                raise
            self._unsure = None
            self._head = _Head(ack.seq, ack.seq, link_hash(data))
            self._written = ack.seq
            return
        raise _Raced

    async def _stored(self, seq: int, digest: str) -> bool:
        """Whether the record this writer published at ``seq`` is there (its ack was lost)."""
        try:
            found = await self._js.get_msg(AUDIT_STREAM, seq)
        except NotFoundError:
            found = None
        self._unsure = None
        if found is None or link_hash(found.data or b"") != digest:
            return False
        self._written = seq
        return True

    def _record(self, head: _Head, entry: Entry) -> AuditRecord:
        return AuditRecord(
            seq=head.last_seq + 1,
            prev_seq=head.seq,
            prev=head.hash,
            time=entry.time,
            writer=self._writer(),
            action=entry.action,
            outcome=entry.outcome,
            status=entry.status,
            actor=entry.actor,
            origin=entry.origin,
            params=entry.params,
            detail=entry.detail,
        )

    async def _read_head(self) -> _Head:
        """The stream's last sequence and last record.

        Raises:
            _Behind: the stream ends before what this writer wrote (it was deleted and made
                again): a record saying so is queued to go first.
        """
        state = (await self._js.stream_info(AUDIT_STREAM)).state
        if self._written > state.last_seq:
            log.error(
                "audit: the stream ends at seq %d, but this writer wrote seq %d: it was deleted",
                state.last_seq,
                self._written,
            )
            params = {"written_seq": self._written, "stream_last_seq": state.last_seq}
            self._written = 0
            self._notes.appendleft(self._note(CHAIN_RESET, params))
            raise _Behind
        if state.messages == 0:
            return _Head(state.last_seq, 0, "")
        try:
            last = await self._js.get_last_msg(AUDIT_STREAM, AUDIT_SUBJECT)
        except NotFoundError:  # the last ones aged out since
            return _Head(state.last_seq, 0, "")
        return _Head(state.last_seq, last.seq or 0, link_hash(last.data or b""))
