"""Checking the audit trail's chain: records fed in stream order, the first break kept.

A record is checked against the one before it in the stream (:mod:`schemas.audit`):

- it decodes as an :class:`~schemas.audit.AuditRecord` (else it was not written by a broker);
- it names the sequence it is stored at (a record copied or forged to another place does not);
- it follows the record before it without a gap (a removed record leaves one: JetStream never
  reuses a sequence);
- it names that record's sequence and the SHA-256 of its stored bytes (an altered record, or a
  forged one slipped in, does not match).

The first record read has nothing before it to check against: its predecessors were removed
by the stream's retention (age and size limits remove the oldest records), or it is the first
record ever. (JetStream's first sequence moves past a removed oldest record whatever removed
it, so the oldest end of the trail cannot tell retention from removal: see docs/security.md.)
Pure: no I/O (the reader feeds it).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from schemas.audit import AuditRecord, decode_record, link_hash

__all__ = ["Break", "ChainCheck"]


@dataclass(frozen=True, slots=True)
class Break:
    """Where the chain breaks first, and why.

    Attributes:
        seq: the stream sequence at fault (a missing record's own sequence).
        reason: what is wrong there, in a sentence.
    """

    seq: int
    reason: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.reason}"


class ChainCheck:
    """Feed it stored records in stream order (:meth:`add`), then the stream's last sequence
    (:meth:`end`); :attr:`broken` is the first break, ``None`` while the chain holds.

    It can be fed more later (the console checks new records as they come).
    """

    def __init__(self) -> None:
        self.first_seq = 0
        self.last_seq = 0
        self.head = ""  # link hash of the last record added
        self.records = 0
        self.broken: Break | None = None
        self.last: AuditRecord | None = None

    def add(self, seq: int, stored: bytes) -> AuditRecord | None:
        """Check one stored record (its stream sequence and bytes); the record, or ``None``
        when it does not decode."""
        record: AuditRecord | None = None
        try:
            record = decode_record(stored)
        except msgspec.MsgspecError as exc:
            self._fail(Break(seq, f"not an audit record ({exc})"))
        if record is not None and self.broken is None:
            self._fail(self._link(seq, record))
        if not self.records:
            self.first_seq = seq
        self.records += 1
        self.last_seq = seq
        self.head = link_hash(stored)
        self.last = record
        return record

    def end(self, last_seq: int) -> None:
        """The stream's last sequence: records after the last one read were removed (JetStream
        keeps counting a removed last record)."""
        if last_seq > self.last_seq and self.records:
            missing = _span(self.last_seq + 1, last_seq)
            self._fail(Break(self.last_seq + 1, f"{missing} missing at the end (deleted)"))

    def _link(self, seq: int, record: AuditRecord) -> Break | None:
        if record.seq != seq:
            return Break(
                seq, f"the record says it was written at seq {record.seq}: a copy or a forgery"
            )
        if not self.records:  # what came before it is gone: retention (or never was)
            return None
        before = self.last_seq
        if seq != before + 1:
            return Break(before + 1, f"{_span(before + 1, seq - 1)} missing (deleted)")
        if record.prev_seq != before:
            return Break(
                seq, f"links to seq {record.prev_seq}, but the record before it is seq {before}"
            )
        if record.prev != self.head:
            return Break(
                seq,
                f"links to seq {before} by sha256 {record.prev[:16]}…, but seq {before} hashes "
                f"to {self.head[:16]}…: seq {before} was altered, or this record forged",
            )
        return None

    def _fail(self, found: Break | None) -> None:
        if found is not None and self.broken is None:
            self.broken = found


def _span(first: int, last: int) -> str:
    return f"record {first} is" if first == last else f"records {first} to {last} are"
