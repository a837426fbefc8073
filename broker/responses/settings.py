"""The ``[responses]`` table: stored responses and background responses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_runtime.tables import check_keys, field_names

__all__ = [
    "DEFAULT_ACK_WAIT_S",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DELIVER",
    "DEFAULT_POLL_MAX_S",
    "DEFAULT_POLL_S",
    "DEFAULT_TTL_S",
    "ResponsesSettings",
]

#: How long a stored response is kept: OpenAI keeps them 30 days.
DEFAULT_TTL_S = 30 * 24 * 3600.0
#: The most the stored responses take in JetStream (the oldest are dropped beyond it).
DEFAULT_MAX_BYTES = 1024**3
#: A background response whose broker stopped acknowledging it runs again after this.
DEFAULT_ACK_WAIT_S = 60.0
#: Background responses in flight per broker process.
DEFAULT_CONCURRENCY = 16
#: Runs of a background response whose failures a retry may fix, before it is failed.
DEFAULT_MAX_DELIVER = 4
#: How often a background response running at its upstream (OpenAI's) is read there.
DEFAULT_POLL_S = 2.0
#: How long a background response may run at its upstream before it is cancelled there and
#: ``failed`` (OpenAI's longest background runs, deep research, take tens of minutes).
DEFAULT_POLL_MAX_S = 6 * 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponsesSettings:
    """Stored and background responses (every broker serves them).

    Attributes:
        ttl_s: how long a stored response (and its input items) is kept.
        max_bytes: the most the stored responses take (the JetStream bucket's bound).
        background: run ``background: true`` responses in this broker.
        ack_wait_s: a background response not acknowledged in this time is run again (its
            broker died); a running one is kept alive well within it.
        concurrency: background responses in flight per broker process.
        max_deliver: runs of a background response that fails retryably (5xx, 429), or
            whose run raises, before it is ``failed``.
        poll_s: how often a background response running at its upstream is read there.
        poll_max_s: how long one may run there (from its creation) before it is cancelled
            there and ``failed``.
    """

    ttl_s: float = DEFAULT_TTL_S
    max_bytes: int = DEFAULT_MAX_BYTES
    background: bool = True
    ack_wait_s: float = DEFAULT_ACK_WAIT_S
    concurrency: int = DEFAULT_CONCURRENCY
    max_deliver: int = DEFAULT_MAX_DELIVER
    poll_s: float = DEFAULT_POLL_S
    poll_max_s: float = DEFAULT_POLL_MAX_S

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ResponsesSettings:
        """Build and validate; raises ``ValueError`` naming the key."""
        check_keys("responses", raw, field_names(cls))
        settings = cls(**raw)
        times = (settings.ttl_s, settings.ack_wait_s, settings.poll_s, settings.poll_max_s)
        if min(times) <= 0 or settings.max_bytes <= 0:
            raise ValueError(
                "responses: ttl_s, max_bytes, ack_wait_s, poll_s and poll_max_s must be > 0"
            )
        if min(settings.concurrency, settings.max_deliver) < 1:
            raise ValueError("responses: concurrency and max_deliver must be >= 1")
        return settings
