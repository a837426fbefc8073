"""The audit writer's rules, on an in-memory JetStream that can lose acks, let another writer
in first and be unavailable: a record is never written twice nor out of order, the chain holds
through every one of these, the backoff is what it says, and the bound is kept."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError

from edge_runtime.audit import AuditWriter, ChainCheck, Entry, audit_stream_config, iso_time
from edge_runtime.audit.writer import EXPECTED_LAST_SEQUENCE, WRONG_LAST_SEQUENCE
from schemas import audit
from schemas.audit import Actor, AuditRecord, Origin, decode_record, encode_record, link_hash

PATIENCE_S = 5.0


class FakeJetStream:
    """The calls the writer makes, with JetStream's rules for them."""

    def __init__(self) -> None:
        self.stored: dict[int, bytes] = {}
        self.last_seq = 0
        self.failures: list[Exception] = []  # raised by the next publishes, in turn
        self.lose_acks = 0  # publishes stored whose ack never comes
        self.intruders = 0  # records another writer stores just before the next publish

    async def add_stream(self, config: object) -> None:
        return None

    async def stream_info(self, name: str) -> Any:
        first = min(self.stored, default=self.last_seq + 1)
        state = SimpleNamespace(messages=len(self.stored), last_seq=self.last_seq, first_seq=first)
        return SimpleNamespace(state=state)

    async def get_last_msg(self, stream: str, subject: str) -> Any:
        seq = max(self.stored)
        return SimpleNamespace(seq=seq, data=self.stored[seq])

    async def get_msg(self, stream: str, seq: int) -> Any:
        if seq not in self.stored:
            raise NotFoundError
        return SimpleNamespace(seq=seq, data=self.stored[seq])

    async def publish(
        self, subject: str, payload: bytes, stream: str, headers: dict[str, str]
    ) -> Any:
        if self.failures:
            raise self.failures.pop(0)
        if self.intruders:
            self.intruders -= 1
            self._store(self._other_writers_record())
        if int(headers[EXPECTED_LAST_SEQUENCE]) != self.last_seq:
            raise BadRequestError(code=400, err_code=WRONG_LAST_SEQUENCE)
        seq = self._store(payload)
        if self.lose_acks:
            self.lose_acks -= 1
            raise NatsTimeout
        return SimpleNamespace(seq=seq)

    def _store(self, payload: bytes) -> int:
        self.last_seq += 1
        self.stored[self.last_seq] = payload
        return self.last_seq

    def _other_writers_record(self) -> bytes:
        last = self.last_seq
        prev = link_hash(self.stored[last]) if last in self.stored else ""
        return encode_record(
            AuditRecord(
                seq=last + 1,
                prev_seq=last if prev else 0,
                prev=prev,
                time=iso_time(time.time()),
                writer="other",
                action=audit.BREAKER_CLOSE,
                outcome="ok",
                status=200,
                actor=Actor(),
                origin=Origin(),
            )
        )

    def records(self) -> list[AuditRecord]:
        return [decode_record(self.stored[s]) for s in sorted(self.stored)]

    def check(self) -> ChainCheck:
        result = ChainCheck()
        for seq in sorted(self.stored):
            result.add(seq, self.stored[seq])
        result.end(self.last_seq)
        return result


class Sleeps:
    """The backoff's sleeps, recorded, not slept."""

    def __init__(self) -> None:
        self.taken: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)


def writer_on(js: FakeJetStream, sleeps: Sleeps, max_pending: int = 1000) -> AuditWriter:
    config = audit_stream_config(max_age_s=0, max_bytes=0, replicas=1)
    return AuditWriter(
        cast(JetStreamContext, js),
        config,
        lambda: "this",
        max_pending=max_pending,
        clock=time.time,
        sleep=sleeps,
    )


def entry(n: int) -> Entry:
    return Entry(
        time=iso_time(time.time()),
        action=audit.BREAKER_OPEN,
        outcome="ok",
        status=200,
        params={"n": n},
    )


async def written(writer: AuditWriter, *entries: Entry) -> None:
    writer.start()
    for one in entries:
        writer.submit(one)
    assert await writer.flush(PATIENCE_S)
    await writer.stop()


async def test_a_record_whose_ack_was_lost_is_not_written_twice() -> None:
    """The first publish is stored but its ack never comes: after one backoff the writer finds
    it stored and goes on with the next entry; two records, one chain."""
    js, sleeps = FakeJetStream(), Sleeps()
    js.lose_acks = 1
    await written(writer_on(js, sleeps), entry(1), entry(2))
    assert [r.params["n"] for r in js.records()] == [1, 2]
    assert js.check().broken is None
    assert sleeps.taken == [0.1]


async def test_a_writer_that_loses_a_race_links_to_the_winners_record() -> None:
    """Another writer stores a record between this one's read of the head and its publish,
    twice in a row: JetStream refuses both publishes, and each time the writer links to the
    other's record at once (no backoff)."""
    js, sleeps = FakeJetStream(), Sleeps()
    js.intruders = 2
    await written(writer_on(js, sleeps), entry(1), entry(2))
    writers = [r.writer for r in js.records()]
    assert writers == ["other", "other", "this", "this"]
    assert js.check().broken is None
    assert sleeps.taken == []


async def test_unavailable_jetstream_is_retried_with_backoff_in_order() -> None:
    """Five failures in a row: waits of 0.1, 0.2, 0.4, 0.8, 1.6 s, then every entry written in
    the order given."""
    js, sleeps = FakeJetStream(), Sleeps()
    js.failures = [
        NoRespondersError(),
        NatsTimeout(),
        NatsTimeout(),
        NoRespondersError(),
        NatsTimeout(),
    ]
    await written(writer_on(js, sleeps), *(entry(n) for n in range(4)))
    assert sleeps.taken == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert [r.params["n"] for r in js.records()] == [0, 1, 2, 3]
    assert js.check().broken is None


async def test_the_backoff_stops_at_two_seconds_and_starts_again_after_a_write() -> None:
    """Eight failures: the waits double up to 2 s and stay there."""
    js, sleeps = FakeJetStream(), Sleeps()
    js.failures = [NatsTimeout() for _ in range(8)]
    await written(writer_on(js, sleeps), entry(0))
    assert sleeps.taken == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]


async def test_the_bound_is_kept_and_dropped_refusals_are_counted() -> None:
    """With a bound of 4: past 2 waiting, refusals are dropped (and counted); at 4 the writer
    is full. Once written, one audit.dropped record says how many were dropped."""
    js, sleeps = FakeJetStream(), Sleeps()
    writer = writer_on(js, sleeps, max_pending=4)
    assert writer.submit(entry(0))
    assert writer.submit(entry(1))
    assert not writer.submit(entry(99), droppable=True)
    assert not writer.submit(entry(98), droppable=True)
    assert writer.submit(entry(2))
    assert not writer.full
    assert writer.submit(entry(3))
    assert writer.full
    await written(writer)
    records = js.records()
    assert [r.action for r in records] == [audit.AUDIT_DROPPED] + [audit.BREAKER_OPEN] * 4
    assert records[0].params == {"count": 2}
    assert [r.params["n"] for r in records[1:]] == [0, 1, 2, 3]
    assert not writer.full
