"""Put a caller's redacted values back into the answer it receives.

A tenant with ``pii = "redact"`` and ``pii_restore = true`` sends placeholders (``[EMAIL_1]``)
to providers and to the cache, and gets its own values back in the reply: the restoration
happens in the reply sink, after the cache has taken its copy, so entries still hold no PII.
Two callers whose requests differ only in redacted values share one cache entry and each
receives its own values.

Streams are restored chunk by chunk. A placeholder may arrive split over chunks (``[EMA`` then
``IL_1]``), so text that could still become a placeholder is held back until it can be decided;
what is held when the choice finishes goes out with its last chunk.
"""

from __future__ import annotations

import re

import msgspec

from broker.replies.sinks import ReplySink
from broker.request import Reply
from schemas import ChatCompletionChunk, ChunkChoice, Delta, StreamEnd

__all__ = ["RestoringSink", "TextRestorer"]

#: The tail of a text that may be the start of a placeholder (``[``, ``[EMAIL``, ``[EMAIL_``).
_OPEN_TAIL = re.compile(r"\[[A-Z0-9_]*$")


class TextRestorer:
    """Replaces placeholders with values, for whole texts and for streamed pieces.

    Args:
        values: placeholder -> original value, for one request.
    """

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self._pattern = re.compile(
            "|".join(re.escape(p) for p in sorted(values, key=len, reverse=True))
        )
        self._longest = max(map(len, values))
        self._held: dict[int, str] = {}
        #: The same replacements for text inside a JSON document (values escaped for JSON).
        self._json = {p.encode(): msgspec.json.encode(v)[1:-1] for p, v in values.items()}

    def text(self, text: str) -> str:
        """``text`` with every placeholder replaced."""
        return self._pattern.sub(lambda m: self._values[m.group()], text)

    def json(self, body: bytes) -> bytes:
        """A JSON document with every placeholder inside its strings replaced."""
        for placeholder, value in self._json.items():
            body = body.replace(placeholder, value)
        return body

    def piece(self, index: int, text: str) -> str:
        """One streamed piece of choice ``index``: restored, minus a possible placeholder start
        (kept for the next piece)."""
        text = self._held.pop(index, "") + text
        tail = _OPEN_TAIL.search(text)
        if tail is not None and len(text) - tail.start() < self._longest:
            text, self._held[index] = text[: tail.start()], text[tail.start() :]
        return self.text(text)

    def flush(self, index: int) -> str:
        """What is held for choice ``index`` (it turned out not to be a placeholder)."""
        return self._held.pop(index, "")

    def held(self) -> list[int]:
        """Choices with text held back."""
        return list(self._held)


class RestoringSink:
    """A :class:`ReplySink` that restores redacted values on the way to ``inner``."""

    def __init__(self, inner: ReplySink, values: dict[str, str]) -> None:
        self._inner = inner
        self._restorer = TextRestorer(values)
        self._last: ChatCompletionChunk | None = None

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        """A successful body restored; errors as they are."""
        if reply.status == 200:
            reply = Reply(reply.status, self._restorer.json(reply.body), reply.headers)
        await self._inner.whole(reply, meta)

    async def chunk(self, chunk: ChatCompletionChunk, meta: dict[str, str]) -> None:
        """Each choice's content restored (a new chunk: the caller's copy is left alone)."""
        restorer = self._restorer
        choices = []
        for choice in chunk.choices:
            content = choice.delta.content
            if content or choice.finish_reason:
                content = restorer.piece(choice.index, content or "")
                if choice.finish_reason:
                    content += restorer.flush(choice.index)
                delta = msgspec.structs.replace(choice.delta, content=content or None)
                choice = msgspec.structs.replace(choice, delta=delta)  # noqa: PLW2901
            choices.append(choice)
        self._last = msgspec.structs.replace(chunk, choices=choices)
        await self._inner.chunk(self._last, meta)

    async def end(self, end: StreamEnd, meta: dict[str, str]) -> None:
        """Anything still held goes out as one more chunk, then the end."""
        pending = self._restorer.held()
        if pending and self._last is not None:
            choices = [
                ChunkChoice(index=i, delta=Delta(content=self._restorer.flush(i))) for i in pending
            ]
            await self._inner.chunk(
                msgspec.structs.replace(self._last, choices=choices, usage=None), meta
            )
        await self._inner.end(end, meta)

    async def error(self, reply: Reply, meta: dict[str, str], *, streaming: bool) -> None:
        """Errors carry no completion text."""
        await self._inner.error(reply, meta, streaming=streaming)
