"""A stream's cost on its last message, and in its tenant's spend.

A stream's headers leave with its first message, before the upstream has reported its usage
(OpenAI's usage chunk and Anthropic's ``message_delta`` come last). Over NATS the message
that ends the stream (``Llm-Stream: end``) has headers of its own: :class:`PricedStream`
prices the stream as that message goes out, from the usage and tier its log kept as the
pieces were relayed (no piece is decoded again), and names them there: ``Llm-Cost-Usd`` (when
the upstream reported usage) and ``Llm-Service-Tier`` (when it named a tier). The tenant is
charged that same charge, so the caller's figure is the ledger's; a budgeted tenant before
the end goes out, as a whole reply's is (its next request sees the spend).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from broker.replies.sinks import ReplySink
from broker.replies.streams import StreamLog
from broker.request import Call, Piece, Reply
from broker.tenancy.meter import Charge, Meter
from schemas import StreamEnd, headers

__all__ = ["PricedStream"]


class PricedStream:
    """A sink that names a stream's cost and tier on the message that ends it, and charges
    its tenant that cost.

    Args:
        sink: where the stream goes.
        meter: prices and charges it.
        call: the request (its tenant pays).
        kept: the stream's log (its usage and tier so far).
        answered_by: the headers naming who answered (``Llm-Deployment`` prices it).
    """

    __slots__ = (
        "_answered_by",
        "_call",
        "_charge",
        "_charged",
        "_kept",
        "_meter",
        "_priced",
        "_sink",
        "chunk",
    )

    def __init__(
        self,
        sink: ReplySink,
        meter: Meter,
        call: Call,
        kept: StreamLog,
        answered_by: Mapping[str, str],
    ) -> None:
        self._sink, self._meter, self._call, self._kept = sink, meter, call, kept
        self._answered_by = answered_by
        self._charge: Charge | None = None
        self._priced = self._charged = False
        #: the sink's own: a chunk goes through no frame of ours
        self.chunk: Callable[[Piece, dict[str, str]], Coroutine[Any, Any, None]] = sink.chunk

    def _price(self) -> Charge | None:
        if not self._priced:
            usage, tier = self._kept.usage, self._kept.service_tier
            self._charge = self._meter.price_stream(self._answered_by, usage, tier)
            self._priced = True
        return self._charge

    async def settle(self) -> None:
        """Charge the tenant for the stream, unless that was done as it ended (priced now
        when no end went out)."""
        if not self._charged:
            self._charged = True
            await self._meter.charge(self._call, self._price())

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        await self._sink.whole(reply, meta)

    async def end(self, end: StreamEnd, meta: dict[str, str]) -> None:
        """Price the stream (and charge a budgeted tenant), then end it naming its cost and
        tier."""
        charge = self._price()
        if self._meter.budgeted(self._call):
            await self.settle()
        if charge is not None:
            named = charge.reply_headers()
            if charge.usage is None:  # nothing reported: no cost to name
                named.pop(headers.COST, None)
            if named:
                meta = {**meta, **named}
        await self._sink.end(end, meta)

    async def error(self, reply: Reply, meta: dict[str, str], *, streaming: bool) -> None:
        await self._sink.error(reply, meta, streaming=streaming)
