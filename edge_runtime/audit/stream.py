"""The audit trail's stream: how it is made, and reading it back in order.

One JetStream stream (:data:`~schemas.jetstream.AUDIT_STREAM`) with limits retention: records
older than ``max_age`` and the oldest beyond ``max_bytes`` are removed, nothing else is.
JetStream itself refuses to delete or purge a record (``deny_delete``, ``deny_purge``: once set
on a stream, the server never lets them be unset), so removing a record takes deleting the
whole stream or editing the server's files, and a verifier sees either in the chain.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime

from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from edge_runtime.audit.chain import ChainCheck
from edge_runtime.jetstream import ensure_stream
from schemas.jetstream import AUDIT_STREAM, AUDIT_SUBJECT

__all__ = [
    "PAGE",
    "Stored",
    "audit_stream_config",
    "ensure_audit_stream",
    "read_stored",
    "stream_state",
    "verify_trail",
]

#: Records fetched per round trip while reading.
PAGE = 256
#: How long a fetch waits for a record that may not come (a read past the last record).
FETCH_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class Stored:
    """A record as JetStream holds it: its stream sequence and bytes."""

    seq: int
    data: bytes


def audit_stream_config(*, max_age_s: float, max_bytes: int, replicas: int) -> api.StreamConfig:
    """The stream's settings (``0``: no bound on age, or on bytes)."""
    return api.StreamConfig(
        name=AUDIT_STREAM,
        description="LLM Edge audit trail: one hash-chained record per admin action",
        subjects=[AUDIT_SUBJECT],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.OLD,
        max_age=max_age_s or None,
        max_bytes=max_bytes or -1,
        num_replicas=replicas,
        deny_delete=True,
        deny_purge=True,
    )


async def ensure_audit_stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    """Create the stream, or bring an existing one to ``config`` (retention, protection; its
    replicas only raised)."""
    await ensure_stream(js, config)


async def stream_state(js: JetStreamContext) -> api.StreamState | None:
    """The stream's state, ``None`` when there is no audit stream (yet)."""
    try:
        return (await js.stream_info(AUDIT_STREAM)).state
    except NotFoundError:
        return None


async def read_stored(
    js: JetStreamContext,
    *,
    start_seq: int = 0,
    start_time: datetime | None = None,
    follow: bool = False,
) -> AsyncGenerator[Stored, None]:
    """Every record from ``start_seq`` (or ``start_time``) on, in stream order; with
    ``follow``, then every new one as it is written (until the caller stops iterating).

    Reads through an ephemeral pull consumer, :data:`PAGE` records a round trip.

    Raises:
        nats.js.errors.NotFoundError: there is no audit stream.
    """
    state = await js.stream_info(AUDIT_STREAM)
    if not follow and (state.state.messages == 0 or start_seq > state.state.last_seq):
        return
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE, inactive_threshold=60.0, mem_storage=True
    )
    if start_time is not None:
        config.deliver_policy = api.DeliverPolicy.BY_START_TIME
        config.opt_start_time = start_time
    elif start_seq:
        config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = start_seq
    sub = await js.pull_subscribe(AUDIT_SUBJECT, stream=AUDIT_STREAM, config=config)
    try:
        while True:
            try:
                msgs = await sub.fetch(PAGE, timeout=FETCH_WAIT_S if not follow else 30.0)
            except TimeoutError:
                if follow:
                    continue
                return
            for msg in msgs:
                yield Stored(msg.metadata.sequence.stream, msg.data)
            if not follow and msgs[-1].metadata.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()


async def verify_trail(js: JetStreamContext) -> ChainCheck:
    """Check the whole stream's chain (:class:`ChainCheck`: ``broken`` is the first break).

    Raises:
        nats.js.errors.NotFoundError: there is no audit stream.
    """
    before = (await js.stream_info(AUDIT_STREAM)).state
    check = ChainCheck()
    async for stored in read_stored(js, start_seq=before.first_seq):
        check.add(stored.seq, stored.data)
    check.end(before.last_seq)
    return check
