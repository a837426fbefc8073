"""A stream in progress: iterate it; close it to stop it upstream.

    async with client.stream(request) as chunks:
        async for chunk in chunks:
            if enough(chunk):
                break  # leaving the block cancels the rest of the answer

Closing a stream that has not ended (:meth:`Stream.aclose`, leaving its ``async with``
block, or cancelling the task that iterates it) publishes its request id on ``llm.cancel``
with the stream's reply inbox as the cancel's reply: the broker stops the worker and the
worker closes its upstream call. A stream that ended needs no cancel and sends none.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Generic, TypeVar

__all__ = ["Stream"]

T = TypeVar("T")


class Stream(Generic[T]):
    """The items of one streamed call, and the means to stop it.

    Attributes:
        request_id: the ``X-Request-Id`` every attempt of the call carries.
    """

    def __init__(self, items: AsyncGenerator[T, None], request_id: str) -> None:
        self._items = items
        self.request_id = request_id

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
