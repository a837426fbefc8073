"""A real stack for the Go and TypeScript clients' tests, which run as child processes and
steer it over NATS.

Two brokers and a worker per provider on a nats-server with JetStream of their own, and a bare
nats-server of 1 MiB messages for the protocol cases a real broker never sends (the client's
tests play the broker there). The child gets both URLs in its environment
(:data:`NATS_URL_VAR`, :data:`BARE_NATS_URL_VAR`) and asks the harness (JSON in, JSON out):

- ``harness.calls`` ``{"fake", "after"}`` → ``{"calls": n}``: the upstream calls the fake
  received, once more than ``after`` (if given);
- ``harness.lose-broker`` ``{"after": n}`` → ``{"lost": true}``: once the ``thinker`` fake
  received call n+1, the broker working on it loses its connection (a new broker takes its
  place);
- ``harness.hangups`` ``{"after"}`` → ``{"hangups": n}``: the calls whose caller hung up on
  the ``hanger`` fake, once more than ``after`` (if given).

Models: ``gpt-4o-mini`` (the mock, at once), ``slow-model`` (the mock, a word every 10
minutes), ``thinker`` (a fake upstream that thinks 3 s before it answers) and ``hanger`` (a
fake upstream that answers after 60 s, or when its caller hangs up).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from nats.aio.msg import Msg

from broker.config import Config
from broker.service import BrokerOptions, BrokerService
from tests.support.servers import EmbeddedNats
from tests.support.stack import Stack, config_from, start_stack
from tests.support.upstream import FakeOpenAI, Scripted, running_fake

__all__ = ["BARE_MAX_PAYLOAD", "BARE_NATS_URL_VAR", "NATS_URL_VAR", "Harness", "running_harness"]

NATS_URL_VAR = "EDGE_NATS_URL"
BARE_NATS_URL_VAR = "EDGE_BARE_NATS_URL"
BARE_MAX_PAYLOAD = 1024 * 1024
#: How long the thinker thinks: a broker is lost well before it answers.
THINKING_S = 3.0
#: The longest a harness request waits for what it waits for.
WAIT_S = 10.0


@dataclass
class Harness:
    """The running stack, its fakes and the bare server."""

    stack: Stack
    config: Config
    nats_url: str
    bare_url: str
    fakes: dict[str, FakeOpenAI]

    def environ(self) -> dict[str, str]:
        """What the child process is told."""
        return {NATS_URL_VAR: self.nats_url, BARE_NATS_URL_VAR: self.bare_url}

    hangups: int = 0

    async def serve(self) -> None:
        nc = self.stack.nc
        await nc.subscribe("harness.calls", cb=self._calls)
        await nc.subscribe("harness.lose-broker", cb=self._lose_broker)
        await nc.subscribe("harness.hangups", cb=self._hangups)
        await nc.flush()

    async def count_hangups(self) -> None:
        """Count the hanger's callers that hung up (its event says only that one did)."""
        hanger = self.fakes["hanger"]
        while True:
            await hanger.disconnected.wait()
            hanger.disconnected.clear()
            self.hangups += 1

    async def _answer(self, msg: Msg, body: dict[str, object]) -> None:
        await msg.respond(json.dumps(body).encode())

    async def _calls(self, msg: Msg) -> None:
        """The calls a fake received; with ``after``, once it received more than that."""
        asked = json.loads(msg.data)
        fake = self.fakes[asked["fake"]]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WAIT_S):
                while len(fake.received) <= asked.get("after", -1):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        await self._answer(msg, {"calls": len(fake.received)})

    async def _lose_broker(self, msg: Msg) -> None:
        """Once the thinker received a call after the ``after``-th, the broker working on it
        loses its connection (the call runs on at its worker); a new broker takes its place."""
        after = int(json.loads(msg.data)["after"])
        thinker = self.fakes["thinker"]
        try:
            async with asyncio.timeout(WAIT_S):
                while len(thinker.received) <= after:  # noqa: ASYNC110  (the fake has no event)
                    await asyncio.sleep(0.01)
        except TimeoutError:
            await self._answer(msg, {"lost": False, "why": "the thinker was not called"})
            return
        live = [b for b in self.stack.brokers if not b.nc.is_closed]
        working = [b for b in live if b.pipeline is not None and b.pipeline.in_flight]
        if len(working) != 1:
            await self._answer(msg, {"lost": False, "why": f"{len(working)} brokers working"})
            return
        await working[0].nc.close()
        replacement = BrokerService(self.config, BrokerOptions(nats_url=self.nats_url))
        self.stack.brokers.append(replacement)
        await replacement.start()
        await self._answer(msg, {"lost": True})

    async def _hangups(self, msg: Msg) -> None:
        after = json.loads(msg.data or b"{}").get("after", -1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WAIT_S):
                while self.hangups <= after:  # noqa: ASYNC110  (counted by count_hangups)
                    await asyncio.sleep(0.01)
        await self._answer(msg, {"hangups": self.hangups})


def _config(fakes: dict[str, FakeOpenAI]) -> Config:
    return config_from(f"""
        [cache]
        l2 = "off"
        [batch]
        poll_s = 0.1
        [providers.mock]
        kind = "mock"
        [providers.slow]
        kind = "mock"
        chunk_delay_ms = 600000
        [providers.thinker]
        kind = "openai_compatible"
        base_url = "{fakes["thinker"].base_url}"
        [providers.hanger]
        kind = "openai_compatible"
        base_url = "{fakes["hanger"].base_url}"
        [models.gpt-4o-mini]
        deployments = [{{ provider = "mock" }}]
        [models.slow-model]
        deployments = [{{ provider = "slow" }}]
        [models.thinker]
        deployments = [{{ provider = "thinker", model = "o3-deep" }}]
        [models.hanger]
        deployments = [{{ provider = "hanger", model = "hang-up" }}]
    """)


@contextlib.asynccontextmanager
async def running_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """Start the servers, the fakes and the stack, serve ``harness.*``; stop them all after."""
    server = EmbeddedNats(tmp_path / "nats", port=-1)
    bare = EmbeddedNats(tmp_path / "bare", port=-1, jetstream=False, max_payload=BARE_MAX_PAYLOAD)
    server.start()
    try:
        bare.start()
        async with running_fake() as thinker, running_fake() as hanger:
            thinker.default = Scripted(delay_s=THINKING_S)
            hanger.default = Scripted(delay_s=60.0)
            fakes = {"thinker": thinker, "hanger": hanger}
            config = _config(fakes)
            stack = await start_stack(
                server.url, config, providers=["mock", "slow", "thinker", "hanger"], brokers=2
            )
            try:
                harness = Harness(stack, config, server.url, bare.url, fakes)
                await harness.serve()
                counting = asyncio.create_task(harness.count_hangups())
                try:
                    yield harness
                finally:
                    counting.cancel()
            finally:
                await stack.stop()
    finally:
        bare.stop()
        server.stop()
