"""A provider worker's memory for one sub-batch on a provider's Batch API: the submit writes
each line into the request body once (the body is about the input's size, held once), and
the results are read line by line as the worker writes them out (none is kept).

Measured with ``tracemalloc`` (Python's own count of what is allocated, the same on every
run): a sub-batch of tens of megabytes, with a stand-in for the HTTP calls that keeps what
it was sent and answers from prepared files.
"""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Mapping

import msgspec

from workers.batch_anthropic import AnthropicBatches
from workers.batch_openai import OpenAIBatches

LINES = 4_000
PAD = "x" * 2_000


def input_file() -> bytes:
    """The sub-batch as the broker stores it: one request line a line (about 8 MB)."""
    rows = (
        msgspec.json.encode(
            {
                "custom_id": f"c{i}",
                "body": {"model": "m", "messages": [{"role": "user", "content": f"{i} {PAD}"}]},
            }
        )
        for i in range(LINES)
    )
    return b"\n".join(rows) + b"\n"


def openai_output() -> bytes:
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": PAD},
                "finish_reason": "stop",
            }
        ],
    }
    rows = (
        msgspec.json.encode(
            {"custom_id": f"r{i}", "response": {"status_code": 200, "body": completion}}
        )
        for i in range(LINES)
    )
    return b"\n".join(rows) + b"\n"


def anthropic_output(tag: str) -> bytes:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": PAD}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 500},
    }
    rows = (
        msgspec.json.encode(
            {"custom_id": f"{tag}-{i}", "result": {"type": "succeeded", "message": message}}
        )
        for i in range(LINES)
    )
    return b"\n".join(rows) + b"\n"


class Upstream:
    """Answers the Batch API calls from prepared bodies; keeps the size of what it was sent."""

    def __init__(self, answers: Mapping[str, bytes]) -> None:
        self.answers = answers
        self.sent = 0

    async def call(
        self,
        method: str,
        path: str,
        data: bytes | bytearray = b"",
        extra: Mapping[str, str] | None = None,
    ) -> bytes:
        self.sent = max(self.sent, len(data))
        for prefix, answer in self.answers.items():
            if path.startswith(prefix):
                return answer
        raise AssertionError(f"unexpected call {method} {path}")


def lines_of(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)  # as the worker reads the stored sub-batch: line by line


async def test_an_openai_submit_holds_its_body_once_and_its_results_are_read_one_by_one() -> None:
    data, output = input_file(), openai_output()
    upstream = Upstream(
        {
            "/files/out/content": output,
            "/files": b'{"id": "file-1"}',
            "/batches/batch-1": b'{"output_file_id": "out", "error_file_id": null}',
            "/batches": b'{"id": "batch-1"}',
        }
    )
    batches = OpenAIBatches(upstream)  # type: ignore[arg-type]  (the calls it makes)

    tracemalloc.start()
    try:
        batch_id = await batches.submit(lines_of(data), "gpt-4.1", "sub-1", 0)
        submit_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        results = 0
        for i, body, error in await batches.results(batch_id):
            assert (i, error) == (results, "")
            assert body is not None
            results += 1
        results_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert batch_id == "batch-1"
    assert results == LINES
    assert upstream.sent > len(data)  # the upload carried every line (and the model's name)
    assert submit_peak < 1.5 * len(data)  # the body, once (it was five times the input)
    assert results_peak < 0.1 * len(output)  # a line at a time (it was four times the file)


async def test_an_anthropic_submit_holds_its_body_once_and_its_results_are_read_one_by_one() -> (
    None
):
    data, output = input_file(), anthropic_output("sub-2")
    upstream = Upstream(
        {
            "/messages/batches/msgbatch-1": b'{"results_url": "/results/1"}',
            "/messages/batches": b'{"id": "msgbatch-1"}',
            "/results/1": output,
        }
    )

    def translate(chat: bytes, model: str) -> bytes:
        body = msgspec.json.decode(chat)
        return msgspec.json.encode({"model": model, "max_tokens": 64, **body})

    batches = AnthropicBatches(upstream, translate)  # type: ignore[arg-type]

    tracemalloc.start()
    try:
        batch_id = await batches.submit(lines_of(data), "claude", "sub-2", 0)
        submit_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        results = sum(1 for _, body, _ in await batches.results(batch_id) if body is not None)
        results_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert results == LINES
    assert upstream.sent > len(data)
    assert submit_peak < 1.5 * len(data)
    assert results_peak < 0.1 * len(output)
