"""Anthropic Messages API bodies and streams as its documentation shows them."""

from __future__ import annotations

import json
from typing import Any

MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "content": [{"type": "text", "text": "Hello! How can I help?"}],
    "model": "claude-sonnet-4-5-20250929",
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "output_tokens": 6,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    },
}

TOOL_MESSAGE = {
    **MESSAGE,
    "content": [
        {"type": "text", "text": "Let me check."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA"},
        },
    ],
    "stop_reason": "tool_use",
}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def stream_events(text_parts: list[str], tool: bool = False) -> list[bytes]:
    """A documented stream: message_start, ping, text block, optional tool block, ends."""
    out = [
        sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    **MESSAGE,
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": 25, "output_tokens": 1},
                },
            },
        ),
        sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        sse("ping", {"type": "ping"}),
    ]
    out += [
        sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
        )
        for p in text_parts
    ]
    out.append(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    if tool:
        out += [
            sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {},
                    },
                },
            ),
            sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": '{"location": "San'},
                },
            ),
            sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": ' Francisco"}'},
                },
            ),
            sse("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ]
    out += [
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if tool else "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 15},
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]
    return out


SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"

#: A message with every kind of content block a response carries: thinking with its
#: signature, redacted thinking, a server tool's use and result, text with a citation, and a
#: client tool's use; usage with cache reads and writes and server tool use.
RICH_MESSAGE: dict[str, Any] = {
    "id": "msg_01RichRichRichRichRichRi",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "The user wants the weather.", "signature": SIGNATURE},
        {
            "type": "redacted_thinking",
            "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE",
        },
        {
            "type": "server_tool_use",
            "id": "srvtoolu_014hJH82Qum7Td6UZxyzvfGx",
            "name": "web_search",
            "input": {"query": "weather Paris"},
        },
        {
            "type": "web_search_tool_result",
            "tool_use_id": "srvtoolu_014hJH82Qum7Td6UZxyzvfGx",
            "content": [
                {
                    "type": "web_search_result",
                    "title": "Paris weather",
                    "url": "https://weather.example/paris",
                    "encrypted_content": "EqgfCioIARgBIiQ3YTAwMjY1Mi1mZjM5",
                    "page_age": "April 30, 2025",
                }
            ],
        },
        {
            "type": "text",
            "text": "It is sunny in Paris.",
            "citations": [
                {
                    "type": "web_search_result_location",
                    "url": "https://weather.example/paris",
                    "title": "Paris weather",
                    "encrypted_index": "Eo8BCioIAhgBIiQyYjQ0OWJmZi1lNm",
                    "cited_text": "Sunny, 24 C",
                }
            ],
        },
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "Paris", "unit": "celsius"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 2095,
        "output_tokens": 503,
        "cache_creation_input_tokens": 1024,
        "cache_read_input_tokens": 4096,
        "server_tool_use": {"web_search_requests": 1},
        "service_tier": "standard",
    },
}


def rich_stream(model: str = "claude-sonnet-4-5-20250929") -> list[tuple[str, dict[str, Any]]]:
    """A documented stream with every event type and delta: ``ping``, ``thinking_delta`` and
    ``signature_delta``, ``text_delta``, ``input_json_delta`` in several pieces, a block that
    arrives whole (redacted thinking), and ``message_delta`` with the final usage."""
    start = {
        **RICH_MESSAGE,
        "model": model,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 472, "output_tokens": 2, "cache_read_input_tokens": 4096},
    }

    def delta(index: int, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return (
            "content_block_delta",
            {"type": "content_block_delta", "index": index, "delta": body},
        )

    def block(index: int, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": body},
        )

    def stop(index: int) -> tuple[str, dict[str, Any]]:
        return ("content_block_stop", {"type": "content_block_stop", "index": index})

    return [
        ("message_start", {"type": "message_start", "message": start}),
        block(0, {"type": "thinking", "thinking": "", "signature": ""}),
        ("ping", {"type": "ping"}),
        delta(0, {"type": "thinking_delta", "thinking": "Let me think "}),
        delta(0, {"type": "thinking_delta", "thinking": "about Paris."}),
        delta(0, {"type": "signature_delta", "signature": SIGNATURE}),
        stop(0),
        block(1, {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}),
        stop(1),
        block(2, {"type": "text", "text": ""}),
        delta(2, {"type": "text_delta", "text": "Checking the "}),
        delta(2, {"type": "text_delta", "text": "weather 🌤."}),
        stop(2),
        block(3, {"type": "tool_use", "id": "toolu_01T1x", "name": "get_weather", "input": {}}),
        delta(3, {"type": "input_json_delta", "partial_json": ""}),
        delta(3, {"type": "input_json_delta", "partial_json": '{"location": "Pa'}),
        delta(3, {"type": "input_json_delta", "partial_json": 'ris", "unit": "celsius"}'}),
        stop(3),
        ("ping", {"type": "ping"}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 89, "cache_read_input_tokens": 4096},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def sse_pieces(events: list[tuple[str, dict[str, Any]]]) -> list[bytes]:
    """The events as SSE, one write each."""
    return [sse(name, data) for name, data in events]
