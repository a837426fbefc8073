"""``python -m bench.file_read [MB]``: reading a batch file (50 MB by default) through a broker.

A nats-server of our limits (64 MiB messages) and one broker process; the file is stored in
the batch object store, then read back, byte-identical every time, in three ways:

- ``pieces``: the client's way, ``llm.batch.file.content`` requests by offset (the broker
  answers each with one message), at several piece sizes; the first read of a file also
  builds the broker's chunk list of it;
- ``stream``: the alternative, one request answered by a stream of messages numbered by
  ``Llm-Seq`` (served by a stand-in process reading the object store as a broker would);
- ``object store``: what clients did before, reading JetStream directly (nats-py's object
  store ``get`` into a temporary file).

Then the same ``pieces`` read on a server of NATS's default 1 MiB messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.__main__ import spawn, wait_ready
from edge_client import EdgeClient
from edge_runtime.batch_store import BatchStore
from edge_runtime.embedded import EmbeddedNats
from schemas.batch import FileObject
from schemas.jetstream import FILES_BUCKET

CONFIG = """
[cache]
enabled = false
[providers.mock]
kind = "mock"
[models.mock]
deployments = [{ provider = "mock" }]
"""
MIB = 1024 * 1024
STREAM_SUBJECT = "bench.file.stream"
#: The stand-in streams messages of this size (the broker's largest piece).
STREAM_PIECE = 4 * MIB


async def serve_stream(url: str) -> None:
    """The stand-in: answer ``{id}`` with the file as a stream of messages (``Llm-Seq``),
    reading the object store the way nats-py does (an ordered consumer)."""
    nc = await nats.connect(url)

    async def serve(msg: Msg) -> None:
        if not msg.data:  # a readiness probe
            await nc.publish(msg.reply, b"")
            return
        store = await nc.jetstream().object_store(FILES_BUCKET)
        info = await store.get_info(msg.data.decode())
        sub = await nc.jetstream().subscribe(
            f"$O.{FILES_BUCKET}.C.{info.nuid}", ordered_consumer=True
        )
        seq, buffered, pending = 0, bytearray(), info.chunks or 0
        while pending:
            chunk = await sub.next_msg(timeout=5)
            buffered += chunk.data
            pending -= 1
            if len(buffered) >= STREAM_PIECE or not pending:
                hdrs = {"Llm-Stream": "chunk", "Llm-Seq": str(seq)}
                await nc.publish(msg.reply, bytes(buffered), headers=hdrs)
                seq, buffered = seq + 1, bytearray()
        await sub.unsubscribe()
        await nc.publish(msg.reply, b"", headers={"Llm-Stream": "end", "Llm-Seq": str(seq)})

    await nc.subscribe(STREAM_SUBJECT, cb=serve)
    await asyncio.Event().wait()


async def read_stream(nc: Client, file_id: str) -> bytes:
    """The stream's client: every message in order, until ``end``."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    out, expected = io.BytesIO(), 0
    await nc.publish(STREAM_SUBJECT, file_id.encode(), reply=inbox)
    while True:
        msg = await sub.next_msg(timeout=30)
        hdrs = msg.headers or {}
        assert int(hdrs["Llm-Seq"]) == expected, "a message was lost"
        expected += 1
        if hdrs["Llm-Stream"] == "end":
            break
        out.write(msg.data)
    await sub.unsubscribe()
    return out.getvalue()


async def read_object_store(nc: Client, file_id: str) -> bytes:
    """Before: JetStream read directly (into a temporary file, as a large file would be)."""
    store = await nc.jetstream().object_store(FILES_BUCKET)
    with tempfile.TemporaryFile() as spool:
        await store.get(file_id, writeinto=spool)  # type: ignore[arg-type]
        spool.seek(0)
        return spool.read()


async def timed(name: str, read: Callable[[], Awaitable[bytes]], expected: str, size: int) -> None:
    """Best of five reads (each checked byte for byte by its digest)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        data = await read()
        best = min(best, time.perf_counter() - started)
        assert hashlib.sha256(data).hexdigest() == expected, f"{name}: wrong bytes"
    print(f"{name:<34} {best * 1000:8.0f} ms  {size / best / 1e6:6.0f} MB/s", flush=True)


async def store_file(nc: Client, size: int) -> tuple[str, str]:
    """A file of ``size`` bytes of JSON lines in the batch object store: (id, sha-256 hex)."""
    line = msgspec.json.encode({"custom_id": "x", "response": {"body": "y" * 1000}}) + b"\n"
    data = (line * (size // len(line) + 1))[:size]
    file = FileObject(id="file-bench-read", bytes=size, created_at=0, filename="b", purpose="batch")
    await (await BatchStore.open(nc)).put_file(file, data)
    return file.id, hashlib.sha256(data).hexdigest()


async def run(size: int, max_payload: int, *, alternatives: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="llm-edge-bench-file-"))
    server = EmbeddedNats(tmp / "js", port=-1, max_payload=max_payload)
    url = server.start()
    (tmp / "c.toml").write_text(CONFIG)
    procs = [spawn("llm_edge", "broker", "--nats-url", url, "--config", str(tmp / "c.toml"))]
    if alternatives:
        procs.append(spawn("bench.file_read", "--serve-stream", url))
    nc = await nats.connect(url)
    try:
        await wait_ready(nc, "llm.broker.ping")
        file_id, digest = await store_file(nc, size)
        print(f"\n{size / 1e6:.0f} MB file, server max_payload {max_payload // MIB} MiB")
        client = EdgeClient(nc)
        first = True
        for piece in (4 * MIB, 2 * MIB, 1 * MIB):
            if piece > max_payload:
                continue

            async def pieces(piece: int = piece) -> bytes:
                out = io.BytesIO()
                await client.batches.download(file_id, out, piece_bytes=piece)
                return out.getvalue()

            if first:  # the broker lists the file's chunks on its first read
                started = time.perf_counter()
                await pieces()
                took_ms = (time.perf_counter() - started) * 1000
                print(f"{'pieces, first read':<34} {took_ms:8.0f} ms")
                first = False
            await timed(f"pieces of {piece // MIB} MiB", pieces, digest, size)
        if alternatives:
            await wait_ready(nc, STREAM_SUBJECT)
            await timed("stream of 4 MiB messages", lambda: read_stream(nc, file_id), digest, size)
            await timed(
                "object store, directly", lambda: read_object_store(nc, file_id), digest, size
            )
    finally:
        await nc.close()
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        server.stop()


def main() -> None:
    if sys.argv[1:2] == ["--serve-stream"]:
        asyncio.run(serve_stream(sys.argv[2]))
        return
    size = int(float(sys.argv[1]) * 1e6) if len(sys.argv) > 1 else 50_000_000
    print(f"cpus: {os.cpu_count()}")
    asyncio.run(run(size, 64 * MIB, alternatives=True))
    asyncio.run(run(size, MIB, alternatives=False))


if __name__ == "__main__":
    main()
