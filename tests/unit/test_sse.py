"""SSE framing edge cases, fed byte by byte and in odd splits."""

from __future__ import annotations

import pytest

from workers.sse import SSEParser

STREAM = (
    b": keep-alive comment\r\n\r\n"
    b'event: message_start\r\ndata: {"a":1}\r\n\r\n'
    b"data: line one\ndata: line two\n\n"
    b"data: caf\xc3\xa9 \xf0\x9f\x98\x80\r\r"
    b"id: 7\ndata: [DONE]\n\n"
)
EXPECTED = [
    ("message_start", '{"a":1}'),
    ("message", "line one\nline two"),
    ("message", "café 😀"),
    ("message", "[DONE]"),
]


def events(pieces: list[bytes]) -> list[tuple[str, str]]:
    parser = SSEParser()
    return [(e.event, e.data) for piece in pieces for e in parser.feed(piece)]


def test_whole_stream() -> None:
    """Comments skipped, event names kept, multi-line data joined, CR/LF/CRLF all end lines."""
    assert events([STREAM]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13])
def test_any_split_gives_the_same_events(size: int) -> None:
    """Events split across reads, CRLF split between reads, UTF-8 characters cut in two."""
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert events(pieces) == EXPECTED
