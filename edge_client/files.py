"""Reading a batch file through the brokers, piece by piece (``llm.batch.file.content``).

Each request names an offset; the broker answers with the file's bytes from there, at most
the piece asked for and always under the server's ``max_payload``, with the whole file's size
and digest in headers. The reader asks for the next offset until it has the whole file, then
checks the digest: a file comes back whole and byte-identical, or the read raises. Every
piece is a call of its own (retried within its deadline like any call), so a broker lost
mid-file costs one piece asked again, and memory holds one piece at a time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import IO, Any, Protocol

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from edge_client.errors import StreamError
from schemas import headers, subjects
from schemas.batch import FileRequest

__all__ = ["PIECE_BYTES", "Caller", "read_file"]

#: The piece a reader asks for: what a broker sends at most (less on a server whose
#: ``max_payload`` is smaller), the fastest size measured (docs/batches.md).
PIECE_BYTES = 4 * 1024 * 1024
_DIGEST_PREFIX = "sha-256="


class Caller(Protocol):
    """What batches and files need of their client (:class:`~edge_client.client.EdgeClient`)."""

    @property
    def nc(self) -> Client: ...

    async def call(self, subject: str, body: bytes, **call: Any) -> Msg: ...


async def read_file(
    client: Caller,
    file_id: str,
    into: IO[bytes],
    *,
    piece_bytes: int = PIECE_BYTES,
    **call: Any,
) -> int:
    """Write a file's bytes into ``into``, piece by piece.

    Args:
        client: the client whose calls carry the caller's key.
        file_id: a file of the caller's tenant.
        into: where the bytes go, in order (a file opened ``"wb"``, a ``BytesIO``).
        piece_bytes: the most bytes to ask for at a time (the broker may send less).
        **call: per-call options of every piece (``deadline_s`` ...).

    Returns:
        The file's size in bytes.

    Raises:
        edge_client.errors.NotFoundError: no such file of the caller's tenant.
        edge_client.errors.StreamError: a piece did not continue the file, the file changed
            while it was read, or the bytes do not match the file's digest.
    """
    limit = max(1, min(piece_bytes, client.nc.max_payload - headers.HEADER_ROOM))
    hasher = hashlib.sha256()
    offset, size, digest = 0, -1, ""
    while offset != size:
        request = msgspec.json.encode(FileRequest(id=file_id, offset=offset, length=limit))
        reply = await client.call(subjects.BATCH_FILE_CONTENT, request, **call)
        piece_size, piece_digest = _check_piece(reply, file_id, offset)
        if size < 0:
            size, digest = piece_size, piece_digest
        elif (piece_size, piece_digest) != (size, digest):
            raise StreamError(f"file {file_id} changed while it was read")
        if not reply.data and offset < size:
            raise StreamError(f"file {file_id}: no bytes at offset {offset} of {size}")
        hasher.update(reply.data)
        into.write(reply.data)
        offset += len(reply.data)
        if offset > size:
            raise StreamError(f"file {file_id}: {offset} bytes read of {size}")
    _check_digest(file_id, digest, hasher.digest())
    return size


def _check_piece(reply: Msg, file_id: str, offset: int) -> tuple[int, str]:
    """The file's size and digest a piece names; it must begin where it was asked to."""
    hdrs = reply.headers or {}
    try:
        size, begins = int(hdrs[headers.FILE_SIZE]), int(hdrs[headers.FILE_OFFSET])
    except (KeyError, ValueError):
        raise StreamError(f"file {file_id}: a piece without its size or offset") from None
    if begins != offset:
        raise StreamError(f"file {file_id}: asked for offset {offset}, got {begins}")
    return size, hdrs.get(headers.FILE_DIGEST, "")


def _check_digest(file_id: str, digest: str, computed: bytes) -> None:
    """Compare with the stored ``SHA-256=<base64url>`` digest (a file stored without one, by
    another writer, is taken as read)."""
    if not digest.lower().startswith(_DIGEST_PREFIX):
        return
    encoded = digest[len(_DIGEST_PREFIX) :]
    try:
        stored = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise StreamError(f"file {file_id}: unreadable digest {digest!r}") from None
    if stored != computed:
        raise StreamError(f"file {file_id}: the bytes read do not match its digest")
