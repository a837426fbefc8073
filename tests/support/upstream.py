"""A fake OpenAI upstream: a real HTTP server on loopback speaking OpenAI's documented shapes.

Tests script its answers (status, body, headers, delay) and read what it received.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import uvicorn

__all__ = ["FakeOpenAI", "Scripted", "openai_completion"]


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


@dataclass
class Scripted:
    """One scripted answer; ``body=None`` means a normal completion."""

    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Received:
    """A request the fake received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeOpenAI:
    """The server. ``await start()``; base URL in :attr:`base_url`."""

    def __init__(self) -> None:
        self.script: deque[Scripted] = deque()
        self.default = Scripted()
        self.received: list[Received] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        self._server = uvicorn.Server(
            uvicorn.Config(self, lifespan="off", access_log=False, log_level="warning")
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
        self.received.append(Received(scope["path"], hdrs, body))
        answer = self.script.popleft() if self.script else self.default
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        payload = (
            answer.body
            if answer.body is not None
            else openai_completion(
                body.get("model", "?"), f"upstream says hi to {body.get('model')}"
            )
        )
        data = json.dumps(payload).encode()
        out = [(b"content-type", b"application/json")]
        out += [(k.encode(), v.encode()) for k, v in answer.headers.items()]
        await send({"type": "http.response.start", "status": answer.status, "headers": out})
        await send({"type": "http.response.body", "body": data})
