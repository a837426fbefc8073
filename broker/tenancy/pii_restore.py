"""Put a caller's redacted values back into the answer it receives.

A tenant with ``pii = "redact"`` and ``pii_restore = true`` sends placeholders (``[EMAIL_1]``)
to providers and to the cache, and gets its own values back in the reply: the restoration
happens in the reply sink, after the cache has taken its copy, so entries still hold no PII.
Two callers whose requests differ only in redacted values share one cache entry and each
receives its own values.

Streams are restored piece by piece: a chat chunk's content, an Anthropic ``text_delta``. A
placeholder may arrive split over pieces (``[EMA`` then ``IL_1]``), so text that could still
become a placeholder is held back until it can be decided; what is held when the choice
finishes (or the Anthropic content block stops) goes out with its last piece.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from broker.replies.sinks import ReplySink
from broker.request import Piece, Reply
from schemas import StreamEnd

__all__ = ["RestoringSink", "TextRestorer"]

_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()

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
    """A :class:`ReplySink` that restores redacted values on the way to ``inner``.

    A streamed piece is decoded as plain JSON and encoded again after its text is restored,
    so every other field of it reaches the caller as it came.
    """

    def __init__(self, inner: ReplySink, values: dict[str, str]) -> None:
        self._inner = inner
        self._restorer = TextRestorer(values)
        self._last: dict[str, Any] | None = None

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        """A successful body restored; errors as they are."""
        if reply.status == 200:
            reply = Reply(reply.status, self._restorer.json(reply.body), reply.headers)
        await self._inner.whole(reply, meta)

    async def chunk(self, piece: Piece, meta: dict[str, str]) -> None:
        """The piece with its text restored (the caller's copy is left alone)."""
        if piece.event:
            for out in self._event(piece):
                await self._inner.chunk(out, meta)
            return
        chunk = _decoder.decode(piece.data)
        restorer = self._restorer
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content, finish = delta.get("content"), choice.get("finish_reason")
            if content or finish:
                index = int(choice.get("index", 0))
                text = restorer.piece(index, content or "")
                if finish:
                    text += restorer.flush(index)
                if text:
                    delta["content"] = text
                else:
                    delta.pop("content", None)
                choice["delta"] = delta
        self._last = chunk
        await self._inner.chunk(Piece(_encoder.encode(chunk)), meta)

    def _event(self, piece: Piece) -> list[Piece]:
        """An Anthropic event restored: a ``text_delta`` (less what may start a placeholder),
        and before a block's ``content_block_stop`` the text still held for it."""
        event = _decoder.decode(piece.data)
        index = int(event.get("index", 0))
        if piece.event == "content_block_stop":
            held = self._restorer.flush(index)
            if not held:
                return [piece]
            delta = {"type": "text_delta", "text": held}
            extra = {"type": "content_block_delta", "index": index, "delta": delta}
            return [Piece(_encoder.encode(extra), "content_block_delta"), piece]
        delta = event.get("delta") or {}
        if piece.event != "content_block_delta" or delta.get("type") != "text_delta":
            return [piece]
        delta["text"] = self._restorer.piece(index, str(delta.get("text", "")))
        return [Piece(_encoder.encode(event), piece.event)] if delta["text"] else []

    async def end(self, end: StreamEnd, meta: dict[str, str]) -> None:
        """Anything still held goes out as one more chunk, then the end."""
        pending = self._restorer.held()
        if pending and self._last is not None:
            choices = [
                {"index": i, "delta": {"content": self._restorer.flush(i)}, "finish_reason": None}
                for i in pending
            ]
            last = {**self._last, "choices": choices, "usage": None}
            await self._inner.chunk(Piece(_encoder.encode(last)), meta)
        await self._inner.end(end, meta)

    async def error(self, reply: Reply, meta: dict[str, str], *, streaming: bool) -> None:
        """Errors carry no completion text."""
        await self._inner.error(reply, meta, streaming=streaming)
