"""The ``[batch]`` table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.tables import check_keys, field_names

__all__ = [
    "DEFAULT_OFFLOAD_LIMITS",
    "DEFAULT_OFFLOAD_MARGIN_S",
    "DEFAULT_OFFLOAD_POLL_S",
    "OFFLOAD_WORDS",
    "BatchSettings",
]

#: ``offload`` values: ``auto`` sends lines to the provider's own Batch API when it can;
#: ``never`` runs every line on the normal path.
OFFLOAD_WORDS = ("auto", "never")
#: How often a provider batch's status is asked (OpenAI's and Anthropic's guides poll every
#: minute or so; a batch takes minutes to hours).
DEFAULT_OFFLOAD_POLL_S = 60.0
#: A provider batch still running this long before our batch's deadline is cancelled and its
#: unfinished lines run on the normal path (two hours of a 24h window).
DEFAULT_OFFLOAD_MARGIN_S = 7200.0
#: Lines and bytes per provider batch: ``(max_lines, max_bytes)`` by provider name; other
#: providers get ``default`` (OpenAI's 50,000 requests and 200 MB per input file; Anthropic
#: takes 100,000 requests and 256 MB per batch; the Gemini API takes a file of up to 2 GB:
#: 1 GiB of our lines leaves room for their translation, and a worker holds a sub-batch in
#: memory while it submits it).
DEFAULT_OFFLOAD_LIMITS = {
    "default": (50_000, 200 * 1024 * 1024),
    "anthropic": (100_000, 256 * 1024 * 1024),
    "gemini": (100_000, 1024 * 1024 * 1024),
}


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
        offload: ``never`` (default) or ``auto``: send lines of batches whose completion
            window is at least 24h to their provider's own Batch API (about half the price);
            a tenant's or a model's ``batch_offload`` overrides it, ``never`` winning.
        offload_poll_s: how often a provider batch's status is asked.
        offload_margin_s: a provider batch still running this long before our deadline is
            cancelled and its unfinished lines run on the normal path.
        offload_limits: ``{provider: [max_lines, max_bytes]}`` per provider batch (larger
            sub-batches are split); ``default`` for providers not named.
    """

    enabled: bool = True
    concurrency: int = 64
    yield_concurrency: int = 4
    ack_wait_s: float = 60.0
    max_deliver: int = 4
    backoff_s: tuple[float, ...] = field(default=(1.0, 5.0, 15.0))
    poll_s: float = 1.0
    lease_s: float = 10.0
    offload: str = "never"
    offload_poll_s: float = DEFAULT_OFFLOAD_POLL_S
    offload_margin_s: float = DEFAULT_OFFLOAD_MARGIN_S
    offload_limits: dict[str, tuple[int, int]] = field(
        default_factory=lambda: dict(DEFAULT_OFFLOAD_LIMITS)
    )

    def limits(self, provider: str) -> tuple[int, int]:
        """``(max_lines, max_bytes)`` of one provider batch of ``provider``."""
        return self.offload_limits.get(provider) or self.offload_limits["default"]

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> BatchSettings:
        """Build and validate; raises ``ValueError`` naming the key."""
        check_keys("batch", raw, field_names(cls))
        values = dict(raw)
        if "backoff_s" in values:
            values["backoff_s"] = tuple(float(v) for v in values["backoff_s"])
        if "offload_limits" in values:
            limits = dict(DEFAULT_OFFLOAD_LIMITS)
            for name, pair in dict(values["offload_limits"]).items():
                lines, size = (int(v) for v in pair)
                if min(lines, size) < 1:
                    raise ValueError(f"batch.offload_limits.{name}: both limits must be >= 1")
                limits[str(name)] = (lines, size)
            values["offload_limits"] = limits
        settings = cls(**values)
        if min(settings.concurrency, settings.max_deliver, settings.yield_concurrency) < 1:
            raise ValueError("batch: concurrency and max_deliver must be >= 1")
        if min(settings.ack_wait_s, settings.poll_s, settings.lease_s) <= 0:
            raise ValueError("batch: ack_wait_s, poll_s and lease_s must be > 0")
        if settings.offload not in OFFLOAD_WORDS:
            raise ValueError("batch.offload must be auto or never")
        if settings.offload_poll_s <= 0 or settings.offload_margin_s < 0:
            raise ValueError("batch: offload_poll_s must be > 0 and offload_margin_s >= 0")
        return settings
