"""An object's lines read piece by piece (edge_runtime.object_lines), whatever the pieces."""

from __future__ import annotations

import pytest

from edge_runtime.object_lines import Read, lines
from edge_runtime.object_range import ChunkIndex, ObjectGone

DATA = (
    b'{"custom_id":"a","n":1}\n'
    b"\n"
    b'{"custom_id":"b","n":22}\r\n'
    b"   \n"
    + b'{"custom_id":"long","pad":"'
    + b"x" * 50
    + b'"}\r'
    + b'{"custom_id":"c"}\n'
    + b'{"custom_id":"last, no line end"}'
)


def reader(data: bytes, chunk: int) -> tuple[Read, list[tuple[int, int]]]:
    """Reads of ``data`` stored in chunks of ``chunk`` bytes (a piece spanning several ends at
    a chunk boundary, as the store's reader does), and the ranges asked for."""
    starts = tuple(range(0, len(data), chunk))
    index = ChunkIndex(tuple(range(len(starts))), starts, len(data))
    asked: list[tuple[int, int]] = []

    async def read(offset: int, limit: int) -> bytes:
        asked.append((offset, limit))
        return data[offset : index.piece_end(offset, limit)]

    return read, asked


async def collect(read: Read, size: int, piece: int) -> list[bytes]:
    return [line async for line in lines(read, size, piece)]


@pytest.mark.parametrize(("chunk", "piece"), [(1, 1), (3, 7), (7, 3), (16, 40), (1000, 1000)])
async def test_lines_are_the_same_whatever_the_piece_boundaries(chunk: int, piece: int) -> None:
    """Every piece size and chunk size yields the object's non-blank lines, as splitting it
    whole would: a ``\\r\\n`` or a line split between pieces, a line longer than a piece, a
    last line without its end."""
    read, asked = reader(DATA, chunk)
    expected = [line for line in DATA.splitlines() if line.strip()]
    assert await collect(read, len(DATA), piece) == expected
    assert all(limit == piece for _, limit in asked)


async def test_an_empty_object_has_no_lines() -> None:
    """An empty object yields nothing and is not read."""
    read, asked = reader(b"", 4)
    assert await collect(read, 0, 4) == []
    assert asked == []


async def test_an_object_shorter_than_its_size_is_gone() -> None:
    """A read that ends before the object's size (its chunks deleted meanwhile) is ObjectGone,
    not a silently shortened list of lines."""
    read, _ = reader(b"a\nb\n", 4)
    with pytest.raises(ObjectGone):
        await collect(read, 10, 4)
