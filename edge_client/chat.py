"""A small client for the NATS API, for Python producers (and the HTTP bridge).

    async for chunk in stream_chat(nc, {"model": "gpt-4o-mini", "messages": [...],
                                        "stream": True}):
        print(chunk.choices[0].delta.content or "", end="")

Leaving the loop early publishes the request id on ``llm.cancel`` with the request's reply
inbox as the cancel's reply (brokers honour a cancel only from the request's caller), which
stops the upstream call within moments.

Slow is not lost: every request asks its broker for keepalives (``Llm-Keepalive-Ms``), which
the broker sends while the answer has not begun; they are not yielded. ``first_s`` bounds
the *silence* before the first message (no answer and no keepalive), so a reasoning model
that thinks for minutes is waited for, and only an attempt whose broker or reply was lost
runs out of it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.nuid import NUID

from schemas import ChatCompletionChunk, ErrorEnvelope, headers, subjects

__all__ = ["KEEPALIVE_MS", "ChatStreamError", "keepalive_ms", "stream_chat", "stream_messages"]

_nuid = NUID()
#: How often brokers are asked for a keepalive while an answer has not begun; a caller's
#: silence bound (``first_s``) should be several of these.
KEEPALIVE_MS = 5000


def keepalive_ms(silence_s: float) -> int:
    """The keepalive interval for a caller that takes ``silence_s`` of silence for lost: a
    quarter of it, at most :data:`KEEPALIVE_MS`, at least 250 ms (so a live call always
    sends several keepalives before its caller would give up on it, and its worker claims
    it before any retry could come)."""
    return max(250, min(KEEPALIVE_MS, int(silence_s * 1000 / 4)))


_chunk_decoder = msgspec.json.Decoder(ChatCompletionChunk)
_error_decoder = msgspec.json.Decoder(ErrorEnvelope)


class ChatStreamError(Exception):
    """The request failed; ``status``, ``code`` and ``message`` come from the error envelope."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        try:
            detail = _error_decoder.decode(body).error
            self.code: str | None = detail.code
            self.message = detail.message
        except msgspec.MsgspecError:
            self.code, self.message = None, body[:200].decode(errors="replace")
        super().__init__(f"{status} {self.code}: {self.message}")


async def stream_messages(
    nc: Client,
    body: bytes,
    *,
    subject: str = subjects.CHAT,
    request_headers: Mapping[str, str] | None = None,
    deadline_s: float = 600.0,
    first_s: float | None = None,
    cancel_when_lost: bool = True,
) -> AsyncGenerator[Msg, None]:
    """Publish a request and yield every reply message, the last one included
    (``Llm-Stream: end`` or ``error``, a whole reply, or a whole error reply sent before a
    stream began); keepalives are not yielded.

    Args:
        first_s: the longest silence (no message, keepalives included) before the first
            message; ``None``: the deadline alone.
        cancel_when_lost: cancel the request (``llm.cancel``) when it ran out of time too;
            a caller that sends it again under the same id (answered from this attempt's
            call) leaves it running.

    Raises:
        TimeoutError: the stream did not finish within ``deadline_s`` seconds, or no message
            came for ``first_s`` before the first.
        ChatStreamError: nobody serves ``subject`` (status 503).
    """
    hdrs = dict(request_headers or {})
    request_id = hdrs.setdefault(headers.REQUEST_ID, _nuid.next().decode())
    hdrs.setdefault(headers.KEEPALIVE_MS, str(KEEPALIVE_MS))
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    finished = False
    lost = False
    deadline = time.monotonic() + deadline_s

    def silence_until() -> float:
        return deadline if first_s is None else min(deadline, time.monotonic() + first_s)

    wait_until = silence_until()
    try:
        await nc.publish(subject, body, reply=inbox, headers=hdrs)
        while True:
            try:
                msg = await sub.next_msg(timeout=max(wait_until - time.monotonic(), 0.001))
            except NatsTimeout:
                lost = True
                raise TimeoutError(f"no reply within {deadline_s}s") from None
            reply_headers = msg.headers or {}
            if reply_headers.get(headers.STREAM) == "keepalive":
                if wait_until < deadline:  # the answer has not begun: silence starts again
                    wait_until = silence_until()
                continue
            wait_until = deadline
            if reply_headers.get("Status") == "503" and not msg.data:
                finished = True
                raise ChatStreamError(
                    503,
                    b'{"error":{"message":"no broker is running",'
                    b'"type":"service_unavailable","code":"no_broker"}}',
                )
            kind = reply_headers.get(headers.STREAM)
            finished = kind != "chunk"
            yield msg
            if finished:
                return
    finally:
        await sub.unsubscribe()
        # the request's inbox proves it is ours to cancel
        if not finished and not nc.is_closed and (cancel_when_lost or not lost):
            await nc.publish(subjects.CANCEL, request_id.encode(), reply=inbox)


async def stream_chat(
    nc: Client,
    request: bytes | dict[str, Any],
    *,
    request_headers: Mapping[str, str] | None = None,
    deadline_s: float = 600.0,
) -> AsyncIterator[ChatCompletionChunk]:
    """Stream a chat completion from ``llm.chat`` as typed chunks.

    Raises:
        ChatStreamError: the request failed (before or during the stream).
        TimeoutError: the stream did not finish within ``deadline_s`` seconds.
    """
    if isinstance(request, dict):
        request = msgspec.json.encode({**request, "stream": True})
    expected = 0
    messages = stream_messages(nc, request, request_headers=request_headers, deadline_s=deadline_s)
    async with contextlib.aclosing(messages):
        async for msg in messages:
            hdrs = msg.headers or {}
            kind = hdrs.get(headers.STREAM)
            if kind in {"chunk", "end"} and int(hdrs.get(headers.SEQ, expected)) != expected:
                raise ChatStreamError(
                    502,
                    b'{"error":{"message":"stream out of order",'
                    b'"type":"upstream_error","code":"stream_gap"}}',
                )
            expected += 1
            if kind == "chunk":
                yield _chunk_decoder.decode(msg.data)
            elif kind != "end":
                raise ChatStreamError(int(hdrs.get(headers.STATUS, "500")), msg.data)
