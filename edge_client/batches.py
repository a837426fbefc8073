"""Batches through :class:`~edge_client.client.EdgeClient`: ``client.batches``.

    batch = await client.batches.submit(lines)      # uploads the lines, creates the batch
    done = await client.batches.wait(batch.id, on_progress=print)
    for line in await client.batches.results(done):
        print(line.custom_id, line.response.body if line.response else line.error)

Progress comes from ``llm.batch.events.<id>`` (the batch object at every change); ``wait``
subscribes before it reads the batch, so no change falls between the two, and asks again
whenever :data:`EVENT_GAP_S` pass without an event (an event is published at most once).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout

from edge_client.errors import DeadlineError
from schemas import subjects
from schemas.batch import FINAL_STATUSES, BatchObject, BatchResultLine, BatchSubmit, InputLine
from schemas.jetstream import FILES_BUCKET, events_subject

__all__ = ["EVENT_GAP_S", "Batches"]

#: The endpoint batch lines target unless told otherwise (brokers also run
#: ``/v1/embeddings``).
CHAT_ENDPOINT = "/v1/chat/completions"
#: How long ``wait`` listens for an event before it reads the batch again.
EVENT_GAP_S = 5.0

_batch = msgspec.json.Decoder(BatchObject)
_line = msgspec.json.Decoder(BatchResultLine)
_input = msgspec.convert


class Caller(Protocol):
    """What batches need of their client (:class:`~edge_client.client.EdgeClient`)."""

    @property
    def nc(self) -> Client: ...

    async def call(self, subject: str, body: bytes, **call: Any) -> Msg: ...


class Batches:
    """The Batch API (``llm.batch.*``) of one client."""

    def __init__(self, client: Caller) -> None:
        self._client = client

    async def _op(self, op: str, body: Mapping[str, Any] | msgspec.Struct, **call: Any) -> bytes:
        reply = await self._client.call(
            f"{subjects.BATCH_PREFIX}.{op}", msgspec.json.encode(body), **call
        )
        return reply.data

    async def submit(
        self,
        lines: Iterable[InputLine | Mapping[str, Any]],
        *,
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
        endpoint: str = CHAT_ENDPOINT,
        **call: Any,
    ) -> BatchObject:
        """Upload request lines as the batch's input file and create the batch.

        Args:
            lines: ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}``.
            endpoint: the url every line names: ``/v1/chat/completions`` or
                ``/v1/embeddings``.
        """
        inputs = [ln if isinstance(ln, InputLine) else _input(ln, InputLine) for ln in lines]
        body = BatchSubmit(
            endpoint=endpoint,
            completion_window=completion_window,
            lines=inputs,
            metadata=metadata,
        )
        return _batch.decode(await self._op("submit", body, **call))

    async def get(self, batch_id: str, **call: Any) -> BatchObject:
        """The batch as it is now."""
        return _batch.decode(await self._op("get", {"id": batch_id}, **call))

    async def cancel(self, batch_id: str, **call: Any) -> BatchObject:
        """Stop the batch: queued lines are dropped, it ends ``cancelled``."""
        return _batch.decode(await self._op("cancel", {"id": batch_id}, **call))

    async def wait(
        self,
        batch_id: str,
        *,
        timeout_s: float = 3600.0,
        on_progress: Callable[[BatchObject], object] | None = None,
    ) -> BatchObject:
        """The batch once it is final (completed, failed, expired or cancelled).

        Args:
            on_progress: called with the batch object at every change seen.

        Raises:
            edge_client.errors.DeadlineError: not final within ``timeout_s``.
        """
        sub = await self._client.nc.subscribe(events_subject(batch_id))
        try:
            async with asyncio.timeout(timeout_s):
                batch = await self.get(batch_id)
                while True:
                    if on_progress is not None:
                        on_progress(batch)
                    if batch.status in FINAL_STATUSES:
                        return batch
                    try:
                        batch = _batch.decode((await sub.next_msg(timeout=EVENT_GAP_S)).data)
                    except NatsTimeout:
                        batch = await self.get(batch_id)
        except TimeoutError as exc:
            raise DeadlineError(
                504, f"batch {batch_id} not finished within {timeout_s}s", code="batch_wait"
            ) from exc
        finally:
            await sub.unsubscribe()

    async def results(self, batch: BatchObject) -> list[BatchResultLine]:
        """Every line of a finished batch's output and error files (in file order)."""
        store = await self._client.nc.jetstream().object_store(FILES_BUCKET)
        lines: list[BatchResultLine] = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id is None:
                continue
            data = io.BytesIO()
            await store.get(file_id, writeinto=data)
            lines.extend(_line.decode(raw) for raw in data.getvalue().splitlines() if raw)
        return lines
