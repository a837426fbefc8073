"""The ``[batch]`` table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.tables import check_keys, field_names

__all__ = ["BatchSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchSettings:
    """Batch engine knobs (every broker process runs the engine).

    Attributes:
        enabled: run the batch engine in this broker.
        concurrency: lines in flight per broker process.
        yield_concurrency: lines in flight while interactive requests arrived in the last
            second (interactive traffic keeps priority: the batch slows down, then resumes).
        ack_wait_s: a line not acknowledged in this time is redelivered (crash recovery).
        max_deliver: deliveries of a line before it is dead-lettered to the error file.
        backoff_s: redelivery delays after retryable failures.
        poll_s: how often finished batches are looked for and progress is published.
        lease_s: how long a broker's claim on a batch step (validation, finalization) lasts
            without renewal; the claimant renews it while the step runs, so a broker that
            dies mid-step is taken over by another within this time.
    """

    enabled: bool = True
    concurrency: int = 64
    yield_concurrency: int = 4
    ack_wait_s: float = 60.0
    max_deliver: int = 4
    backoff_s: tuple[float, ...] = field(default=(1.0, 5.0, 15.0))
    poll_s: float = 1.0
    lease_s: float = 10.0

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> BatchSettings:
        """Build and validate; raises ``ValueError`` naming the key."""
        check_keys("batch", raw, field_names(cls))
        values = dict(raw)
        if "backoff_s" in values:
            values["backoff_s"] = tuple(float(v) for v in values["backoff_s"])
        settings = cls(**values)
        if min(settings.concurrency, settings.max_deliver, settings.yield_concurrency) < 1:
            raise ValueError("batch: concurrency and max_deliver must be >= 1")
        if min(settings.ack_wait_s, settings.poll_s, settings.lease_s) <= 0:
            raise ValueError("batch: ack_wait_s, poll_s and lease_s must be > 0")
        return settings
