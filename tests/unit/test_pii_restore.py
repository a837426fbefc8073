"""Restoring redacted values in replies: whole bodies, and streams split anywhere."""

from __future__ import annotations

import msgspec
import pytest

from broker.request import Piece, Reply
from broker.tenancy.pii_restore import RestoringSink, TextRestorer
from schemas import ChatCompletionChunk, ChunkChoice, Delta, StreamEnd

VALUES = {"[EMAIL_1]": "jane@example.com", "[PRIVATE_KEY_1]": 'line "one"\nline two'}


def test_whole_body_values_are_escaped_for_json() -> None:
    """A value with quotes and a newline lands in the JSON body as valid, exact text."""
    body = msgspec.json.encode({"content": "mail [EMAIL_1], key [PRIVATE_KEY_1]; [EMAIL_2]"})
    restored = msgspec.json.decode(TextRestorer(VALUES).json(body))
    assert restored["content"] == (
        'mail jane@example.com, key line "one"\nline two; [EMAIL_2]'  # unknown ones stay
    )


@pytest.mark.parametrize("cut", range(1, 31))
def test_stream_pieces_split_anywhere(cut: int) -> None:
    """However the stream is cut, the pieces add up to the restored text."""
    text = "to [EMAIL_1] or [EMAIL_1]. [x] [NOT_A_PLACEHOLDER] ["
    restorer = TextRestorer(VALUES)
    pieces = [text[i : i + cut] for i in range(0, len(text), cut)]
    out = "".join(restorer.piece(0, p) for p in pieces) + restorer.flush(0)
    assert out == restorer.text(text)
    assert out == "to jane@example.com or jane@example.com. [x] [NOT_A_PLACEHOLDER] ["


class Collect:
    """A sink that keeps what it is given."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.ended = False
        self.whole_body = b""

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        self.whole_body = reply.body

    async def chunk(self, piece: Piece, meta: dict[str, str]) -> None:
        if piece.event:  # an Anthropic event: its text delta
            delta = msgspec.json.decode(piece.data).get("delta") or {}
            self.texts.append(delta.get("text", ""))
            return
        chunk = msgspec.json.decode(piece.data, type=ChatCompletionChunk)
        self.texts += [c.delta.content or "" for c in chunk.choices]

    async def end(self, end: StreamEnd, meta: dict[str, str]) -> None:
        self.ended = True

    async def error(self, reply: Reply, meta: dict[str, str], *, streaming: bool) -> None:
        raise AssertionError("no error expected")


def chunk(content: str | None, finish: str | None = None) -> Piece:
    return Piece(
        msgspec.json.encode(
            ChatCompletionChunk(
                id="c",
                created=1,
                model="m",
                choices=[ChunkChoice(0, Delta(content=content), finish)],
            )
        )
    )


async def test_sink_restores_a_placeholder_split_over_chunks_and_leaves_the_original() -> None:
    """``[EMA`` + ``IL_1]`` reaches the caller as the address; the pipeline's own chunk (which
    the cache assembles) keeps the placeholder."""
    inner = Collect()
    sink = RestoringSink(inner, VALUES)
    first = chunk("write to [EMA")
    await sink.chunk(first, {})
    await sink.chunk(chunk("IL_1] today"), {})
    await sink.chunk(chunk(" ["), {})  # held: could start a placeholder
    await sink.end(StreamEnd(), {})
    assert "".join(inner.texts) == "write to jane@example.com today ["
    assert inner.ended
    assert msgspec.json.decode(first.data)["choices"][0]["delta"]["content"] == "write to [EMA"


async def test_sink_flushes_held_text_with_the_finishing_chunk() -> None:
    inner = Collect()
    sink = RestoringSink(inner, VALUES)
    await sink.chunk(chunk("see [EMAIL_"), {})
    await sink.chunk(chunk(None, "stop"), {})
    assert "".join(inner.texts) == "see [EMAIL_"


def event(kind: str, **fields: object) -> Piece:
    return Piece(msgspec.json.encode({"type": kind, **fields}), kind)


def text_delta(text: str) -> Piece:
    return event("content_block_delta", index=0, delta={"type": "text_delta", "text": text})


async def test_sink_restores_anthropic_text_deltas_and_flushes_before_the_block_stops() -> None:
    """An Anthropic stream gets its values back across ``text_delta`` events; text held at
    the block's end goes out as one more delta before ``content_block_stop``."""
    inner = Collect()
    sink = RestoringSink(inner, VALUES)
    start = event("content_block_start", index=0, content_block={"type": "text", "text": ""})
    await sink.chunk(start, {})
    await sink.chunk(text_delta("mail [EMA"), {})
    await sink.chunk(text_delta("IL_1] or ["), {})
    await sink.chunk(event("content_block_stop", index=0), {})
    assert "".join(inner.texts) == "mail jane@example.com or ["
    assert inner.texts[-1] == ""  # the stop event came last, after the flushed "["
    assert inner.texts[-2] == "["
