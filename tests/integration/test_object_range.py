"""Byte ranges of object-store objects on a real nats-server (edge_runtime.object_range)."""

from __future__ import annotations

import io
import json
import os
import uuid

import pytest
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import NotFoundError as JsNotFound

from edge_runtime.batch_store import BatchStore
from edge_runtime.object_range import ObjectGone, RangeReader
from edge_runtime.process import close_quietly, connect

CHUNK = 128 * 1024


async def test_a_direct_get_ended_early_is_continued(nats_url: str) -> None:
    """A server that ends each batched direct get after two chunks still yields every piece
    whole (the reader asks again from where the batch ended); a deleted object is ObjectGone.
    The store's stream answers no direct gets itself: a stand-in answers them from it."""
    nc = await connect(nats_url, "test-object-range")
    js = nc.jetstream()
    bucket = f"range_{uuid.uuid4().hex[:8]}"
    stream = f"OBJ_{bucket}"
    await js.add_stream(
        api.StreamConfig(
            name=stream,
            subjects=[f"$O.{bucket}.C.>", f"$O.{bucket}.M.>"],
            allow_rollup_hdrs=True,
            allow_direct=False,
        )
    )
    store = await js.object_store(bucket)
    batches: list[int] = []

    async def stand_in(msg: Msg) -> None:
        request = json.loads(msg.data)
        seq, sent = request["seq"], 0
        while sent < min(2, request["batch"]):
            try:
                found = await js.get_msg(stream, seq, subject=request["next_by_subj"], next=True)
            except JsNotFound:
                break
            assert found.seq is not None
            await nc.publish(
                msg.reply, found.data or b"", headers={"Nats-Sequence": str(found.seq)}
            )
            seq, sent = found.seq + 1, sent + 1
        batches.append(sent)
        status = "204" if sent else "404"
        await nc.publish(msg.reply, b"", headers={"Status": status})

    await nc.subscribe(f"$JS.API.DIRECT.GET.{stream}", cb=stand_in)
    try:
        data = os.urandom(9 * CHUNK + 100)
        info = await store.put("f", data)
        reader = RangeReader(nc, bucket)
        assert await reader.read(info, 0, 7 * CHUNK) == data[: 7 * CHUNK]
        assert batches == [2, 2, 2, 1]
        assert await reader.read(info, 7 * CHUNK + 5, 10 * CHUNK) == data[7 * CHUNK + 5 :]
        assert await reader.read(info, len(data), CHUNK) == b""
        await store.delete("f")
        with pytest.raises(ObjectGone):
            await reader.read(info, CHUNK, CHUNK)
    finally:
        await js.delete_stream(stream)
        await close_quietly(nc)


async def test_object_lines_span_the_stores_chunks(nats_url: str) -> None:
    """An object of many 128 KiB chunks, read in pieces smaller and larger than a chunk, yields
    every line once, in order, lines cut by a chunk boundary whole; a missing object raises."""
    nc = await connect(nats_url, "test-object-lines")
    try:
        store = await BatchStore.open(nc)
        name = f"lines-{uuid.uuid4().hex}"
        rows = [f'{{"i":{i},"pad":"{"y" * (i % 700)}"}}'.encode() for i in range(3000)]
        data = b"\n".join(rows) + b"\n"
        assert len(data) > 5 * CHUNK
        await store.put_object(name, io.BytesIO(data))
        try:
            for piece in (CHUNK // 3, 3 * CHUNK):
                assert [line async for line in store.object_lines(name, piece)] == rows
        finally:
            await store.drop_objects([name])
        with pytest.raises(JsNotFound):
            await anext(aiter(store.object_lines(name)))
    finally:
        await close_quietly(nc)
