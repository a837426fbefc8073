"""Answers of several MiB, whole and streamed, through the real path: a local OpenAI-shaped
(or Anthropic) upstream, a worker, a broker, a nats-server and the HTTP bridge."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import openai
import pytest

from edge_client.chat import stream_messages
from schemas import headers, subjects
from tests.support.anthropic_shapes import stream_events
from tests.support.scripted_upstream import Answer, Sent, scripted_upstream
from tests.support.servers import EmbeddedNats
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted, openai_completion
from workers.split import MAX_DELTA_BYTES

#: The answers' size in characters (7.4 MiB as UTF-8): several times the read-ahead of the
#: upstream client (1 MiB) and NATS's default max_payload (1 MiB).
BIG = 6 * 1024 * 1024
#: The max_payload these tests need (a 6 MiB answer whole in one message, with room to spare).
NEEDED_MAX_PAYLOAD = 16 * 1024 * 1024
#: The max_payload of a server a 6 MiB answer cannot cross in one message.
SMALL_MAX_PAYLOAD = 512 * 1024
#: Seconds any one wait of these tests may take.
WAIT_S = 30.0


def big_text(size: int = BIG) -> str:
    """``size`` characters different at every position (a piece lost, doubled or moved shows),
    with multi-byte characters, quotes, backslashes and newlines that JSON escapes."""
    line = 0
    parts: list[str] = []
    total = 0
    while total < size:
        part = f'{line:09d} é€😀 "q" \\ tab\t\n'
        parts.append(part)
        total += len(part)
        line += 1
    return "".join(parts)[:size]


def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
    """One OpenAI ``chat.completion.chunk`` as an SSE event (UTF-8 as OpenAI sends it)."""
    chunk = {
        "id": "chatcmpl-big",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": "gpt-4o-mini",
        "choices": choices,
        **extra,
    }
    return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"


def chunk_event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    """A chunk of one choice."""
    return event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])


def openai_stream(text: str, events: int) -> list[bytes]:
    """OpenAI's stream of ``text`` cut into ``events`` content deltas, with usage and [DONE]."""
    step = -(-len(text) // events)
    out = [chunk_event({"role": "assistant", "content": ""})]
    out += [chunk_event({"content": text[i : i + step]}) for i in range(0, len(text), step)]
    out.append(chunk_event({}, "stop"))
    out.append(event([], usage={"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}))
    out.append(b"data: [DONE]\n\n")
    return out


def server_max_payload(url: str) -> int:
    """The ``max_payload`` a nats-server announces in its ``INFO`` line."""
    host, _, port = url.removeprefix("nats://").rpartition(":")
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as sock:
        info = sock.makefile("rb").readline()
    limit: int = json.loads(info.removeprefix(b"INFO "))["max_payload"]
    return limit


@contextlib.contextmanager
def nats_with_max_payload(data_dir: Path, max_payload: int) -> Iterator[str]:
    """A nats-server of our own whose messages may be up to ``max_payload`` bytes."""
    config = data_dir / "max_payload.conf"
    config.write_text(f"max_payload: {max_payload}\n")
    server = EmbeddedNats(data_dir, port=-1, config_file=config)
    server.start()
    try:
        assert server_max_payload(server.url) == max_payload
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def big_nats_url(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's nats-server if it takes 6 MiB messages, or one of this module's own that
    does (a server whose max_payload was not raised keeps NATS's 1 MiB default)."""
    if server_max_payload(nats_url) >= NEEDED_MAX_PAYLOAD:
        yield nats_url
        return
    with nats_with_max_payload(tmp_path_factory.mktemp("big-nats"), 4 * NEEDED_MAX_PAYLOAD) as url:
        yield url


@pytest.fixture(scope="module")
def small_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server whose max_payload (512 KiB) is far below a 6 MiB answer."""
    with nats_with_max_payload(tmp_path_factory.mktemp("small-nats"), SMALL_MAX_PAYLOAD) as url:
        yield url


async def openai_stack(nats_url: str, upstream: FakeOpenAI, make_stack: StackFactory) -> Stack:
    """Broker, worker and bridge on ``nats_url``; model ``big`` served by ``upstream``."""
    config = config_from(f"""
        [cache]
        enabled = false  # every request reaches the upstream

        [providers.big]
        kind = "openai_compatible"
        base_url = "{upstream.base_url}"

        [models.big]
        deployments = [{{ provider = "big", model = "gpt-4o-mini" }}]
    """)
    return await make_stack(nats_url, config, bridge=True)


@pytest.fixture
async def stack(big_nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory) -> Stack:
    return await openai_stack(big_nats_url, fake_openai, make_stack)


def request(model: str = "big", **extra: object) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "a long one"}], **extra}


def sdk_for(stack: Stack, transport: httpx.AsyncBaseTransport | None = None) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=transport, timeout=WAIT_S)
    return openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0, http_client=http)


class _Recorded(httpx.AsyncByteStream):
    """An answer's body passed on as it is read, and kept."""

    def __init__(self, inner: httpx.AsyncByteStream, into: bytearray) -> None:
        self._inner = inner
        self._into = into

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._inner:
            self._into += piece
            yield piece

    async def aclose(self) -> None:
        await self._inner.aclose()


class Recording(httpx.AsyncBaseTransport):
    """A transport that keeps the bytes of every answer the client reads (what the SDK parsed,
    to look at the stream's last line)."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.body = bytearray()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Recorded(response.stream, self.body),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_6_mib_whole_answer_arrives_whole_over_nats(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """A 6 MiB completion comes back over NATS with its content unchanged, from one call."""
    text = big_text()
    fake_openai.script.append(Scripted(body=openai_completion("gpt-4o-mini", text)))
    msg = await stack.nc.request("llm.chat", msgspec.json.encode(request()), timeout=WAIT_S)
    assert msg.headers is not None
    assert msg.headers[headers.STATUS] == "200", msg.data[:300]
    assert msgspec.json.decode(msg.data)["choices"][0]["message"]["content"] == text
    assert len(fake_openai.received) == 1


async def test_a_6_mib_whole_answer_arrives_whole_over_http(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """A 6 MiB completion reaches the OpenAI SDK through the bridge unchanged, from one call."""
    text = big_text()
    fake_openai.script.append(Scripted(body=openai_completion("gpt-4o-mini", text)))
    async with sdk_for(stack) as sdk:
        completion = await sdk.chat.completions.create(**request())
    assert completion.choices[0].message.content == text
    assert len(fake_openai.received) == 1


@pytest.mark.parametrize("events", [1, 97], ids=["one-event", "many-events"])
async def test_a_6_mib_stream_arrives_complete_and_in_order_over_http(
    stack: Stack, fake_openai: FakeOpenAI, events: int
) -> None:
    """A 6 MiB answer streamed as one SSE event or as many reaches the SDK whole, in order,
    with its usage, and the stream ends with ``data: [DONE]``."""
    text = big_text()
    fake_openai.script.append(Scripted(raw_sse=openai_stream(text, events)))
    recording = Recording()
    async with sdk_for(stack, recording) as sdk:
        stream = await sdk.chat.completions.create(
            **request(), stream=True, stream_options={"include_usage": True}
        )
        pieces, finish, usage = [], None, None
        async for chunk in stream:
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
            usage = chunk.usage or usage
    assert "".join(pieces) == text
    assert finish == "stop"
    assert usage is not None
    assert usage.total_tokens == 10
    assert recording.body.endswith(b"data: [DONE]\n\n")
    assert len(fake_openai.received) == 1


async def test_the_worker_sends_one_huge_event_as_bounded_chunks_in_order(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """Straight from the worker: a 6 MiB event leaves as chunks of at most MAX_DELTA_BYTES of
    text each, numbered 0, 1, 2 ... by ``Llm-Seq``, same id and model, then ``end``."""
    text = big_text()
    fake_openai.script.append(Scripted(raw_sse=openai_stream(text, 1)))
    body = msgspec.json.encode(request(model="gpt-4o-mini", stream=True))
    messages = [
        msg
        async for msg in stream_messages(
            stack.nc, body, subject=subjects.provider_subject("big"), deadline_s=WAIT_S
        )
    ]
    kinds = [(msg.headers or {}).get(headers.STREAM) for msg in messages]
    assert kinds == ["chunk"] * (len(messages) - 1) + ["end"]
    assert [int((msg.headers or {})[headers.SEQ]) for msg in messages] == list(range(len(messages)))
    chunks = [msgspec.json.decode(msg.data) for msg in messages[:-1]]
    contents = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert "".join(contents) == text
    assert max(len(content.encode()) for content in contents) <= MAX_DELTA_BYTES
    assert len(contents) >= len(text.encode()) // MAX_DELTA_BYTES
    assert {(c["id"], c["model"]) for c in chunks} == {("chatcmpl-big", "gpt-4o-mini")}
    assert msgspec.json.decode(messages[-1].data)["finish_reason"] == "stop"
    assert len(fake_openai.received) == 1


async def test_a_6_mib_anthropic_text_delta_arrives_complete_over_http(
    big_nats_url: str, make_stack: StackFactory
) -> None:
    """An Anthropic stream whose one ``text_delta`` holds 6 MiB reaches the OpenAI SDK whole,
    ending with ``data: [DONE]``, from one upstream call."""
    text = big_text()
    sent: list[Sent] = []

    def answer(request: Sent) -> Answer:
        sent.append(request)
        return Answer(pieces=stream_events([text]))

    async with scripted_upstream(answer) as claude_url:
        config = config_from(f"""
            [cache]
            enabled = false

            [providers.claude]
            kind = "anthropic"
            base_url = "{claude_url}"

            [models.claude]
            deployments = [{{ provider = "claude", model = "claude-sonnet-4-5" }}]
        """)
        stack = await make_stack(big_nats_url, config, bridge=True)
        recording = Recording()
        async with sdk_for(stack, recording) as sdk:
            stream = await sdk.chat.completions.create(**request(model="claude"), stream=True)
            pieces = [
                choice.delta.content or "" async for chunk in stream for choice in chunk.choices
            ]
    assert "".join(pieces) == text
    assert recording.body.endswith(b"data: [DONE]\n\n")
    assert len(sent) == 1


async def test_a_whole_answer_over_max_payload_fails_loudly_with_a_502(
    small_nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory
) -> None:
    """A whole answer larger than the server's max_payload is a 502 ``reply_too_large``, not a
    timeout, and is not tried again."""
    stack = await openai_stack(small_nats_url, fake_openai, make_stack)
    fake_openai.script.append(Scripted(body=openai_completion("gpt-4o-mini", big_text())))
    async with sdk_for(stack) as sdk:
        with pytest.raises(openai.APIStatusError) as failed:
            await sdk.chat.completions.create(**request())
    assert failed.value.status_code == 502
    assert isinstance(failed.value.body, dict)
    assert failed.value.body["code"] == "reply_too_large"
    assert len(fake_openai.received) == 1


async def test_a_streamed_answer_over_max_payload_arrives_in_pieces(
    small_nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory
) -> None:
    """Streamed, the same 6 MiB answer crosses a 512 KiB max_payload whole, in order, and
    ends with ``data: [DONE]``."""
    stack = await openai_stack(small_nats_url, fake_openai, make_stack)
    text = big_text()
    fake_openai.script.append(Scripted(raw_sse=openai_stream(text, 1)))
    recording = Recording()
    async with sdk_for(stack, recording) as sdk:
        stream = await sdk.chat.completions.create(**request(), stream=True)
        pieces = [choice.delta.content or "" async for chunk in stream for choice in chunk.choices]
    assert "".join(pieces) == text
    assert recording.body.endswith(b"data: [DONE]\n\n")
    assert len(fake_openai.received) == 1
