"""Chunks to completion and back."""

from __future__ import annotations

import msgspec

from broker.cache.response import CachedReply
from broker.replies.assemble import StreamAssembler, replay_chunks
from schemas import ChatCompletionChunk, ChunkChoice, Delta, Usage


def chunk(
    delta: Delta, finish: str | None = None, usage: Usage | None = None, choices: bool = True
) -> ChatCompletionChunk:
    parts = [ChunkChoice(index=0, delta=delta, finish_reason=finish)] if choices else []
    return ChatCompletionChunk("c1", 1, "m", parts, usage=usage)


def test_text_and_tool_call_deltas_assemble() -> None:
    """Content pieces join; tool-call name/argument fragments merge by index; usage is kept."""
    asm = StreamAssembler()
    asm.feed(chunk(Delta(role="assistant", content="")))
    asm.feed(chunk(Delta(content="Hel")))
    asm.feed(chunk(Delta(content="lo")))
    asm.feed(
        chunk(
            Delta(
                tool_calls=[
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            )
        )
    )
    asm.feed(chunk(Delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city":'}}])))
    asm.feed(chunk(Delta(tool_calls=[{"index": 0, "function": {"arguments": '"Oslo"}'}}])))
    asm.feed(chunk(Delta(), "tool_calls"))
    asm.feed(chunk(Delta(), usage=Usage(3, 4, 7), choices=False))
    done = asm.completion()
    message = done.choices[0].message
    assert message.content == "Hello"
    assert message.tool_calls is not None
    assert message.tool_calls[0].function.name == "get_weather"
    assert message.tool_calls[0].function.arguments == '{"city":"Oslo"}'
    assert done.choices[0].finish_reason == "tool_calls"
    assert done.usage == Usage(3, 4, 7)


def test_replay_round_trips() -> None:
    """Replaying a completion as chunks and assembling them gives the same completion."""
    asm = StreamAssembler()
    for c in [
        chunk(Delta(role="assistant", content="Hi there")),
        chunk(Delta(), "stop"),
        chunk(Delta(), usage=Usage(1, 2, 3), choices=False),
    ]:
        asm.feed(c)
    original = asm.completion()
    replayed = replay_chunks(original, include_usage=True)
    assert replayed[-1].choices == []
    assert replayed[-1].usage == Usage(1, 2, 3)
    again = StreamAssembler()
    for c in replayed:
        again.feed(c)
    assert again.completion() == original
    assert all(c.usage is None for c in replay_chunks(original, include_usage=False))


def test_an_entry_stored_before_boundaries_replays_as_one_chunk() -> None:
    """A cache entry written without chunk boundaries (three fields) still decodes and replays
    its content as one chunk; boundaries that do not fit the content are ignored the same way."""
    old = msgspec.msgpack.encode([b'{"id":"c1"}', "mock", "mock@mock"])
    entry = msgspec.msgpack.decode(old, type=CachedReply)
    assert entry.splits is None
    asm = StreamAssembler()
    for piece in ["Hi ", "there"]:
        asm.feed(chunk(Delta(content=piece)))
    asm.feed(chunk(Delta(), "stop"))
    completion = asm.completion()
    assert asm.splits() == [[3, 5]]
    for splits in (None, [[4, 5]]):
        replay = replay_chunks(completion, include_usage=False, splits=splits)
        assert [c.choices[0].delta.content for c in replay] == ["Hi there", None]
    cut = replay_chunks(completion, include_usage=False, splits=asm.splits())
    assert [c.choices[0].delta.content for c in cut] == ["Hi ", "there", None]
