"""The fake OpenAI upstream of the tests, as a process: ``python -m bench.fake_upstream PORT``."""

from __future__ import annotations

import asyncio
import sys

from edge_runtime.process import run_until_stopped
from tests.support.upstream import FakeOpenAI


async def main(port: int) -> None:
    server = FakeOpenAI(port=port)
    await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    run_until_stopped(main(int(sys.argv[1])))  # uvloop, like the services it is compared with
