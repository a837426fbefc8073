"""How a big request body should cross NATS: inline (one message, the server's max_payload
raised) or a claim check (the body put in a JetStream object store, the message naming it).

    python -m bench.payload_transport [--mib 4] [--rounds 30]

One process plays producer and broker over a real nats-server: each round sends a body of
``--mib`` MiB and gets a small reply. Reports wall time and CPU per round (this process and
nats-server) for both ways. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import ObjectStoreConfig, StorageType

from edge_runtime.embedded import EmbeddedNats

MiB = 1024 * 1024


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _inline(url: str, body: bytes, rounds: int) -> None:
    nc = await nats.connect(url)
    responder = await nats.connect(url)

    async def answer(msg: nats.aio.msg.Msg) -> None:
        await responder.publish(msg.reply, str(len(msg.data)).encode())

    await responder.subscribe("bench.inline", cb=answer)
    await responder.flush()
    for _ in range(rounds):
        reply = await nc.request("bench.inline", body, timeout=30)
        assert int(reply.data) == len(body)
    await nc.close()
    await responder.close()


async def _claim_check(url: str, body: bytes, rounds: int, storage: StorageType) -> None:
    nc = await nats.connect(url)
    responder = await nats.connect(url)
    bucket = f"bench_bodies_{storage.value}"
    store = await nc.jetstream().create_object_store(
        bucket, config=ObjectStoreConfig(storage=storage)
    )
    their_store = await responder.jetstream().object_store(bucket)

    async def answer(msg: nats.aio.msg.Msg) -> None:
        got = await their_store.get(msg.data.decode())
        assert got.data is not None
        await responder.publish(msg.reply, str(len(got.data)).encode())

    await responder.subscribe("bench.claim", cb=answer)
    await responder.flush()
    for i in range(rounds):
        name = f"body-{i}"
        await store.put(name, body)
        reply = await nc.request("bench.claim", name.encode(), timeout=30)
        assert int(reply.data) == len(body)
        await store.delete(name)
    await nc.close()
    await responder.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    body = b"x" * int(args.mib * MiB)
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(Path(tmp) / "js", port=-1)
        url = server.start()
        assert server._proc is not None
        ways = {
            "inline (one message)": lambda: _inline(url, body, args.rounds),
            "claim check, file object store": lambda: _claim_check(
                url, body, args.rounds, StorageType.FILE
            ),
            "claim check, memory object store": lambda: _claim_check(
                url, body, args.rounds, StorageType.MEMORY
            ),
        }
        print(
            f"| {args.mib:g} MiB body, {args.rounds} rounds | wall ms/round | "
            "client CPU ms/round | nats-server CPU ms/round |"
        )
        print("|---|---|---|---|")
        try:
            for name, run in ways.items():
                wall, cpu, server_cpu = (
                    time.perf_counter(),
                    time.process_time(),
                    _cpu_s(server._proc.pid),
                )
                asyncio.run(run())
                wall = (time.perf_counter() - wall) * 1000 / args.rounds
                cpu = (time.process_time() - cpu) * 1000 / args.rounds
                server_cpu = (_cpu_s(server._proc.pid) - server_cpu) * 1000 / args.rounds
                print(f"| {name} | {wall:.1f} | {cpu:.1f} | {server_cpu:.1f} |")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
