"""The baseline: a raw nats-py responder that echoes each request (no decoding, no headers)."""

from __future__ import annotations

import asyncio
import sys

import nats


async def main(url: str, subject: str) -> None:
    nc = await nats.connect(url)

    async def echo(msg: nats.aio.msg.Msg) -> None:
        await nc.publish(msg.reply, msg.data)

    await nc.subscribe(subject, cb=echo)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
