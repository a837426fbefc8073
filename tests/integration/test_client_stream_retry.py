"""The producer client's streams: retried before their first chunk, never after; closing one
cancels it. A scripted responder on a real nats-server plays the broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from edge_client import EdgeClient, RetryPolicy, UnavailableError
from edge_runtime.process import close_quietly, connect
from schemas import headers, subjects

FAST = RetryPolicy(attempts=4, attempt_timeout_s=0.5, backoff_s=0.0)
HELLO = {"model": "m", "messages": [{"role": "user", "content": "Hello"}]}


def chunk(text: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        }
    ).encode()


async def answer(nc: Client, reply: str, words: list[str], delay_s: float = 0.0) -> None:
    """A whole stream: one chunk per word, then its end."""
    for seq, word in enumerate(words):
        hdrs = {headers.STREAM: "chunk", headers.SEQ: str(seq), headers.STATUS: "200"}
        await nc.publish(reply, chunk(word), headers=hdrs)
        await asyncio.sleep(delay_s)
    end = {headers.STREAM: "end", headers.SEQ: str(len(words)), headers.STATUS: "200"}
    await nc.publish(reply, b"{}", headers=end)


Handler = Callable[[int, Msg], Awaitable[None]]


class Broker:
    """Plays the broker on a tenant's subject: ``handle(attempt, msg)`` per request."""

    def __init__(self, nc: Client, handle: Handler) -> None:
        self.nc, self.handle = nc, handle
        self.tenant = f"t{uuid.uuid4().hex[:10]}"
        self.seen: list[str] = []
        self.cancels: list[tuple[str, str | None]] = []
        self.cancelled = asyncio.Event()

    async def start(self) -> None:
        await self.nc.subscribe(subjects.tenant_subject(self.tenant, "chat"), cb=self._on)
        await self.nc.subscribe(subjects.CANCEL, cb=self._on_cancel)
        await self.nc.flush()

    async def _on(self, msg: Msg) -> None:
        self.seen.append((msg.headers or {})[headers.REQUEST_ID])
        await self.handle(len(self.seen), msg)

    async def _on_cancel(self, msg: Msg) -> None:
        self.cancels.append((msg.data.decode(), msg.reply))
        self.cancelled.set()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect(nats_url, "stream-retry-test")
    yield client
    await close_quietly(client)


async def test_a_lost_reply_and_a_503_before_the_first_chunk_are_retried(nc: Client) -> None:
    """The first attempt gets no reply, the second a 503: the third streams, all three under
    the caller's request id, and the chunks come once."""

    async def handle(attempt: int, msg: Msg) -> None:
        if attempt == 2:
            failed = {headers.STATUS: "503", headers.RETRY_AFTER: "0"}
            await nc.publish(msg.reply, b'{"error":{"message":"busy"}}', headers=failed)
        elif attempt == 3:
            await answer(nc, msg.reply, ["Hello ", "there"])

    broker = Broker(nc, handle)
    await broker.start()
    client = EdgeClient(nc, tenant=broker.tenant, retry=FAST)
    chunks = [c async for c in client.stream(HELLO, request_id="s-1", deadline_s=10)]
    assert [c.choices[0].delta.content for c in chunks] == ["Hello ", "there"]
    assert broker.seen == ["s-1", "s-1", "s-1"]


async def test_no_broker_yet_is_retried_until_one_serves(nc: Client) -> None:
    """A stream published before any broker serves its subject (NATS no-responders) is
    retried, and streams once a broker is there."""

    async def handle(attempt: int, msg: Msg) -> None:
        await answer(nc, msg.reply, ["late ", "but ", "whole"])

    broker = Broker(nc, handle)
    client = EdgeClient(nc, tenant=broker.tenant, retry=RetryPolicy(attempts=6, backoff_s=0.2))
    started = asyncio.Event()

    async def later() -> None:
        await asyncio.sleep(0.3)
        await broker.start()
        started.set()

    starting = asyncio.create_task(later())
    text = "".join(
        [c.choices[0].delta.content or "" async for c in client.stream(HELLO, deadline_s=10)]
    )
    await starting
    assert text == "late but whole"
    assert len(broker.seen) == 1


async def test_a_stream_that_failed_after_a_chunk_is_not_retried(nc: Client) -> None:
    """A 503 after a chunk was delivered raises: the producer already saw part of the answer,
    and only it can tell whether to ask again."""

    async def handle(attempt: int, msg: Msg) -> None:
        first = {headers.STREAM: "chunk", headers.SEQ: "0", headers.STATUS: "200"}
        await nc.publish(msg.reply, chunk("partial"), headers=first)
        broken = {headers.STREAM: "error", headers.SEQ: "1", headers.STATUS: "503"}
        await nc.publish(msg.reply, b'{"error":{"message":"gone"}}', headers=broken)

    broker = Broker(nc, handle)
    await broker.start()
    client = EdgeClient(nc, tenant=broker.tenant, retry=FAST)
    got: list[str] = []

    async def read() -> None:
        async for c in client.stream(HELLO, deadline_s=10):
            got.append(c.choices[0].delta.content or "")

    with pytest.raises(UnavailableError):
        await read()
    assert got == ["partial"]
    assert len(broker.seen) == 1


async def test_leaving_a_stream_cancels_it_from_its_own_inbox(nc: Client) -> None:
    """Leaving the ``async with`` block of a stream mid-way publishes its request id on
    llm.cancel, with the stream's reply inbox as the cancel's reply."""
    inboxes: list[str] = []

    async def handle(attempt: int, msg: Msg) -> None:
        assert msg.reply
        inboxes.append(msg.reply)
        first = {headers.STREAM: "chunk", headers.SEQ: "0", headers.STATUS: "200"}
        await nc.publish(msg.reply, chunk("slow "), headers=first)
        async with asyncio.timeout(10):  # the rest would come only after the cancel
            await broker.cancelled.wait()

    broker = Broker(nc, handle)
    await broker.start()
    client = EdgeClient(nc, tenant=broker.tenant, retry=FAST)
    async with client.stream(HELLO, request_id="s-cancel", deadline_s=30) as chunks:
        assert chunks.request_id == "s-cancel"
        async for _ in chunks:
            break
    await nc.flush()
    async with asyncio.timeout(2):
        await broker.cancelled.wait()
    assert [c for c in broker.cancels if c[0] == "s-cancel"] == [("s-cancel", inboxes[0])]


async def test_a_stream_that_ended_sends_no_cancel(nc: Client) -> None:
    """A stream read to its end is finished: closing it publishes nothing."""

    async def handle(attempt: int, msg: Msg) -> None:
        await answer(nc, msg.reply, ["all ", "of ", "it"])

    broker = Broker(nc, handle)
    await broker.start()
    client = EdgeClient(nc, tenant=broker.tenant, retry=FAST)
    async with client.stream(HELLO, request_id="s-ended", deadline_s=10) as chunks:
        assert len([c async for c in chunks]) == 3
    await nc.flush()
    await asyncio.sleep(0.2)
    assert [c for c in broker.cancels if c[0] == "s-ended"] == []
