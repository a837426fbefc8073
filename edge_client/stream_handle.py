"""A stream in progress: iterate it; close it to stop it upstream.

    async with client.stream(request) as chunks:
        async for chunk in chunks:
            if enough(chunk):
                break  # leaving the block cancels the rest of the answer

Closing a stream that has not ended (:meth:`Stream.aclose`, leaving its ``async with``
block, or cancelling the task that iterates it) publishes its request id on ``llm.cancel``
with the stream's reply inbox as the cancel's reply: the broker stops the worker and the
worker closes its upstream call. A stream that ended needs no cancel and sends none.

Once it has ended, a stream tells what it cost: the broker names it on the message that ends
it (its headers left before the upstream reported usage)::

    async for chunk in stream: ...
    print(stream.cost_usd, stream.service_tier)
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Generic, TypeVar

from schemas import headers

__all__ = ["Ending", "Stream"]

T = TypeVar("T")


class Ending:
    """What the message that ended a stream said of it (filled in when it arrives).

    Attributes:
        cost_usd: ``Llm-Cost-Usd``: what the answer cost at its deployment's prices, when the
            upstream reported usage and the deployment is priced.
        service_tier: ``Llm-Service-Tier``: the tier that served it, when the upstream named
            one (``default``, ``flex``, ``priority`` ...).
    """

    __slots__ = ("cost_usd", "service_tier")

    def __init__(self) -> None:
        self.cost_usd: float | None = None
        self.service_tier: str | None = None

    def read(self, hdrs: Mapping[str, str]) -> None:
        """Keep what the end message's headers name."""
        cost = hdrs.get(headers.COST)
        try:
            self.cost_usd = None if cost is None else float(cost)
        except ValueError:
            self.cost_usd = None
        self.service_tier = hdrs.get(headers.SERVICE_TIER)


class Stream(Generic[T]):
    """The items of one streamed call, and the means to stop it.

    Attributes:
        request_id: the ``X-Request-Id`` every attempt of the call carries.
    """

    def __init__(
        self, items: AsyncGenerator[T, None], request_id: str, ending: Ending | None = None
    ) -> None:
        self._items = items
        self.request_id = request_id
        self._ending = ending if ending is not None else Ending()

    @property
    def cost_usd(self) -> float | None:
        """What the answer cost (USD), once the stream has ended; ``None`` before, for a
        cache hit, or when the upstream reported no usage or the deployment has no prices."""
        return self._ending.cost_usd

    @property
    def service_tier(self) -> str | None:
        """The service tier that served the answer, once the stream has ended (``None``
        before, or when the upstream named none)."""
        return self._ending.service_tier

    def __aiter__(self) -> Stream[T]:
        return self

    async def __anext__(self) -> T:
        return await self._items.__anext__()

    async def aclose(self) -> None:
        """Stop the stream: cancel it upstream unless it already ended (call it from the task
        that iterates the stream; from another task, cancel that task)."""
        await self._items.aclose()

    async def __aenter__(self) -> Stream[T]:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
