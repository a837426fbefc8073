"""Large streamed chunks cut into consecutive bounded ones (:mod:`workers.split`), and the
worker's stream that sends them: in order, bounded, and always ending with ``end`` or
``error``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import pytest
from nats.aio.client import Client

from schemas import ChatCompletionChunk, ChunkChoice, Delta, Usage, decode_chat_request, headers
from workers.base import Provider, ProviderRequest
from workers.runner import WorkerService
from workers.split import MAX_DELTA_BYTES, split_chunk

LIMIT = 64  # bytes: small pieces keep the cases readable
TEXT = "".join(f"{i:04d}é€😀\n" for i in range(100))  # 1, 2, 3 and 4-byte characters


def chunk(
    delta: Delta, finish: str | None = None, usage: Usage | None = None
) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        "chatcmpl-1",
        1741569952,
        "gpt-4o-mini",
        [ChunkChoice(0, delta, finish)],
        usage=usage,
        system_fingerprint="fp_1",
    )


def joined(pieces: list[ChatCompletionChunk]) -> dict[str, Any]:
    """What an OpenAI client makes of a stream: texts joined per field, tool calls per index."""
    content, refusal = "", ""
    calls: dict[int, dict[str, Any]] = {}
    for piece in pieces:
        for choice in piece.choices:
            content += choice.delta.content or ""
            refusal += choice.delta.refusal or ""
            for call in choice.delta.tool_calls or ():
                known = calls.setdefault(call["index"], {"id": None, "name": None, "arguments": ""})
                known["id"] = call.get("id") or known["id"]
                known["name"] = call.get("function", {}).get("name") or known["name"]
                known["arguments"] += call.get("function", {}).get("arguments", "")
    return {"content": content, "refusal": refusal, "calls": calls}


def text_bytes(piece: ChatCompletionChunk) -> int:
    texts = [joined([piece])["content"], joined([piece])["refusal"]]
    texts += [call["arguments"] for call in joined([piece])["calls"].values()]
    return sum(len(text.encode()) for text in texts)


def test_a_chunk_that_fits_is_sent_as_it_is() -> None:
    """Text under the bound: the same chunk object, not a copy."""
    small = chunk(Delta(content="hello"))
    assert split_chunk(small) == [small]
    assert split_chunk(small)[0] is small


def test_large_content_is_cut_between_characters_and_adds_up() -> None:
    """Pieces of at most the bound, never inside a UTF-8 character, joined give the text; id,
    model and fingerprint on every piece, role first, finish_reason and usage last."""
    usage = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    pieces = split_chunk(chunk(Delta(role="assistant", content=TEXT), "stop", usage), LIMIT)
    assert joined(pieces)["content"] == TEXT
    assert len(pieces) >= len(TEXT.encode()) // LIMIT
    assert all(0 < text_bytes(p) <= LIMIT for p in pieces)
    assert {(p.id, p.model, p.created, p.system_fingerprint) for p in pieces} == {
        ("chatcmpl-1", "gpt-4o-mini", 1741569952, "fp_1")
    }
    assert [p.choices[0].delta.role for p in pieces] == ["assistant"] + [None] * (len(pieces) - 1)
    assert [p.choices[0].finish_reason for p in pieces][-2:] == [None, "stop"]
    assert [p.usage for p in pieces][-2:] == [None, usage]


def test_tool_call_arguments_are_cut_under_one_index() -> None:
    """A tool call's arguments in pieces: the first keeps id, type and name, the rest carry
    only the index and more arguments; content and refusal are cut too."""
    arguments = '{"text": "' + TEXT.replace("\n", "\\n") + '"}'
    call = {
        "index": 2,
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": arguments},
    }
    big = chunk(Delta(content=TEXT, refusal=TEXT, tool_calls=[call]), "tool_calls")
    pieces = split_chunk(big, LIMIT)
    assert joined(pieces) == {
        "content": TEXT,
        "refusal": TEXT,
        "calls": {2: {"id": "call_1", "name": "f", "arguments": arguments}},
    }
    assert all(text_bytes(p) <= LIMIT for p in pieces)
    calls = [c for p in pieces for c in p.choices[0].delta.tool_calls or ()]
    assert calls[0]["type"] == "function"
    assert all(
        set(c) == {"index", "function"} and set(c["function"]) == {"arguments"} for c in calls[1:]
    )
    assert pieces[-1].choices[0].finish_reason == "tool_calls"


def test_each_choice_is_cut_on_its_own() -> None:
    """Two large choices: each one's pieces carry its own index, in order."""
    big = chunk(Delta(content=TEXT))
    big.choices.append(ChunkChoice(1, Delta(content=TEXT[::-1]), "stop"))
    pieces = split_chunk(big, LIMIT)
    by_index: dict[int, str] = {0: "", 1: ""}
    for piece in pieces:
        (choice,) = piece.choices
        by_index[choice.index] += choice.delta.content or ""
    assert by_index == {0: TEXT, 1: TEXT[::-1]}


def test_a_limit_below_one_character_is_refused() -> None:
    """A bound that cannot hold a 4-byte character would never end: refused."""
    with pytest.raises(ValueError, match="cannot hold"):
        split_chunk(chunk(Delta(content=TEXT)), 3)


# the worker's stream, published to a recording stand-in for the NATS client


@dataclass
class Published:
    subject: str
    data: bytes
    headers: dict[str, str]


@dataclass
class RecordingNats:
    """What WorkerService uses of a NATS client while it streams: ``publish`` and the
    server's ``max_payload``."""

    max_payload: int
    published: list[Published] = field(default_factory=list)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        self.published.append(Published(subject, payload, headers))


@dataclass
class OneHugeEvent:
    """A provider streaming a role chunk, one chunk of ``text``, then a finish chunk."""

    text: str
    name: str = "up"
    yielded: int = 0

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        for piece in (
            chunk(Delta(role="assistant", content="")),
            chunk(Delta(content=self.text)),
            chunk(Delta(), "stop"),
        ):
            self.yielded += 1
            yield piece


async def stream_through_worker(text: str, max_payload: int) -> tuple[list[Published], int]:
    nc = RecordingNats(max_payload)
    provider = OneHugeEvent(text)
    service = WorkerService(cast("Client", nc), cast("Provider", provider))
    body = msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    request = ProviderRequest(body, decode_chat_request(body), "m", 30.0)
    await service._stream("_INBOX.test", request, {})
    return nc.published, provider.yielded


async def test_the_worker_streams_a_huge_chunk_as_numbered_bounded_messages() -> None:
    """A 2 MiB chunk leaves as chunks of at most MAX_DELTA_BYTES of text, Llm-Seq 0, 1, 2 ...
    without a gap, and the stream ends with ``end``."""
    text = (TEXT * 4000)[: 2 * 1024 * 1024]
    published, _ = await stream_through_worker(text, 64 * 1024 * 1024)
    kinds = [m.headers[headers.STREAM] for m in published]
    assert kinds == ["chunk"] * (len(published) - 1) + ["end"]
    assert [int(m.headers[headers.SEQ]) for m in published] == list(range(len(published)))
    pieces = [msgspec.json.decode(m.data, type=ChatCompletionChunk) for m in published[:-1]]
    assert joined(pieces)["content"] == text
    assert max(text_bytes(p) for p in pieces) <= MAX_DELTA_BYTES
    assert len(pieces) >= 2 + len(text.encode()) // MAX_DELTA_BYTES


async def test_a_piece_still_over_max_payload_ends_the_stream_with_its_error() -> None:
    """A server whose max_payload is below one piece: the stream stops at that piece and its
    last message is a 502 ``reply_too_large`` error, numbered next; nothing follows it."""
    published, yielded = await stream_through_worker(TEXT * 5000, 128 * 1024)
    assert [m.headers[headers.STREAM] for m in published] == ["chunk", "error"]
    assert [m.headers[headers.SEQ] for m in published] == ["0", "1"]
    error = published[-1]
    assert error.headers[headers.STATUS] == "502"
    assert headers.RETRYABLE not in error.headers
    assert msgspec.json.decode(error.data)["error"]["code"] == "reply_too_large"
    assert yielded == 2  # the provider's stream was not read past the piece
