"""A fake OpenAI upstream: a real HTTP server on loopback speaking OpenAI's documented shapes.

Tests script its answers (status, body, headers, delay) and read what it received. With
:class:`ProviderLimits` it enforces a provider's own limits (calls in flight, requests per
minute) as OpenAI does: a request over them is answered 429 with ``retry-after`` and the
``x-ratelimit-*`` headers, and counted in ``too_many``.
``POST /v1/embeddings`` answers one deterministic unit vector per input (the mock provider's,
:func:`workers.mock_vectors.mock_vector`), floats or base64 as asked. Background responses
(``background: true``, then ``GET`` and ``cancel`` by id) are
:mod:`tests.support.upstream_background`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import uvicorn

from tests.support.upstream_background import BackgroundRuns
from workers.mock_vectors import embedding_answer

__all__ = [
    "FakeOpenAI",
    "ProviderLimits",
    "Scripted",
    "openai_completion",
    "openai_embeddings",
    "openai_response",
    "running_fake",
]


def openai_completion(model: str, content: str) -> dict[str, Any]:
    """A chat.completion as OpenAI's API reference shows it (extra fields included)."""
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 19,
            "completion_tokens": 10,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
    }


def openai_response(
    model: str, content: str, response_id: str = "resp_upstream_1"
) -> dict[str, Any]:
    """A ``response`` object as OpenAI's Responses API reference shows it."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": 1741476542,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": "msg_upstream_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": content, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": 36,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 87,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 123,
        },
        "user": None,
        "metadata": {},
    }


def openai_response_events(model: str, words: list[str]) -> list[bytes]:
    """A Responses stream as OpenAI sends it: named events, the last ``response.completed``."""
    final = openai_response(model, "".join(words))
    item = final["output"][0]
    started = {**final, "status": "in_progress", "output": [], "usage": None}
    where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": started}),
        ("response.in_progress", {"response": started}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": {**item, "status": "in_progress", "content": []}},
        ),
        (
            "response.content_part.added",
            {**where, "part": {"type": "output_text", "text": "", "annotations": []}},
        ),
        *[("response.output_text.delta", {**where, "delta": w, "logprobs": []}) for w in words],
        ("response.output_text.done", {**where, "text": "".join(words), "logprobs": []}),
        ("response.content_part.done", {**where, "part": item["content"][0]}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": final}),
    ]
    return [
        f"event: {name}\ndata: ".encode()
        + json.dumps({"type": name, "sequence_number": i, **data}).encode()
        + b"\n\n"
        for i, (name, data) in enumerate(events)
    ]


def openai_embeddings(body: dict[str, Any]) -> bytes:
    """OpenAI's embeddings list for an embeddings request body: a vector per input."""
    raw = body.get("input", "")
    inputs = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else raw
    return embedding_answer(
        inputs,
        f"{body.get('model')}-upstream",
        dimensions=body.get("dimensions") or 1536,
        encoding_format=body.get("encoding_format") or "float",
    )


@dataclass
class Scripted:
    """One scripted answer; ``body=None`` means a normal completion (or stream).

    For streaming requests: ``raw_sse`` sends exactly those byte pieces; otherwise the answer
    is streamed word by word with ``chunk_delay_s`` between chunks, and ``fail_after`` chunks
    an error event is sent instead of the rest.

    ``release``: the answer waits until this event is set (at most ``delay_s``), for a test
    that holds a call upstream while it checks something, then lets it go; with
    ``hold_after``, a stream waits for it after that many pieces instead.
    """

    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    raw_sse: list[bytes] | None = None
    fail_after: int | None = None
    release: asyncio.Event | None = None
    hold_after: int | None = None


@dataclass(frozen=True)
class ProviderLimits:
    """Limits the fake enforces (``None``: none).

    Attributes:
        concurrency: calls in flight at once.
        rpm: requests in any 60 seconds (a sliding window).
        advertise: send ``x-ratelimit-limit-requests`` / ``-remaining-requests`` /
            ``-reset-requests`` on every answer, as OpenAI does.
    """

    concurrency: int | None = None
    rpm: int | None = None
    advertise: bool = False


@dataclass
class Received:
    """A request the fake received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    method: str = "POST"


class FakeOpenAI:
    """The server. ``await start()``; base URL in :attr:`base_url`."""

    def __init__(self, port: int = 0, limits: ProviderLimits | None = None) -> None:
        self.limits = limits or ProviderLimits()
        #: calls in flight now and at most; requests answered 429 for being over a limit
        self.active = 0
        self.peak = 0
        self.too_many = 0
        self._window: deque[float] = deque()
        self.script: deque[Scripted] = deque()
        self.default = Scripted()
        self.received: list[Received] = []
        self.background = BackgroundRuns()
        self.disconnected = asyncio.Event()
        # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on the accepted sockets as it does
        # for its own: without it, an answer's head and body (two writes) wait for a delayed
        # ACK now and then, 40 ms added to a call at random
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.bind(("127.0.0.1", port))
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        self._server = uvicorn.Server(
            uvicorn.Config(
                self,
                lifespan="off",
                access_log=False,
                log_level="warning",
                timeout_graceful_shutdown=2,  # a handler left waiting must not hold up a test
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server._serve(sockets=[self._sock]))
        while not self._server.started:  # noqa: ASYNC110  (uvicorn has no started event)
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = json.loads(b"".join(chunks) or b"{}")
        hdrs = {k.decode(): v.decode() for k, v in scope["headers"]}
        over = self._over_limits()
        if over is not None:
            self.too_many += 1
            await _answer(
                send,
                429,
                json.dumps({"error": {"message": over, "type": "requests"}}).encode(),
                {
                    "retry-after": "1",
                    **self._advertised(),
                },
            )
            return
        self.received.append(Received(scope["path"], hdrs, body, scope["method"]))
        addressed = BackgroundRuns.addressed(scope["path"])
        if addressed is not None:
            upstream_id, cancel = addressed
            status, shown = self.background.answer(upstream_id, cancel)
            await _answer(send, status, json.dumps(shown).encode(), {})
            return
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await self._answer(scope["path"], body, receive, send)
        finally:
            self.active -= 1

    def _over_limits(self) -> str | None:
        """Why a request arriving now is over the limits (``None``: it is not); a request
        within them is counted."""
        limits, now = self.limits, time.monotonic()
        while self._window and self._window[0] <= now - 60:
            self._window.popleft()
        if limits.concurrency is not None and self.active >= limits.concurrency:
            return f"too many requests in flight (limit {limits.concurrency})"
        if limits.rpm is not None and len(self._window) >= limits.rpm:
            return f"rate limit reached for requests (limit {limits.rpm} per min)"
        self._window.append(now)
        return None

    def _advertised(self) -> dict[str, str]:
        limits = self.limits
        if not limits.advertise or limits.rpm is None:
            return {}
        reset = 60 - (time.monotonic() - self._window[0]) if self._window else 0.0
        return {
            "x-ratelimit-limit-requests": str(limits.rpm),
            "x-ratelimit-remaining-requests": str(max(0, limits.rpm - len(self._window))),
            "x-ratelimit-reset-requests": f"{max(0.0, reset):.3f}s",
        }

    async def _answer(self, path: str, body: dict[str, Any], receive: Any, send: Any) -> None:
        answer = self.script.popleft() if self.script else self.default
        if answer.delay_s:  # a slow upstream that notices when the caller hangs up
            watcher = asyncio.ensure_future(self._watch(receive))
            waits = [watcher]
            if answer.release is not None:
                waits.append(asyncio.ensure_future(answer.release.wait()))
            await asyncio.wait(waits, timeout=answer.delay_s, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
            if watcher.done() and not watcher.cancelled():  # this caller hung up
                return
        if body.get("stream") and answer.status == 200 and answer.body is None:
            if path.endswith("/responses") and answer.raw_sse is None:
                words = f"upstream streams to {body.get('model')}".split(" ")
                answer = replace(answer, raw_sse=openai_response_events(body["model"], words))
            await self._stream(body, answer, receive, send)
            return
        if answer.body is not None:
            data = json.dumps(answer.body).encode()
        elif path.endswith("/embeddings"):
            data = openai_embeddings(body)
        elif path.endswith("/responses"):
            response = openai_response(body["model"], f"upstream says hi to {body['model']}")
            if body.get("background"):
                response = self.background.create(response)
            data = json.dumps(response).encode()
        else:
            completion = openai_completion(
                body.get("model", "?"), f"upstream says hi to {body.get('model')}"
            )
            data = json.dumps(completion).encode()
        await _answer(send, answer.status, data, {**self._advertised(), **answer.headers})

    async def _stream(
        self, body: dict[str, Any], answer: Scripted, receive: Any, send: Any
    ) -> None:
        """OpenAI's streaming format: ``data: {chunk}`` events, a usage chunk, ``[DONE]``."""
        watcher = asyncio.ensure_future(self._watch(receive))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        try:
            for i, piece in enumerate(answer.raw_sse or self._pieces(body, answer)):
                if i == answer.hold_after and answer.release is not None:
                    await answer.release.wait()
                if answer.chunk_delay_s:
                    await asyncio.sleep(answer.chunk_delay_s)
                if watcher.done():  # this caller hung up
                    return
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()

    async def _watch(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected.set()

    @staticmethod
    def _pieces(body: dict[str, Any], answer: Scripted) -> list[bytes]:
        model = body.get("model", "?")
        words = f"upstream streams to {model}".split(" ")

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk = {
                "id": "chatcmpl-stream-1",
                "object": "chat.completion.chunk",
                "created": 1741569952,
                "model": model,
                "system_fingerprint": "fp_1",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        pieces = [event({"role": "assistant", "content": "", "refusal": None})]
        for i, word in enumerate(words):
            if answer.fail_after is not None and i >= answer.fail_after:
                error = {
                    "error": {
                        "message": "upstream broke mid-stream",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                }
                return [*pieces, b"data: " + json.dumps(error).encode() + b"\n\n"]
            pieces.append(event({"content": word + (" " if i < len(words) - 1 else "")}))
        pieces.append(event({}, "stop"))
        usage = {
            "id": "chatcmpl-stream-1",
            "object": "chat.completion.chunk",
            "created": 1741569952,
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
        }
        pieces.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
        pieces.append(b"data: [DONE]\n\n")
        return pieces


async def _answer(send: Any, status: int, data: bytes, hdrs: dict[str, str]) -> None:
    """A whole JSON answer."""
    out = [(b"content-type", b"application/json")]
    out += [(k.encode(), v.encode()) for k, v in hdrs.items()]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": data})


@contextlib.asynccontextmanager
async def running_fake(limits: ProviderLimits | None = None) -> AsyncIterator[FakeOpenAI]:
    """A fake upstream, started and always stopped."""
    server = FakeOpenAI(limits=limits)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
