"""An object's lines, read piece by piece: memory holds one piece and one line, not the object.

nats-py's object store ``get`` reads a whole object into memory (or a file); the engine's
own objects (a sub-batch's input and results, up to a few hundred MB) are read instead in
pieces of at most :data:`PIECE_BYTES` through :class:`edge_runtime.object_range.RangeReader`,
and cut into lines here. A line is what ``bytes.splitlines`` makes of the whole object (``\\n``,
``\\r\\n`` or ``\\r`` ends one), blank lines left out, whatever the piece boundaries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from edge_runtime.object_range import ObjectGone

__all__ = ["PIECE_BYTES", "Read", "lines"]

#: Bytes read at once (a piece ends early at one of the store's 128 KiB chunk boundaries).
PIECE_BYTES = 1024 * 1024
#: ``(offset, limit)``: at most ``limit`` bytes from ``offset`` (at least one before the end).
Read = Callable[[int, int], Awaitable[bytes]]


async def lines(read: Read, size: int, piece_bytes: int = PIECE_BYTES) -> AsyncIterator[bytes]:
    """The non-blank lines of ``size`` bytes read by ``read``, without their line ends.

    Raises:
        ObjectGone: ``read`` returned nothing before ``size`` bytes were read.
    """
    offset, rest = 0, b""
    while offset < size:
        piece = await read(offset, piece_bytes)
        if not piece:
            raise ObjectGone(f"nothing at {offset} of {size} bytes")
        offset += len(piece)
        cut = piece.rfind(b"\n")
        if cut < 0:  # no line ends here (a long line): keep it whole for the next piece
            rest += piece
            continue
        whole, rest = rest + piece[: cut + 1], piece[cut + 1 :]
        for line in whole.splitlines():
            if line.strip():
                yield line
    for line in rest.splitlines():
        if line.strip():
            yield line
