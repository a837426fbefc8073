"""Bulk jobs end to end: the official SDK, cancel, expiry, validation, dead letters."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from typing import Any

import msgspec
import openai
import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from broker.batch.runner import FETCH_S
from edge_runtime.batch_store import BatchStore
from schemas.batch import BatchRecord
from tests.support.batch import batch_stack, jsonl, lines, wait_final, wait_for, wait_status
from tests.support.cli import run_cli
from tests.support.stack import Stack, StackFactory, config_from
from tests.support.upstream import FakeOpenAI, Scripted


@pytest.fixture
async def stack(nats_url: str, fake_openai: FakeOpenAI, make_stack: StackFactory) -> Stack:
    config = config_from(f"""
        [cache]
        enabled = false

        [resilience]
        max_attempts = 1

        [batch]
        poll_s = 0.1
        max_deliver = 2
        backoff_s = [0.05]

        [providers.mock]
        kind = "mock"

        [providers.up]
        kind = "openai_compatible"
        base_url = "{fake_openai.base_url}"

        [models.mock]
        deployments = [{{ provider = "mock" }}]

        [models.flaky]
        deployments = [{{ provider = "up" }}]
    """)
    return await batch_stack(make_stack, nats_url, config)


async def test_openai_sdk_batch_round_trip(stack: Stack) -> None:
    """files.create -> batches.create -> retrieve -> files.content: one output line per input."""
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    rows = lines(25)
    uploaded = await sdk.files.create(
        file=("input.jsonl", io.BytesIO(jsonl(rows))), purpose="batch"
    )
    assert uploaded.bytes == len(jsonl(rows))
    batch = await sdk.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert batch.status == "validating"
    await wait_final(stack.nc, batch.id)
    done = await sdk.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (
        done.request_counts.total,
        done.request_counts.completed,
        done.request_counts.failed,
    ) == (25, 25, 0)
    assert done.output_file_id is not None
    assert done.error_file_id is None
    assert done.metadata == {"job": "nightly"}
    content = await sdk.files.content(done.output_file_id)
    out = [json.loads(line) for line in content.text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == sorted(r["custom_id"] for r in rows)
    first = next(o for o in out if o["custom_id"] == "req-3")
    assert first["response"]["status_code"] == 200
    assert "line 3" in first["response"]["body"]["choices"][0]["message"]["content"]
    listed = [b.id async for b in sdk.batches.list(limit=100)]
    assert batch.id in listed
    assert (await sdk.files.retrieve(uploaded.id)).filename == "input.jsonl"
    await sdk.files.delete(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.files.retrieve(uploaded.id)


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json}\n", "invalid_json_line"),
        (jsonl(lines(2, prefix="dup") + lines(1, prefix="dup")), "duplicate_custom_id"),
        (jsonl([{**lines(1)[0], "url": "/v1/embeddings"}]), "mismatched_url"),
        (b"\n\n", "empty_file"),
        (
            b'{"custom_id": "deep", "method": "POST", "url": "/v1/chat/completions", "body": '
            b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}\n",
            "invalid_json_line",
        ),
    ],
    ids=["bad-json", "duplicate-custom-id", "wrong-url", "empty", "nested-too-deeply"],
)
async def test_validation_failures_fail_the_batch(stack: Stack, content: bytes, code: str) -> None:
    """Invalid input files make the batch `failed` with an errors list naming the line."""
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    uploaded = await sdk.files.create(file=("bad.jsonl", io.BytesIO(content)), purpose="batch")
    batch = await sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    final = await wait_final(stack.nc, batch.id)
    assert final["status"] == "failed"
    assert final["failed_at"] is not None
    assert code in {e["code"] for e in final["errors"]["data"]}


async def test_bad_create_parameters_are_400s(stack: Stack) -> None:
    """Unknown file, endpoint or window: an OpenAI error, no batch."""
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        await sdk.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    uploaded = await sdk.files.create(
        file=("x.jsonl", io.BytesIO(jsonl(lines(1)))), purpose="batch"
    )
    with pytest.raises(openai.BadRequestError):
        await sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h"
        )
    with pytest.raises(openai.BadRequestError):
        await sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="1m"
        )  # type: ignore[arg-type]


async def test_nats_native_submit_with_events(stack: Stack) -> None:
    """llm.batch.submit with inline lines; progress and the final state arrive as events."""
    reply = await stack.nc.request(
        "llm.batch.submit",
        msgspec.json.encode(
            {"lines": lines(10), "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        ),
        timeout=10,
    )
    batch = msgspec.json.decode(reply.data)
    final = await wait_final(stack.nc, batch["id"])
    assert final["status"] == "completed"
    assert final["request_counts"] == {"total": 10, "completed": 10, "failed": 0}


async def test_dead_lettered_lines_go_to_the_error_file(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """A line that keeps failing (retryable) ends in the error file with its last error;
    a non-retryable failure goes there at once; the rest complete."""
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    fake_openai.default = Scripted(status=503, body={"error": {"message": "always down"}})
    rows = lines(3, model="flaky", prefix="down") + lines(2)
    reply = await stack.nc.request(
        "llm.batch.submit",
        msgspec.json.encode({"lines": rows, "endpoint": "/v1/chat/completions"}),
        timeout=10,
    )
    final = await wait_final(stack.nc, msgspec.json.decode(reply.data)["id"])
    assert final["status"] == "completed"
    assert final["request_counts"] == {"total": 5, "completed": 2, "failed": 3}
    errors = (await sdk.files.content(final["error_file_id"])).text.splitlines()
    dead = [json.loads(e) for e in errors]
    assert sorted(d["custom_id"] for d in dead) == ["down-0", "down-1", "down-2"]
    assert all(d["response"]["status_code"] == 502 for d in dead)
    assert all("always down" in d["response"]["body"]["error"]["message"] for d in dead)
    assert len(fake_openai.received) == 3 * 2  # max_deliver = 2 deliveries each


async def test_cancel_stops_new_lines(stack: Stack, fake_openai: FakeOpenAI) -> None:
    """Cancel stops queued lines at once; the batch ends `cancelled` with what was done."""
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    fake_openai.default = Scripted(delay_s=0.2)
    reply = await stack.nc.request(
        "llm.batch.submit",
        msgspec.json.encode(
            {"lines": lines(400, model="flaky"), "endpoint": "/v1/chat/completions"}
        ),
        timeout=10,
    )
    batch_id = msgspec.json.decode(reply.data)["id"]
    await wait_status(stack.nc, batch_id, {"in_progress"})
    cancelled = await sdk.batches.cancel(batch_id)
    assert cancelled.status == "cancelling"
    final = await wait_final(stack.nc, batch_id)
    assert final["status"] == "cancelled"
    assert final["cancelled_at"] is not None
    assert len(fake_openai.received) < 400
    with pytest.raises(openai.APIStatusError):
        await sdk.batches.cancel(batch_id)  # already final


async def test_expired_batch_keeps_done_lines(nats_url: str, make_stack: StackFactory) -> None:
    """A batch whose window passes while it is partly done ends expired: the lines already
    done keep their results in the output file, the rest are expired in the error file."""
    config = config_from("""
        [cache]
        enabled = false
        [batch]
        poll_s = 0.1
        max_deliver = 100000   # the unrunnable lines keep coming back until the window ends
        backoff_s = [0.05]
        [breaker]   # no worker trips the ghost's breaker: its Retry-After is their wait
        open_s = 0.2
        open_max_s = 0.4
        [providers.mock]
        kind = "mock"
        [providers.ghost]   # no worker serves it: its lines cannot finish (retryable 503)
        kind = "mock"
        [models.mock]
        deployments = [{ provider = "mock" }]
        [models.orphan]
        deployments = [{ provider = "ghost" }]
    """)
    stack = await batch_stack(make_stack, nats_url, config, providers=["mock"])
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key="x", max_retries=0)
    rows = lines(3, prefix="done") + lines(2, model="orphan", prefix="stuck")
    reply = await stack.nc.request(
        "llm.batch.submit",
        msgspec.json.encode({"lines": rows, "endpoint": "/v1/chat/completions"}),
        timeout=10,
    )
    batch_id = msgspec.json.decode(reply.data)["id"]
    partly = await wait_for(stack.nc, batch_id, lambda b: b["request_counts"]["completed"] == 3)
    assert partly["status"] == "in_progress"

    def past(record: BatchRecord) -> BatchRecord:  # time passing, without waiting for it
        record.batch.expires_at = record.batch.created_at - 1
        return record

    await (await BatchStore.open(stack.nc)).update(batch_id, past)
    final = await wait_final(stack.nc, batch_id)
    assert final["status"] == "expired"
    assert final["request_counts"] == {"total": 5, "completed": 3, "failed": 2}
    output = (await sdk.files.content(final["output_file_id"])).text.splitlines()
    done = {json.loads(line)["custom_id"]: json.loads(line) for line in output}
    assert set(done) == {"done-0", "done-1", "done-2"}
    assert all(d["response"]["status_code"] == 200 for d in done.values())
    errors = [
        json.loads(e) for e in (await sdk.files.content(final["error_file_id"])).text.splitlines()
    ]
    assert {e["custom_id"]: e["error"]["code"] for e in errors} == {
        "stuck-0": "batch_expired",
        "stuck-1": "batch_expired",
    }


@pytest.mark.process
async def test_cli_submit_wait_and_results(stack: Stack, nats_url: str, tmp_path: Any) -> None:
    """`llm-edge batch submit --wait` shows progress and ends completed; `results -o` writes
    one line per request."""

    source = tmp_path / "in.jsonl"
    source.write_bytes(jsonl(lines(40)))

    async def cli(*args: str) -> tuple[str, str]:
        return await run_cli("batch", "--nats-url", nats_url, *args)

    out, err = await cli("submit", str(source), "--wait")
    batch_id = out.split()[0]
    assert "40/40" in err  # the progress line reached the end
    assert json.loads(out[out.index("{") :])["status"] == "completed"
    target = tmp_path / "out.jsonl"
    await cli("results", batch_id, "-o", str(target))
    assert len(target.read_text().splitlines()) == 40
    listing, _ = await cli("list")
    assert batch_id in listing


async def queued_batch(stack: Stack, n: int) -> tuple[BatchStore, str]:
    """A batch of ``n`` queued lines, with the stack's own runner stopped (the test's runner
    is the only consumer; the fixture restarts the stack's)."""
    from schemas.batch import BatchObject, BatchStatus

    engine = stack.brokers[0].batch
    assert engine is not None
    await engine.runner.stop()
    store = await BatchStore.open(stack.nc)
    batch_id = f"batch_own{uuid.uuid4().hex[:8]}"
    await store.create(
        BatchRecord(
            batch=BatchObject(
                id=batch_id,
                endpoint="/v1/chat/completions",
                input_file_id="none",
                completion_window="24h",
                status=BatchStatus.IN_PROGRESS,
                created_at=0,
                expires_at=2**40,
            )
        )
    )
    await store.publish_lines(
        batch_id, ((r["custom_id"], json.dumps(r).encode()) for r in lines(n))
    )
    return store, batch_id


async def test_rate_limited_lines_wait_instead_of_failing(stack: Stack) -> None:
    """A line answered 429 waits for Retry-After and runs again, past max_deliver: a tenant's
    rate limit slows a batch down, it never dead-letters its lines."""
    from broker.batch.runner import BatchRunner
    from broker.batch.settings import BatchSettings
    from broker.replies.sinks import ReplySink
    from broker.request import Reply

    store, batch_id = await queued_batch(stack, 3)
    attempts: dict[bytes, int] = {}
    all_done = asyncio.Event()

    async def handle(
        data: bytes, hdrs: dict[str, str], sink: ReplySink, tenant: object = None
    ) -> None:
        attempts[data] = attempts.get(data, 0) + 1
        if attempts[data] <= 4:  # refused 4 times: twice max_deliver
            await sink.error(Reply(429, b"{}", {"Retry-After": "0.02"}), {}, streaming=False)
            return
        await sink.whole(Reply(200, b'{"ok":true}'), {})
        if sum(attempts.values()) == 15:
            all_done.set()

    runner = BatchRunner(stack.nc, store, handle, BatchSettings(max_deliver=2))
    await runner.start()
    try:
        await asyncio.wait_for(all_done.wait(), 20)
    finally:
        await runner.stop()  # lets the lines in flight store their results
        await stack.brokers[0].batch.runner.start()  # type: ignore[union-attr]
    assert sorted(attempts.values()) == [5, 5, 5]
    assert dict(runner.progress[batch_id]) == {"completed": 3}


async def test_runner_yields_to_interactive_traffic(
    nats_url: str, make_stack: StackFactory
) -> None:
    """While interactive llm.chat requests arrive, the broker's batch runner (told by the
    subject endpoints, as the service wires it) keeps only yield_concurrency lines at the
    provider; when they stop it goes back to full concurrency."""
    config = config_from("""
        [cache]
        enabled = false
        [batch]
        poll_s = 0.1
        concurrency = 20
        yield_concurrency = 2
        [providers.mock]
        kind = "mock"
        [providers.held]     # no worker: the test answers the batch lines itself
        kind = "mock"
        [models.mock]
        deployments = [{ provider = "mock" }]
        [models.held]
        deployments = [{ provider = "held" }]
    """)
    answer = msgspec.json.encode(
        {
            "id": "chatcmpl-held",
            "object": "chat.completion",
            "created": 1741569952,
            "model": "held",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
        }
    )
    stack = await batch_stack(make_stack, nats_url, config, providers=["mock"])
    arrived: asyncio.Queue[Msg] = asyncio.Queue()
    await stack.nc.subscribe("llm.provider.held", cb=arrived.put)
    stop = asyncio.Event()
    chat = msgspec.json.encode({"model": "mock", "messages": [{"role": "user", "content": "hi"}]})

    async def interactive() -> None:
        while not stop.is_set():
            await stack.nc.request("llm.chat", chat, timeout=10)

    # Interactive traffic for longer than one fetch: a fetch the runner began before it
    # (uncapped, up to FETCH_S long) has ended, so every line is pulled under the cap.
    loop = asyncio.get_running_loop()
    begun = loop.time()
    while loop.time() - begun <= FETCH_S:
        await stack.nc.request("llm.chat", chat, timeout=10)
    lane = asyncio.ensure_future(interactive())
    reply = await stack.nc.request(
        "llm.batch.submit",
        msgspec.json.encode({"lines": lines(30, model="held"), "endpoint": "/v1/chat/completions"}),
        timeout=10,
    )
    batch_id = msgspec.json.decode(reply.data)["id"]
    held: list[Msg] = []
    peak_while_busy = answered = 0
    try:
        while answered < 8:  # hold two lines, answer the oldest, see what comes next
            held.append(await asyncio.wait_for(arrived.get(), 10))
            while not arrived.empty():
                held.append(arrived.get_nowait())
            peak_while_busy = max(peak_while_busy, len(held))
            if len(held) >= 2:
                await held.pop(0).respond(answer)
                answered += 1
    finally:
        stop.set()
        await lane
    async with asyncio.timeout(15):  # interactive traffic stopped: back to full speed
        while len(held) <= 2:
            held.append(await arrived.get())
    assert peak_while_busy == 2

    async def answer_the_rest() -> None:
        for msg in held:
            await msg.respond(answer)
        while True:
            await (await arrived.get()).respond(answer)

    responder = asyncio.ensure_future(answer_the_rest())
    try:
        final = await wait_final(stack.nc, batch_id)
    finally:
        responder.cancel()
    assert final["request_counts"] == {"total": 30, "completed": 30, "failed": 0}


async def test_batch_lines_metric_counts_each_outcome(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """llm_edge_batch_lines_total moves by one per finished line, under its outcome."""
    fake_openai.default = Scripted(status=400, body={"error": {"message": "refused"}})

    def count(state: str) -> float:
        return REGISTRY.get_sample_value("llm_edge_batch_lines_total", {"state": state}) or 0.0

    before = {state: count(state) for state in ("completed", "failed")}
    rows = lines(3) + lines(2, model="flaky", prefix="refused")
    reply = await stack.nc.request(
        "llm.batch.submit",
        msgspec.json.encode({"lines": rows, "endpoint": "/v1/chat/completions"}),
        timeout=10,
    )
    final = await wait_final(stack.nc, msgspec.json.decode(reply.data)["id"])
    assert final["request_counts"] == {"total": 5, "completed": 3, "failed": 2}
    assert count("completed") - before["completed"] == 3
    assert count("failed") - before["failed"] == 2
