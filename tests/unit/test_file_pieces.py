"""Files read piece by piece: where the broker ends a piece, and what the client accepts."""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from edge_client import StreamError
from edge_client.files import read_file
from edge_runtime.object_range import ChunkIndex
from schemas import headers


def index_of(sizes: list[int]) -> ChunkIndex:
    starts, at = [], 0
    for size in sizes:
        starts.append(at)
        at += size
    return ChunkIndex(tuple(range(10, 10 + len(sizes))), tuple(starts), at)


def pieces(index: ChunkIndex, limit: int) -> list[tuple[int, int]]:
    """The (offset, end) of every piece a reader asking from 0 gets."""
    out, offset = [], 0
    while offset < index.size:
        end = index.piece_end(offset, limit)
        out.append((offset, end))
        offset = end
    return out


def test_pieces_end_on_chunk_boundaries_and_cover_the_object_once() -> None:
    """Pieces of up to 1,000 bytes over chunks of 300 end at chunk boundaries (no chunk is
    fetched twice) and cover every byte once; uneven chunks too."""
    assert pieces(index_of([300] * 7 + [50]), 1000) == [(0, 900), (900, 1800), (1800, 2150)]
    uneven = index_of([100, 500, 20, 700, 3])
    got = pieces(uneven, 750)
    assert got == [(0, 620), (620, 1323)]
    assert all(uneven.starts[uneven.chunk_at(end)] == end for _, end in got[:-1])


def test_a_piece_smaller_than_a_chunk_ends_inside_it() -> None:
    """A limit below the chunk size still moves on: the piece ends inside the chunk, and the
    next one at the following boundary when it can."""
    assert pieces(index_of([300, 300]), 250) == [(0, 250), (250, 300), (300, 550), (550, 600)]
    assert index_of([300]).chunk_at(299) == 0


class Pieces:
    """A stand-in for the client: answers each ``llm.batch.file.content`` from ``served``
    (a function of the requested offset and length giving the reply's body and headers)."""

    def __init__(self, served: Any) -> None:
        self.served = served
        self.asked: list[int] = []

    @property
    def nc(self) -> Client:
        class Limits:
            max_payload = 1 << 20

        return Limits()  # type: ignore[return-value]

    async def call(self, subject: str, body: bytes, **call: Any) -> Msg:
        request = msgspec.json.decode(body)
        offset = request.get("offset", 0)  # 0 is the default: left out
        self.asked.append(offset)
        data, hdrs = self.served(offset, request["length"])
        return Msg(_client=None, subject="", data=data, headers=hdrs)  # type: ignore[arg-type]


def digest_of(data: bytes) -> str:
    return "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()


def server_of(data: bytes, step: int, digest: str | None = None) -> Any:
    def served(offset: int, length: int) -> tuple[bytes, dict[str, str]]:
        piece = data[offset : offset + min(step, length)]
        hdrs = {
            headers.FILE_SIZE: str(len(data)),
            headers.FILE_OFFSET: str(offset),
            headers.FILE_DIGEST: digest or digest_of(data),
        }
        return piece, hdrs

    return served


async def test_the_pieces_make_the_file() -> None:
    """The pieces are asked for in order and written whole; an empty file is one request."""
    data = bytes(range(256)) * 40
    into = io.BytesIO()
    client = Pieces(server_of(data, 3000))
    assert await read_file(client, "file-x", into) == len(data)
    assert into.getvalue() == data
    assert client.asked == [0, 3000, 6000, 9000]
    empty = Pieces(server_of(b"", 3000))
    assert await read_file(empty, "file-e", io.BytesIO()) == 0
    assert empty.asked == [0]


@pytest.mark.parametrize(
    ("served", "says"),
    [
        (server_of(b"abcdef" * 100, 64, digest=digest_of(b"other")), "do not match its digest"),
        (lambda o, n: (b"x", {headers.FILE_SIZE: "9", headers.FILE_OFFSET: "1"}), "offset 0"),
        (lambda o, n: (b"", {headers.FILE_SIZE: "9", headers.FILE_OFFSET: str(o)}), "no bytes"),
        (lambda o, n: (b"x" * 20, {headers.FILE_SIZE: "9", headers.FILE_OFFSET: "0"}), "20 bytes"),
        (lambda o, n: (b"x", {headers.FILE_OFFSET: "0"}), "without its size"),
        (
            lambda o, n: (b"xy", {headers.FILE_SIZE: str(4 + o), headers.FILE_OFFSET: str(o)}),
            "changed while it was read",
        ),
    ],
)
async def test_a_wrong_piece_raises_instead_of_returning_wrong_bytes(
    served: Any, says: str
) -> None:
    """A digest that does not match, a piece elsewhere than asked, an empty piece before the
    end, more bytes than the file, a piece without its size, a file that changes: each is a
    StreamError (never a silent wrong file, never a loop)."""
    with pytest.raises(StreamError, match=says):
        await read_file(Pieces(served), "file-x", io.BytesIO())
