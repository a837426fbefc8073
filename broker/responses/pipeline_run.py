"""One run of a background response through the pipeline, as its tenant.

It goes with the response id as request id and marked idempotent, so the workers'
once-claims (``workers/once.py``) answer a run delivered again from the first one's stored
answer instead of calling the upstream again, even when the broker that started the call is
gone. It bypasses the cache both ways (an answer that is a queued response must never be
served to anyone else). A halt (a cancel) stops it wherever it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from broker.batch.runner import CollectSink
from broker.replies.sinks import ReplySink
from broker.request import Reply
from broker.responses.events import CANCELLED, RecordingSink, ResponseEvents
from broker.tenancy.tenants import Caller, KeyRing
from schemas import error_body, headers
from schemas.api import Api
from schemas.responses import StoredResponse

__all__ = ["Handle", "PipelineRun"]


class Handle(Protocol):
    """``ChatPipeline.handle``."""

    async def __call__(
        self,
        data: bytes,
        hdrs: dict[str, str],
        sink: ReplySink,
        caller: Caller | None = None,
        *,
        reply_to: str = "",
        api: Api = Api.CHAT,
        counted: bool = False,
    ) -> None: ...


def _owner(response_id: str) -> str:
    """The reply subject a run's request is owned by (a cancel must name it)."""
    return f"background.{response_id}"


class PipelineRun:
    """Runs background responses through the pipeline.

    Args:
        handle: the pipeline's entry point.
        cancel: the pipeline's cancel (request id, owner).
        keys: the tenants they run as.
        events: where a streamed one's events are kept.
    """

    def __init__(
        self,
        handle: Handle,
        cancel: Callable[[str, str], None],
        keys: KeyRing,
        events: ResponseEvents,
    ) -> None:
        self._handle = handle
        self._cancel = cancel
        self._keys = keys
        self._events = events

    async def __call__(
        self, response_id: str, tenant: str, stored: StoredResponse, halted: asyncio.Event
    ) -> Reply | None:
        """The pipeline's answer, or ``None`` when ``halted`` was set first."""
        sink = RecordingSink(self._events, response_id) if stored.streamed else CollectSink()
        hdrs = {
            **stored.headers,
            headers.REQUEST_ID: response_id,
            headers.IDEMPOTENT: "1",
            headers.CACHE_CONTROL: "no-cache, no-store",
        }
        caller = Caller(self._keys.named(tenant))
        owner = _owner(response_id)
        counted = stored.counted is not None  # (its rate limits were counted when accepted)
        await self._handle(
            stored.body, hdrs, sink, caller, reply_to=owner, api=Api.RESPONSES, counted=counted
        )
        stop: asyncio.Future[Any] = asyncio.ensure_future(halted.wait())
        waits: list[asyncio.Future[Any]] = [sink.reply, stop]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not sink.reply.done():
            self._cancel(response_id, owner)
            if isinstance(sink, RecordingSink):  # its followers learn it ended
                await sink.error(Reply(400, error_body(400, "cancelled", CANCELLED)), {})
            return None
        return sink.reply.result()
