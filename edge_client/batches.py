"""Batches through :class:`~edge_client.client.EdgeClient`: ``client.batches``.

    batch = await client.batches.submit(lines)      # uploads the lines, creates the batch
    done = await client.batches.wait(batch.id, on_progress=print)
    for line in await client.batches.results(done):
        print(line.custom_id, line.response.body if line.response else line.error)

Everything goes through the brokers' Batch API: files are read piece by piece with
``llm.batch.file.content`` (:mod:`edge_client.files`), never from JetStream, so a producer
needs no JetStream permission and reads only its own tenant's files. Progress comes from
``llm.batch.events.<tenant>.<id>`` (the batch object at every change; the tenant is asked of
``llm.batch.whoami`` once); ``wait`` subscribes before it reads the batch, so no change falls
between the two, and asks again whenever :data:`EVENT_GAP_S` pass without an event (an event
is published at most once).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

import msgspec
from nats.errors import TimeoutError as NatsTimeout

from edge_client.errors import DeadlineError
from edge_client.files import PIECE_BYTES, Caller, read_file
from schemas import subjects
from schemas.batch import (
    FINAL_STATUSES,
    BatchObject,
    BatchResultLine,
    BatchSubmit,
    FileObject,
    FileRequest,
    InputLine,
)

__all__ = ["EVENT_GAP_S", "Batches"]

#: The endpoint batch lines target unless told otherwise (brokers also run
#: ``/v1/embeddings``).
CHAT_ENDPOINT = "/v1/chat/completions"
#: How long ``wait`` listens for an event before it reads the batch again.
EVENT_GAP_S = 5.0

_batch = msgspec.json.Decoder(BatchObject)
_file = msgspec.json.Decoder(FileObject)
_whoami = msgspec.json.Decoder(dict[str, str])
_line = msgspec.json.Decoder(BatchResultLine)
_input = msgspec.convert


class Batches:
    """The Batch API (``llm.batch.*``) of one client."""

    def __init__(self, client: Caller) -> None:
        self._client = client
        self._tenant: str | None = None

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

    async def tenant(self, **call: Any) -> str:
        """The tenant the brokers take this client for (``llm.batch.whoami``, asked once):
        its batches' events go to ``llm.batch.events.<tenant>.<id>``."""
        if self._tenant is None:
            self._tenant = _whoami.decode(await self._op("whoami", {}, **call))["tenant"]
        return self._tenant

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
        events = subjects.batch_events(await self.tenant(), batch_id)
        sub = await self._client.nc.subscribe(events)
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

    async def results(self, batch: BatchObject, **call: Any) -> list[BatchResultLine]:
        """Every line of a finished batch's output and error files (in file order)."""
        lines: list[BatchResultLine] = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id is not None:
                data = await self.content(file_id, **call)
                lines.extend(_line.decode(raw) for raw in data.splitlines() if raw)
        return lines

    async def file(self, file_id: str, **call: Any) -> FileObject:
        """A file's object (``llm.batch.file.get``).

        Raises:
            edge_client.errors.NotFoundError: no such file of this client's tenant.
        """
        return _file.decode(await self._op("file.get", FileRequest(id=file_id), **call))

    async def content(self, file_id: str, **call: Any) -> bytes:
        """A file's bytes, whole in memory (:meth:`download` writes a large one to disk)."""
        buffer = io.BytesIO()
        await read_file(self._client, file_id, buffer, **call)
        return buffer.getvalue()

    async def download(
        self, file_id: str, into: IO[bytes], *, piece_bytes: int = PIECE_BYTES, **call: Any
    ) -> int:
        """Write a file's bytes into ``into`` (memory holds one piece at a time).

        Args:
            piece_bytes: the most bytes to ask for at a time (the broker may send less).

        Returns:
            The file's size in bytes.

        Raises:
            edge_client.errors.NotFoundError: no such file of this client's tenant.
            edge_client.errors.StreamError: the bytes read are not the file's.
        """
        return await read_file(self._client, file_id, into, piece_bytes=piece_bytes, **call)
