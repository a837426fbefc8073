"""The small I/O pieces of the request path: one write per loop turn, a mailbox per call,
log lines in batches."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest
from nats.aio.msg import Msg

from edge_bridge.protocol import CorkedTransport
from edge_runtime.inbox import Mailbox
from edge_runtime.logs import FLUSH_S, BatchedStreamHandler, ConsoleFormatter


class Recording(asyncio.Transport):
    """A transport that records what reaches the socket."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def test_writes_of_one_loop_turn_reach_the_socket_as_one() -> None:
    """A response head and body written in one turn leave in one write, in order; the
    next turn's writes are a second one; anything else is the transport's."""
    raw = Recording()
    corked = CorkedTransport(raw, asyncio.get_running_loop())
    corked.write(b"HTTP/1.1 200 OK\r\n\r\n")
    corked.write(b"body")
    assert raw.writes == []
    await asyncio.sleep(0)
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    corked.writelines([b"a", b"b"])
    await asyncio.sleep(0)
    assert raw.writes[1:] == [b"ab"]
    assert corked.get_extra_info("peername") == ("127.0.0.1", 1)


async def test_close_sends_what_is_pending_and_abort_drops_it() -> None:
    raw = Recording()
    corked = CorkedTransport(raw, asyncio.get_running_loop())
    corked.write(b"last words")
    corked.close()
    assert raw.writes == [b"last words"]
    assert raw.closed
    other = Recording()
    dropped = CorkedTransport(other, asyncio.get_running_loop())
    dropped.write(b"never sent")
    dropped.abort()
    await asyncio.sleep(0)
    assert other.writes == []
    assert other.aborted


def message(n: int) -> Msg:
    return Msg(None, subject="_INBOX.x.y", data=b"%d" % n)  # type: ignore[arg-type]


async def test_a_mailbox_gives_messages_in_order_and_bounds_each_wait() -> None:
    box = Mailbox()
    box.put_nowait(message(1))
    box.put_nowait(message(2))
    assert (await box.get(0.1)).data == b"1"
    assert (await box.get(0.1)).data == b"2"
    later = asyncio.get_running_loop().call_later(0.05, box.put_nowait, message(3))
    assert (await box.get(1.0)).data == b"3"  # woken by the delivery, not the bound
    later.cancel()
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await box.get(0.05)
    assert 0.04 < asyncio.get_running_loop().time() - started < 0.5


def record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("llm_edge.requests", level, __file__, 1, msg, None, None)


async def test_info_lines_leave_together_and_a_warning_flushes_them_first() -> None:
    stream = io.StringIO()
    handler = BatchedStreamHandler(stream)
    handler.setFormatter(ConsoleFormatter())
    handler.handle(record(logging.INFO, "first"))
    handler.handle(record(logging.INFO, "second"))
    assert stream.getvalue() == ""  # queued
    await asyncio.sleep(FLUSH_S + 0.05)
    assert [line.split(" ", 4)[-1] for line in stream.getvalue().splitlines()] == [
        "first",
        "second",
    ]
    handler.handle(record(logging.INFO, "third"))
    handler.handle(record(logging.WARNING, "trouble"))  # written at once, after what waits
    assert [line.rsplit(" ", 1)[-1] for line in stream.getvalue().splitlines()][-2:] == [
        "third",
        "trouble",
    ]


def test_without_a_loop_each_line_is_written_at_once() -> None:
    stream = io.StringIO()
    handler = BatchedStreamHandler(stream)
    handler.setFormatter(ConsoleFormatter())
    handler.handle(record(logging.INFO, "alone"))
    assert stream.getvalue().endswith("alone\n")
