"""Permission violations a real nats-server reports to a connection, waited for as events."""

from __future__ import annotations

import asyncio

import msgspec
from nats.aio.client import Client

__all__ = ["CHAT", "Violations"]

#: A chat completion request any broker of the tests' configurations serves.
CHAT = msgspec.json.encode({"model": "mock", "messages": [{"role": "user", "content": "hi"}]})


class Violations:
    """Permission errors the server reports (asynchronously) to one connection."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._changed = asyncio.Event()

    async def on_error(self, exc: Exception) -> None:
        self.seen.append(str(exc))
        self._changed.set()

    async def refused(self, client: Client, subject: str) -> None:
        """A request to ``subject`` goes unanswered: the server reports the violation, and by
        then no answer (not even a no-responders one) has come; the publish reached no one."""
        request = asyncio.ensure_future(client.request(subject, CHAT, timeout=10))
        try:
            await self.wait_for(subject)
            assert not request.done(), request
        finally:
            request.cancel()

    async def wait_for(self, subject: str) -> None:
        """Until a violation naming ``subject`` has been reported (5 s at most)."""
        async with asyncio.timeout(5):
            while not any(subject.lower() in v.lower() for v in self.seen):  # nats-py lowercases
                self._changed.clear()
                await self._changed.wait()
