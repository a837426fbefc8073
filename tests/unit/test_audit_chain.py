"""The audit trail's chain check: an intact chain passes, and each way of tampering with
stored records is reported at the first record it breaks, saying what is wrong there."""

from __future__ import annotations

import msgspec

from edge_runtime.audit import ChainCheck
from schemas.audit import Actor, AuditRecord, Origin, decode_record, encode_record, link_hash


def record(seq: int, prev_seq: int, prev: str, **params: object) -> AuditRecord:
    return AuditRecord(
        seq=seq,
        prev_seq=prev_seq,
        prev=prev,
        time="2026-12-07T10:00:00.000Z",
        writer="host pid 1",
        action="breaker.open",
        outcome="ok",
        status=200,
        actor=Actor(key="sha256:" + "ab" * 32, tenant="ops", role="admin"),
        origin=Origin(via="console", peer="127.0.0.1"),
        params={"deployment": "mock@primary", **params},
    )


def chain(n: int, first: int = 1) -> list[tuple[int, bytes]]:
    """``n`` records stored from sequence ``first`` on, each linked to the one before."""
    stored: list[tuple[int, bytes]] = []
    prev, prev_seq = "", 0
    for seq in range(first, first + n):
        data = encode_record(record(seq, prev_seq, prev))
        stored.append((seq, data))
        prev, prev_seq = link_hash(data), seq
    return stored


def check(stored: list[tuple[int, bytes]], last_seq: int | None = None) -> ChainCheck:
    result = ChainCheck()
    for seq, data in stored:
        result.add(seq, data)
    result.end(last_seq if last_seq is not None else stored[-1][0])
    return result


def test_an_intact_chain_passes_and_names_its_head() -> None:
    """Five linked records: no break; the head is the hash of the last record's bytes."""
    stored = chain(5)
    result = check(stored)
    assert result.broken is None
    assert (result.records, result.first_seq, result.last_seq) == (5, 1, 5)
    assert result.head == link_hash(stored[-1][1])


def test_a_trail_whose_oldest_records_aged_out_passes() -> None:
    """A stream that starts at seq 40 (retention removed 1 to 39) is not a break."""
    stored = chain(5, first=40)
    assert check(stored).broken is None


def test_a_deleted_record_is_the_first_break() -> None:
    """Seq 3 removed: the break is at 3, said to be missing."""
    stored = chain(5)
    del stored[2]
    broken = check(stored).broken
    assert broken is not None
    assert str(broken) == "seq 3: record 3 is missing (deleted)"


def test_several_deleted_records_are_named_as_a_range() -> None:
    """Seqs 2 to 4 removed: one break at 2 naming the range."""
    stored = chain(6)
    del stored[1:4]
    broken = check(stored).broken
    assert broken is not None
    assert str(broken) == "seq 2: records 2 to 4 are missing (deleted)"


def test_deleted_last_records_are_seen_from_the_streams_last_sequence() -> None:
    """The last two records removed: JetStream still ends at seq 5, so 4 and 5 are missing."""
    stored = chain(5)[:3]
    broken = check(stored, last_seq=5).broken
    assert broken is not None
    assert str(broken) == "seq 4: records 4 to 5 are missing at the end (deleted)"


def test_an_altered_record_breaks_the_link_of_the_next() -> None:
    """Seq 2's bytes changed (its deployment): seq 3 no longer links to it."""
    stored = chain(4)
    altered = msgspec.structs.replace(decode_record(stored[1][1]), params={"deployment": "other"})
    stored[1] = (2, encode_record(altered))
    broken = check(stored).broken
    assert broken is not None
    assert broken.seq == 3
    assert "seq 2 was altered, or this record forged" in broken.reason


def test_a_record_copied_to_another_place_says_where_it_was_written() -> None:
    """Record 2 published again (it lands at seq 5): its own seq gives it away."""
    stored = chain(4)
    stored.append((5, stored[1][1]))
    broken = check(stored).broken
    assert broken is not None
    assert str(broken) == "seq 5: the record says it was written at seq 2: a copy or a forgery"


def test_a_forged_record_with_the_right_seq_but_no_link_is_caught() -> None:
    """A record written at seq 5 claiming seq 5 but linking to nothing."""
    stored = chain(4)
    stored.append((5, encode_record(record(5, 0, ""))))
    broken = check(stored).broken
    assert broken is not None
    assert str(broken) == "seq 5: links to seq 0, but the record before it is seq 4"


def test_bytes_that_are_not_a_record_are_a_break() -> None:
    """Something else published on the trail's subject."""
    stored = chain(2)
    stored.append((3, b'{"hello": "world"}'))
    broken = check(stored).broken
    assert broken is not None
    assert broken.seq == 3
    assert broken.reason.startswith("not an audit record")


def test_only_the_first_break_is_kept() -> None:
    """A deletion at 2 and a forgery later: the break reported is the deletion."""
    stored = chain(5)
    del stored[1]
    stored.append((6, b"garbage"))
    broken = check(stored, last_seq=6).broken
    assert broken is not None
    assert broken.seq == 2


def test_the_check_continues_as_records_come() -> None:
    """Fed in two goes (as the console reads new records), the chain still holds."""
    stored = chain(6)
    result = ChainCheck()
    for seq, data in stored[:3]:
        result.add(seq, data)
    result.end(3)
    for seq, data in stored[3:]:
        result.add(seq, data)
    result.end(6)
    assert result.broken is None
    assert result.records == 6
