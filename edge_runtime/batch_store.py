"""The batch engine's JetStream resources (all created on first use, idempotently).

Its streams, buckets and subjects are named in :mod:`schemas.jetstream`.

One message a line. Each tenant's lines of each priority have a subject of their own, so a
runner can pull them from a consumer of their own (see broker.batch.runner) and one tenant's
flood never sits in front of another's lines. Lines queued by an older broker under
``llm.batch.line.<batch>`` are moved to their batch's subject by
:meth:`BatchStore.move_legacy_lines`.

A line leaves the work queue only when acknowledged, and it is acknowledged only after its
result is stored under a key derived from its ``custom_id``: a crash anywhere means a
redelivery, never a loss, and a redelivered line overwrites its own result, never adds one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client
from nats.js import api
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.errors import NotFoundError as JsNotFound
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from edge_runtime.jetstream import ensure_key_value, ensure_object_store, ensure_stream
from edge_runtime.object_lines import PIECE_BYTES, lines
from edge_runtime.object_range import RangeReader
from schemas import subjects
from schemas.batch import BatchRecord, FileObject, StoredFile
from schemas.jetstream import (
    BATCHES_BUCKET,
    FILES_BUCKET,
    LEGACY_CONSUMER,
    LINE_SUBJECT,
    LINES_STREAM,
    RESULTS_BUCKET,
    line_subject,
    result_key,
)

__all__ = ["PUBLISH_WINDOW", "RESULTS_TTL_S", "BatchStore", "Conflict", "FilePiece"]

#: Results are kept this long after they are written (the output file outlives them).
RESULTS_TTL_S = 7 * 24 * 3600
PUBLISH_WINDOW = 256

_record_decoder = msgspec.json.Decoder(BatchRecord)
_file_decoder = msgspec.json.Decoder(StoredFile)
_encoder = msgspec.json.Encoder()


class Conflict(Exception):
    """A compare-and-set update lost the race too many times."""


@dataclass(frozen=True, slots=True)
class FilePiece:
    """Bytes of a file from ``offset`` on, with what a reader needs to put the file together.

    Attributes:
        file: the file object.
        size: the whole file's size in bytes, as stored.
        offset: where ``data`` begins in the file.
        data: the piece (empty at the end of the file).
        digest: the whole file's digest, ``SHA-256=<base64url>``.
    """

    file: FileObject
    size: int
    offset: int
    data: bytes
    digest: str


class BatchStore:
    """Typed access to the engine's JetStream resources. Build with :meth:`open`."""

    def __init__(self, nc: Client, files: ObjectStore, batches: KeyValue, results: KeyValue):
        self._nc = nc
        self._js = nc.jetstream()
        self.files = files
        self._batches = batches
        self._results = results
        self._ranges = RangeReader(nc, FILES_BUCKET)

    @classmethod
    async def open(cls, nc: Client, replicas: int = 1) -> BatchStore:
        """Create (or bind to) every resource.

        Args:
            nc: connected client with JetStream.
            replicas: copies of each resource in a NATS cluster; an existing resource with
                fewer is raised to this, one with more keeps them (see edge_runtime.jetstream).
        """
        js = nc.jetstream()
        files = await ensure_object_store(js, FILES_BUCKET, replicas)
        batches = await ensure_key_value(
            js, api.KeyValueConfig(bucket=BATCHES_BUCKET, history=1, replicas=replicas)
        )
        results = await ensure_key_value(
            js,
            api.KeyValueConfig(
                bucket=RESULTS_BUCKET, history=1, ttl=RESULTS_TTL_S, replicas=replicas
            ),
        )
        config = api.StreamConfig(
            name=LINES_STREAM,
            subjects=[f"{LINE_SUBJECT}.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            duplicate_window=600,
            num_replicas=replicas,
        )
        await ensure_stream(js, config)
        return cls(nc, files, batches, results)

    # -- files ---------------------------------------------------------------------------

    async def put_file(
        self,
        file: FileObject,
        data: bytes | io.BufferedIOBase,
        owner: str = subjects.DEFAULT_TENANT,
    ) -> FileObject:
        """Store a file's bytes with its file object (and its owning tenant) as metadata."""
        stored = StoredFile(**msgspec.structs.asdict(file), owner=owner)
        meta = api.ObjectMeta(name=file.id, description=_encoder.encode(stored).decode())
        await self.files.put(file.id, data, meta=meta)
        return file

    async def get_file(self, file_id: str, owner: str | None = None) -> FileObject | None:
        """The file object, or ``None`` (also when ``owner`` is given and is not its owner)."""
        found = await self._stored(file_id, owner)
        return found[0] if found else None

    async def _stored(
        self, file_id: str, owner: str | None
    ) -> tuple[FileObject, api.ObjectInfo] | None:
        """The file object and its object-store entry (of ``owner``, when given)."""
        try:
            info = await self.files.get_info(file_id)
        except JsNotFound:
            return None
        if info.deleted or not info.description:
            return None
        stored = _file_decoder.decode(info.description)
        if owner is not None and stored.owner != owner:
            return None
        return stored.public(), info

    async def file_piece(
        self, file_id: str, owner: str, offset: int, limit: int
    ) -> FilePiece | None:
        """At most ``limit`` bytes of an owner's file from ``offset`` (a piece ends at one of
        the store's chunk boundaries when it spans several; none at or past the end).

        Returns:
            The piece, or ``None`` when ``owner`` has no such file.

        Raises:
            edge_runtime.object_range.ObjectGone: the file was deleted while it was read.
        """
        found = await self._stored(file_id, owner)
        if found is None:
            return None
        file, info = found
        data = await self._ranges.read(info, offset, limit)
        return FilePiece(file, info.size or 0, offset, data, info.digest or "")

    async def put_object(self, name: str, data: bytes | io.BufferedIOBase) -> None:
        """Store engine-private bytes (a sub-batch's lines): no file object, so no tenant
        lists or reads it through the Files API."""
        await self.files.put(name, data)

    async def object_lines(self, name: str, piece_bytes: int = PIECE_BYTES) -> AsyncIterator[bytes]:
        """An engine-private object's non-blank lines, read ``piece_bytes`` at a time (memory
        holds a piece and a line, not the object; see edge_runtime.object_lines).

        Raises:
            nats.js.errors.NotFoundError: there is no such object.
            edge_runtime.object_range.ObjectGone: it was deleted while it was read.
        """
        info = await self.files.get_info(name)

        async def read(offset: int, limit: int) -> bytes:
            return await self._ranges.read(info, offset, limit)

        async for line in lines(read, info.size or 0, piece_bytes):
            yield line

    async def drop_objects(self, names: Iterable[str]) -> None:
        """Remove engine-private objects entirely: their chunks, then their entry.

        Unlike :meth:`delete_file` (which leaves a ``deleted`` entry behind, as the object
        store's delete does), nothing stays: a sub-batch's three objects would otherwise
        leave three entries for ever. A missing object is skipped, so a repeat is harmless.
        """
        stream = f"OBJ_{FILES_BUCKET}"
        for name in names:
            try:
                info = await self.files.get_info(name, show_deleted=True)
            except JsNotFound:
                continue
            if info.nuid:
                chunks = f"$O.{FILES_BUCKET}.C.{info.nuid}"
                await self._js.purge_stream(stream, subject=chunks)
            entry = base64.urlsafe_b64encode(name.encode()).decode()
            await self._js.purge_stream(stream, subject=f"$O.{FILES_BUCKET}.M.{entry}")

    async def read_file(self, file_id: str, into: io.BufferedIOBase) -> None:
        """Stream a file's bytes into ``into`` (a temp file: nothing is held in memory)."""
        await self.files.get(file_id, writeinto=into)

    async def delete_file(self, file_id: str, owner: str | None = None) -> bool:
        """Delete; ``False`` if there was no such file (of ``owner``, when given)."""
        if await self.get_file(file_id, owner) is None:
            return False
        await self.files.delete(file_id)
        return True

    async def list_files(self, owner: str | None = None) -> list[FileObject]:
        """Every stored file (of ``owner``, when given)."""
        try:
            infos = await self.files.list()
        except JsNotFound:
            return []
        stored = (
            _file_decoder.decode(i.description) for i in infos if i.description and not i.deleted
        )
        return [s.public() for s in stored if owner is None or s.owner == owner]

    # -- batch records -------------------------------------------------------------------

    async def get(self, batch_id: str) -> BatchRecord | None:
        """The record, or ``None``."""
        found = await self._get(batch_id)
        return found[0] if found else None

    async def _get(self, batch_id: str) -> tuple[BatchRecord, int] | None:
        try:
            entry = await self._batches.get(f"batch.{batch_id}")
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        return _record_decoder.decode(entry.value), entry.revision

    async def create(self, record: BatchRecord) -> None:
        """Store a new record and mark it active."""
        await self._batches.create(f"batch.{record.batch.id}", _encoder.encode(record))
        await self._batches.put(f"active.{record.batch.id}", b"1")

    async def update(
        self, batch_id: str, change: Callable[[BatchRecord], BatchRecord | None]
    ) -> BatchRecord | None:
        """Compare-and-set: apply ``change`` to the latest record until the write wins.

        ``change`` returns ``None`` to leave the record as it is.

        Raises:
            Conflict: lost the race 20 times.
        """
        for _ in range(20):
            found = await self._get(batch_id)
            if found is None:
                return None
            record, revision = found
            changed = change(record)
            if changed is None:
                return record
            try:
                await self._batches.update(
                    f"batch.{batch_id}", _encoder.encode(changed), last=revision
                )
            except KeyWrongLastSequenceError:
                continue
            return changed
        raise Conflict(f"batch {batch_id}: too many concurrent updates")

    async def deactivate(self, batch_id: str) -> None:
        """Drop a finished batch from the active index (a subject purge leaves no marker)."""
        await self._js.purge_stream(
            f"KV_{BATCHES_BUCKET}", subject=f"$KV.{BATCHES_BUCKET}.active.{batch_id}"
        )

    async def _keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (read from the bucket stream's subject index)."""
        info = await self._js.stream_info(
            f"KV_{BATCHES_BUCKET}", subjects_filter=f"$KV.{BATCHES_BUCKET}.{prefix}.>"
        )
        start = len(f"$KV.{BATCHES_BUCKET}.{prefix}.")
        return [subject[start:] for subject in info.state.subjects or {}]

    async def active(self) -> list[str]:
        """Ids of batches not yet finished."""
        return await self._keys("active")

    async def all_ids(self) -> list[str]:
        """Ids of every batch (for listing)."""
        return await self._keys("batch")

    # -- lines ---------------------------------------------------------------------------

    async def publish_lines(
        self,
        batch_id: str,
        lines: Iterable[tuple[str, bytes]],
        pace: Callable[[], Awaitable[int]] | None = None,
        *,
        tenant: str = subjects.DEFAULT_TENANT,
        priority: str = "normal",
    ) -> int:
        """Queue ``(custom_id, line)`` pairs; duplicates (a resumed validation) are dropped.

        Lines go out in windows, each acknowledged by JetStream before the next; ``pace`` is
        awaited between windows and returns the next window's size (the batch gives way to
        interactive traffic there). Without it, windows are :data:`PUBLISH_WINDOW` lines.

        Returns:
            How many lines were published.
        """
        subject = line_subject(tenant, priority, batch_id)
        acks: list[asyncio.Future[api.PubAck]] = []
        count = 0
        window = PUBLISH_WINDOW
        for custom_id, line in lines:
            msg_id = f"{batch_id}:{hashlib.sha256(custom_id.encode()).hexdigest()[:40]}"
            acks.append(
                await self._js.publish_async(subject, line, headers={"Nats-Msg-Id": msg_id})
            )
            count += 1
            if len(acks) >= window:  # every line of a window stored before the next
                await asyncio.gather(*acks)
                acks.clear()
                if pace is not None:
                    window = await pace()
        await asyncio.gather(*acks)
        return count

    async def remaining(self, batch_id: str) -> int:
        """Lines of a batch not yet acknowledged (in either layout)."""
        total = 0
        for subject in (f"{LINE_SUBJECT}.*.*.{batch_id}", f"{LINE_SUBJECT}.{batch_id}"):
            info = await self._js.stream_info(LINES_STREAM, subjects_filter=subject)
            total += sum((info.state.subjects or {}).values())
        return total

    async def queued(self) -> dict[str, int]:
        """Lines not yet acknowledged, by subject (the work queue's subject index)."""
        info = await self._js.stream_info(LINES_STREAM, subjects_filter=f"{LINE_SUBJECT}.>")
        return dict(info.state.subjects or {})

    async def purge_lines(self, batch_id: str) -> None:
        """Drop every queued line of a batch (cancel)."""
        for subject in (f"{LINE_SUBJECT}.*.*.{batch_id}", f"{LINE_SUBJECT}.{batch_id}"):
            await self._js.purge_stream(LINES_STREAM, subject=subject)

    async def move_legacy_lines(self) -> int:
        """Move lines queued in the old layout to their batch's tenant and priority subject.

        A line is republished (with its original ``Nats-Msg-Id``) before the old copy is
        acknowledged: a crash in between leaves both, and the line then runs twice, storing
        the same result key twice: still exactly one result per ``custom_id``.

        Returns:
            How many lines were moved.
        """
        config = api.ConsumerConfig(
            durable_name=LEGACY_CONSUMER,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=30,
            max_deliver=-1,
            filter_subject=f"{LINE_SUBJECT}.*",
        )
        with contextlib.suppress(JsNotFound):  # the old consumer filtered on every subject
            info = await self._js.consumer_info(LINES_STREAM, LEGACY_CONSUMER)
            if info.config.filter_subject != config.filter_subject:
                await self._js.delete_consumer(LINES_STREAM, LEGACY_CONSUMER)
        if not await self.queued_legacy():
            return 0
        await self._js.add_consumer(LINES_STREAM, config)
        sub = await self._js.pull_subscribe_bind(durable=LEGACY_CONSUMER, stream=LINES_STREAM)
        moved = 0
        try:
            while True:
                try:
                    msgs = await sub.fetch(256, timeout=0.5)
                except TimeoutError:
                    return moved
                for msg in msgs:
                    batch_id = msg.subject.rsplit(".", 1)[-1]
                    record = await self.get(batch_id)
                    if record is not None:
                        subject = line_subject(record.tenant, record.priority, batch_id)
                        await self._js.publish(subject, msg.data, headers=msg.headers)
                    await msg.ack()
                    moved += 1
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def queued_legacy(self) -> int:
        """Lines still queued in the old layout."""
        info = await self._js.stream_info(LINES_STREAM, subjects_filter=f"{LINE_SUBJECT}.*")
        return sum((info.state.subjects or {}).values())

    # -- results -------------------------------------------------------------------------

    async def put_result(self, batch_id: str, custom_id: str, line: bytes) -> None:
        """Store one line's result (idempotent per custom_id)."""
        await self._results.put(result_key(batch_id, custom_id), line)

    async def has_result(self, batch_id: str, custom_id: str) -> bool:
        """Whether a line's result is stored."""
        try:
            entry = await self._results.get(result_key(batch_id, custom_id))
        except KeyNotFoundError:
            return False
        return bool(entry.value)

    async def results(self, batch_id: str, expected: int) -> AsyncIterator[bytes]:
        """Every stored result of a batch, fetched in pages (memory stays flat)."""
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=api.AckPolicy.ALL,
            inactive_threshold=60,
        )
        sub = await self._js.pull_subscribe(
            f"$KV.{RESULTS_BUCKET}.{batch_id}.>", stream=f"KV_{RESULTS_BUCKET}", config=config
        )
        seen = 0
        try:
            while seen < expected:
                try:
                    msgs = await sub.fetch(256, timeout=2)
                except TimeoutError:
                    return
                for msg in msgs:
                    seen += 1
                    yield msg.data
                await msgs[-1].ack()  # AckAll: acknowledges the whole page
        finally:
            await sub.unsubscribe()
