"""Anthropic streams added up to their message, and stored messages streamed again."""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from broker.replies.message_stream import MessageAssembler, replay_events
from broker.request import Piece
from tests.support.anthropic_shapes import RICH_MESSAGE, SIGNATURE, rich_stream


def pieces(events: list[tuple[str, dict[str, Any]]]) -> list[Piece]:
    return [Piece(msgspec.json.encode(data), name) for name, data in events]


def assembled(events: list[Piece]) -> MessageAssembler:
    assembler = MessageAssembler()
    for piece in events:
        assembler.feed(piece)
    return assembler


def test_a_stream_adds_up_to_its_message() -> None:
    """Thinking and its signature, a block that came whole, text, tool input JSON in pieces,
    the final stop reason and usage (message_delta's totals over message_start's)."""
    message = assembled(pieces(rich_stream())).message()
    assert message is not None
    assert message["content"] == [
        {"type": "thinking", "thinking": "Let me think about Paris.", "signature": SIGNATURE},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
        {"type": "text", "text": "Checking the weather 🌤."},
        {
            "type": "tool_use",
            "id": "toolu_01T1x",
            "name": "get_weather",
            "input": {"location": "Paris", "unit": "celsius"},
        },
    ]
    assert (message["stop_reason"], message["stop_sequence"]) == ("tool_use", None)
    assert message["usage"] == {
        "input_tokens": 472,
        "output_tokens": 89,
        "cache_read_input_tokens": 4096,
    }


def test_a_stored_message_streams_again_into_the_same_message() -> None:
    """Every block kind survives a replay, cut where the original stream cut its texts."""
    original = assembled(pieces(rich_stream()))
    body = msgspec.json.encode(original.message())
    replayed = replay_events(body, original.splits())
    again = assembled(replayed)
    assert again.message() == original.message()
    texts = [
        msgspec.json.decode(p.data)["delta"].get("text")
        for p in replayed
        if p.event == "content_block_delta"
    ]
    assert [t for t in texts if t] == ["Checking the ", "weather 🌤."]
    whole = replay_events(msgspec.json.encode(RICH_MESSAGE))
    assert assembled(whole).message() == RICH_MESSAGE  # citations and server tools too
    names = [p.event for p in whole]
    assert (names[0], names[-2:]) == ("message_start", ["message_delta", "message_stop"])


def test_a_stream_with_an_unknown_event_or_delta_is_not_rebuilt() -> None:
    """What the assembler does not know, it does not guess: no message (so nothing stored)."""
    for changed in ("event", "delta"):
        events = copy.deepcopy(rich_stream())
        if changed == "event":
            events.insert(3, ("compaction_notice", {"type": "compaction_notice"}))
        else:
            events[3][1]["delta"] = {"type": "sparkle_delta", "sparkle": "*"}
        assembler = assembled(pieces(events))
        assert assembler.message() is None
        assert assembler.partial()["usage"]["output_tokens"] == 89
    broken = assembled([Piece(b"{not json", "content_block_delta")])
    assert broken.message() is None
