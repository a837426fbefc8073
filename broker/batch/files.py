"""Batch files for the tenant that owns them: ``llm.batch.file.get`` and ``.file.content``.

A file is read piece by piece: a ``llm.batch.file.content`` request names the file and an
offset, and is answered by one message holding the file's bytes from there (at most
:data:`PIECE_BYTES`, and always under the server's ``max_payload``) with ``Llm-File-Size``,
``Llm-File-Offset`` and ``Llm-File-Digest``; the reader asks for the next offset until it has
``Llm-File-Size`` bytes, and checks the digest. Any broker answers any piece, so a broker
lost mid-file costs one piece asked again, and a reader takes pieces as fast as it can use
them (why pieces rather than a stream of replies, with figures: docs/batches.md).

Another tenant's file is a 404 exactly like a file that does not exist: its existence is
never revealed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from broker.batch.errors import ApiError
from edge_runtime.batch_store import BatchStore
from edge_runtime.object_range import ObjectGone
from schemas import headers
from schemas.batch import FileObject, FileRequest

__all__ = ["PIECES_AT_ONCE", "PIECE_BYTES", "FileApi", "RawReply"]

#: The largest piece a broker sends. Reading a 50 MB file on 2 cores (``python -m
#: bench.file_read``, figures in docs/batches.md), 4 MiB pieces were as fast as any (2 MiB
#: ones within the noise, 8 MiB ones 20-40 % slower, 1 MiB ones slower in most runs), and a
#: piece is held whole in the broker's memory while it is sent.
PIECE_BYTES = 4 * 1024 * 1024
#: Pieces a broker reads at once (more wait for a turn): at most 32 MiB being read,
#: however many readers there are.
PIECES_AT_ONCE = 8


@dataclass(frozen=True, slots=True)
class RawReply:
    """A reply sent as it is (not encoded as JSON), with headers of its own."""

    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _not_found(file_id: str) -> ApiError:
    return ApiError(404, "file_not_found", f"no file {file_id!r}", "id")


class FileApi:
    """The file operations of the Batch API.

    Args:
        store: the batch resources.
        max_payload: the largest message the server takes now (it may change on reconnect).
    """

    def __init__(self, store: BatchStore, max_payload: Callable[[], int]) -> None:
        self._store = store
        self._max_payload = max_payload
        self._turns = asyncio.Semaphore(PIECES_AT_ONCE)

    async def get(self, body: dict[str, Any], tenant: str) -> FileObject:
        """``llm.batch.file.get``: the file object."""
        request = msgspec.convert(body, FileRequest)
        file = await self._store.get_file(request.id, owner=tenant)
        if file is None:
            raise _not_found(request.id)
        return file

    async def content(self, body: dict[str, Any], tenant: str) -> RawReply:
        """``llm.batch.file.content``: a piece of the file's bytes from ``offset``."""
        request = msgspec.convert(body, FileRequest)
        limit = self.piece_limit(request.length)
        try:
            async with self._turns:
                piece = await self._store.file_piece(request.id, tenant, request.offset, limit)
        except ObjectGone:  # deleted while it was read
            raise _not_found(request.id) from None
        if piece is None:
            raise _not_found(request.id)
        if request.offset > piece.size:
            raise ApiError(
                400,
                "invalid_value",
                f"offset {request.offset} is past the end of the file ({piece.size} bytes)",
                "offset",
            )
        return RawReply(
            piece.data,
            {
                headers.FILE_SIZE: str(piece.size),
                headers.FILE_OFFSET: str(piece.offset),
                headers.FILE_DIGEST: piece.digest,
            },
        )

    def piece_limit(self, wanted: int | None) -> int:
        """The most bytes one reply carries: the caller's ``length``, :data:`PIECE_BYTES`,
        and what fits the server's ``max_payload`` beside the reply's headers."""
        fits = self._max_payload() - headers.HEADER_ROOM
        return max(1, min(PIECE_BYTES, fits, wanted or PIECE_BYTES))
