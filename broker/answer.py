"""The tail of answering a whole request, a chat answer's and an embeddings answer's alike.

Once a whole answer is known (:class:`~broker.cache.front.Outcome`: fresh from the upstream,
from the cache, or a copy of another attempt's), :meth:`WholeAnswer.send` prices it on the
reply's headers, records a budgeted tenant's spend before the reply (so its next request
sees it), replies, counts and logs it, and for a fresh answer observes the duration and the
broker's overhead, writes it back and charges a tenant without a budget afterwards.

Both pipelines call it once per answer; it holds only what they were built with (no
allocation of its own on the chat hot path beyond the reply's metadata).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from broker import metrics
from broker.cache.front import Outcome
from broker.record import RequestRecord
from broker.replies.sinks import ReplySink
from broker.request import Call
from broker.tenancy.meter import Charge, Meter
from schemas import headers

__all__ = ["WholeAnswer", "queued"]

C = TypeVar("C", bound=Call)
K = TypeVar("K")


def queued(meta: dict[str, str], call: Call) -> dict[str, str]:
    """``meta`` with how long the request waited for capacity (``Llm-Queue-Ms``)."""
    meta[headers.QUEUE_MS] = str(round(call.queued_s * 1000))
    return meta


class WholeAnswer:
    """Sends a whole answer and settles what it cost.

    Args:
        meter: pricing headers and charging.
        record: request counter and log line.
        clock: the event loop's monotonic clock (the duration metrics).
    """

    def __init__(self, meter: Meter, record: RequestRecord, clock: Callable[[], float]) -> None:
        self._meter = meter
        self._record = record
        self._clock = clock

    async def send(
        self,
        call: C,
        sink: ReplySink,
        outcome: Outcome,
        charge: Charge | None,
        meta: dict[str, str],
        *,
        started: float,
        perf_started: float,
        write_back: Callable[[C, K], Awaitable[None]],
        kept: K,
    ) -> None:
        """Reply with ``outcome`` and settle it.

        Args:
            call: the request.
            sink: where its caller is answered.
            outcome: the answer and where it came from.
            charge: what a fresh answer cost (``None``: nothing to charge).
            meta: the reply's metadata (request id, cache status); the queue time is added.
            started: the clock when the request's work began (duration).
            perf_started: :meth:`RequestRecord.now` when it began (the log line).
            write_back: keeps a fresh answer in the cache, given ``call`` and ``kept``.
            kept: what ``write_back`` keeps (the reply, or the new vectors).
        """
        reply = outcome.reply
        if charge is not None:
            reply.headers.update(charge.reply_headers())
        # A budgeted tenant's spend is recorded before the reply, so its next request sees it.
        budgeted = self._meter.budgeted(call)
        if budgeted:
            await self._meter.charge(call, charge)
        await sink.whole(reply, queued(meta, call))
        provider = reply.headers.get(headers.PROVIDER, "") if outcome.fresh else "cache"
        record = self._record
        record.count(call, provider, reply.status)
        if not outcome.cache.startswith("HIT") or record.logs_hits:
            # logged as the caller got it (a coalesced copy like a miss: its caller waited
            # like one), before the write-back: the line measures what the caller waited
            record.log(
                call,
                status=reply.status,
                cache=outcome.cache,
                reply_headers=reply.headers,
                started=perf_started,
                usage=charge.usage if charge is not None else None,
            )
        if not outcome.fresh:
            return
        elapsed = self._clock() - started
        metrics.duration_histogram(provider, call.model.name).observe(elapsed)
        if reply.upstream_s:
            metrics.OVERHEAD.observe(max(0.0, elapsed - reply.upstream_s))
        await write_back(call, kept)
        if not budgeted:
            await self._meter.charge(call, charge)
