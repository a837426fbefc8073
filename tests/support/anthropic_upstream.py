"""A fake Anthropic upstream: a real HTTP server on loopback speaking the Messages API's
documented wire format (``POST /v1/messages``, whole and streamed, and
``POST /v1/messages/count_tokens``), checking what Anthropic checks first (an ``x-api-key``,
an ``anthropic-version``, ``max_tokens`` on a message request) and recording every request as
it arrived (raw bytes and headers). Tests script its answers.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from tests.support.anthropic_shapes import RICH_MESSAGE, rich_stream, sse_pieces
from tests.support.scripted_upstream import Answer, Sent, scripted_upstream

__all__ = ["FakeAnthropic", "anthropic_error", "running_fake_anthropic"]


def anthropic_error(status: int, kind: str, message: str) -> Answer:
    """An error response as Anthropic sends it."""
    return Answer(status, json={"type": "error", "error": {"type": kind, "message": message}})


class FakeAnthropic:
    """The server's behaviour; :func:`running_fake_anthropic` serves it.

    Attributes:
        received: every request, in order.
        script: answers to give before the default ones (a whole :class:`Answer` each).
        base_url: ``http://127.0.0.1:<port>/v1`` once running.
    """

    def __init__(self) -> None:
        self.received: list[Sent] = []
        self.script: deque[Answer] = deque()
        self.base_url = ""

    @staticmethod
    def _refused(sent: Sent) -> Answer | None:
        """What Anthropic refuses before it reads the body."""
        if not sent.headers.get("x-api-key"):
            return anthropic_error(401, "authentication_error", "x-api-key header is required")
        if not sent.headers.get("anthropic-version"):
            return anthropic_error(400, "invalid_request_error", "anthropic-version: required")
        if sent.path_qs not in {"/v1/messages", "/v1/messages/count_tokens"}:
            return anthropic_error(404, "not_found_error", f"no route {sent.path_qs}")
        return None

    def messages_received(self) -> list[Sent]:
        """The requests to ``/v1/messages``."""
        return [r for r in self.received if r.path_qs == "/v1/messages"]

    def handle(self, sent: Sent) -> Answer:
        self.received.append(sent)
        refused = self._refused(sent)
        if refused is not None:
            return refused
        if self.script:
            return self.script.popleft()
        body: dict[str, Any] = sent.json()
        if sent.path_qs == "/v1/messages/count_tokens":
            return Answer(json={"input_tokens": 1234 + len(sent.content) % 7})
        if "max_tokens" not in body:
            return anthropic_error(400, "invalid_request_error", "max_tokens: Field required")
        if body.get("stream"):
            return Answer(pieces=sse_pieces(rich_stream(body["model"])))
        return Answer(json={**RICH_MESSAGE, "model": body["model"]})


@contextlib.asynccontextmanager
async def running_fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    """A fake Anthropic on a free port, started and always stopped."""
    fake = FakeAnthropic()
    async with scripted_upstream(fake.handle) as base:
        fake.base_url = base + "/v1"
        yield fake
