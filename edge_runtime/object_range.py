"""Byte ranges of objects in a JetStream object store, read without what comes before them.

An object is a sequence of chunk messages on ``$O.<bucket>.C.<nuid>`` (128 KiB each as
nats-py writes them), in order but not at consecutive stream sequences: the chunks of objects
written at the same time interleave. :class:`RangeReader` lists where each chunk is and how
large it is from a headers-only consumer (no payload crosses the wire), once per object
version (its nuid changes when an object is written again), and keeps the lists of recent
objects. A range is then one batched direct get of the chunks it spans (nats-server 2.11,
the version the project requires), starting at the chunk where it begins: reading a piece in
the middle of a 500 MB object costs what reading the piece costs, not what reading up to it
would.
"""

from __future__ import annotations

import asyncio
import bisect
import json
from collections import OrderedDict
from dataclasses import dataclass

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.js import api

__all__ = ["INDEXES_KEPT", "ChunkIndex", "ObjectGone", "ObjectReadError", "RangeReader"]

#: Chunk lists kept per reader (a 500 MB object's is about 4,000 pairs of integers).
INDEXES_KEPT = 64
#: The longest wait for one message of JetStream while a range or an index is read.
READ_TIMEOUT_S = 5.0


class ObjectReadError(Exception):
    """JetStream answered a read of an object's chunks with an error."""


class ObjectGone(ObjectReadError):
    """The object's chunks are not (or no longer) all in the store: it was deleted meanwhile."""


@dataclass(frozen=True, slots=True)
class ChunkIndex:
    """Where an object's chunks are: their stream sequences and the offset each begins at."""

    sequences: tuple[int, ...]
    starts: tuple[int, ...]
    size: int

    def chunk_at(self, offset: int) -> int:
        """The chunk holding byte ``offset`` (``0 <= offset < size``)."""
        return bisect.bisect_right(self.starts, offset) - 1

    def piece_end(self, offset: int, limit: int) -> int:
        """Where a piece of at most ``limit`` bytes from ``offset`` ends: at a chunk boundary
        when it spans more than one chunk, so that a reader going piece by piece fetches each
        chunk once."""
        end = min(offset + limit, self.size)
        if end < self.size:
            boundary = self.starts[self.chunk_at(end)]
            if boundary > offset:
                end = boundary
        return end


class RangeReader:
    """Reads byte ranges of one object store's objects.

    Args:
        nc: a connection allowed to read the store's stream (``$JS.API.>``).
        bucket: the object store.
    """

    def __init__(self, nc: Client, bucket: str) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._bucket = bucket
        self._stream = f"OBJ_{bucket}"
        self._indexes: OrderedDict[str, ChunkIndex] = OrderedDict()
        self._building: dict[str, asyncio.Future[ChunkIndex]] = {}

    def _chunks(self, info: api.ObjectInfo) -> str:
        return f"$O.{self._bucket}.C.{info.nuid}"

    async def read(self, info: api.ObjectInfo, offset: int, limit: int) -> bytes:
        """At most ``limit`` bytes of the object from ``offset`` (see
        :meth:`ChunkIndex.piece_end`); nothing at or past its end.

        Raises:
            ObjectGone: the object was deleted while it was read.
            ObjectReadError: JetStream refused the read.
            nats.errors.TimeoutError, nats.errors.NoRespondersError: JetStream did not answer.
        """
        size = info.size or 0
        if offset >= size or limit <= 0:
            return b""
        index = await self.index(info)
        end = index.piece_end(offset, limit)
        first, last = index.chunk_at(offset), index.chunk_at(end - 1)
        chunks = await self._fetch(self._chunks(info), index.sequences[first : last + 1])
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        skip = offset - index.starts[first]
        return data if skip == 0 and len(data) == end - offset else data[skip : skip + end - offset]

    async def index(self, info: api.ObjectInfo) -> ChunkIndex:
        """The object's chunk list (built once per version; concurrent callers share it)."""
        nuid = info.nuid or ""
        if (known := self._indexes.get(nuid)) is not None:
            self._indexes.move_to_end(nuid)
            return known
        if (pending := self._building.get(nuid)) is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ChunkIndex] = asyncio.get_running_loop().create_future()
        self._building[nuid] = future
        try:
            built = await self._build(info)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            del self._building[nuid]
        future.set_result(built)
        self._indexes[nuid] = built
        while len(self._indexes) > INDEXES_KEPT:
            self._indexes.popitem(last=False)
        return built

    async def _build(self, info: api.ObjectInfo) -> ChunkIndex:
        """Each chunk's sequence and size from a headers-only ordered consumer."""
        wanted = info.chunks or 0
        sequences: list[int] = []
        starts: list[int] = []
        at = 0
        config = api.ConsumerConfig(headers_only=True)
        sub = await self._js.subscribe(
            self._chunks(info), stream=self._stream, ordered_consumer=True, config=config
        )
        try:
            while len(sequences) < wanted:
                msg = await sub.next_msg(timeout=READ_TIMEOUT_S)
                sequences.append(msg.metadata.sequence.stream)
                starts.append(at)
                at += int((msg.headers or {}).get("Nats-Msg-Size", "0"))
                if msg.metadata.num_pending == 0 and len(sequences) < wanted:
                    raise ObjectGone(f"{info.name}: {len(sequences)} of {wanted} chunks")
        finally:
            await sub.unsubscribe()
        if at != (info.size or 0):
            raise ObjectGone(f"{info.name}: its chunks hold {at} bytes, not {info.size}")
        return ChunkIndex(tuple(sequences), tuple(starts), at)

    async def _fetch(self, subject: str, sequences: tuple[int, ...]) -> list[bytes]:
        """The chunks at ``sequences`` (consecutive chunks of one object), in batched direct
        gets: one, unless the server ends a batch early (then the rest from where it ended)."""
        chunks: list[bytes] = []
        while len(chunks) < len(sequences):
            got = await self._direct_get(
                subject, sequences[len(chunks)], len(sequences) - len(chunks)
            )
            if not got:
                raise ObjectGone(f"{subject}: no chunk at sequence {sequences[len(chunks)]}")
            chunks += got
        return chunks

    async def _direct_get(self, subject: str, sequence: int, count: int) -> list[bytes]:
        """Up to ``count`` messages on ``subject`` from stream sequence ``sequence`` on, in one
        batched direct get (its messages, then an end-of-batch status)."""
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        request = {"seq": sequence, "next_by_subj": subject, "batch": count}
        chunks: list[bytes] = []
        try:
            await self._nc.publish(
                f"$JS.API.DIRECT.GET.{self._stream}", json.dumps(request).encode(), reply=inbox
            )
            while True:
                msg = await sub.next_msg(timeout=READ_TIMEOUT_S)
                status = (msg.headers or {}).get("Status")
                if status is None:
                    chunks.append(msg.data)
                elif status in {"204", "404"}:  # end of the batch; no (more) message
                    break
                elif status == "503":
                    raise NoRespondersError
                else:
                    raise ObjectReadError(f"{subject}: direct get answered {status}")
        finally:
            await sub.unsubscribe()
        return chunks[:count]
