"""Crash safety: SIGKILL the broker and worker processes mid-batch, restart, lose nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.kv import KeyValue

from edge_runtime.batch_store import BatchStore
from edge_runtime.process import close_quietly, connect
from schemas.batch import BatchRecord, FileObject
from tests.support.batch import lines, wait_final, wait_status

pytestmark = pytest.mark.process

#: Enough for the kill to land mid-way with room to spare: it comes on the first progress
#: event past 300 lines, and the other 700 take the 16 lanes of 20 ms calls over 0.9 s.
LINES = 1000
CONFIG = """
[cache]
enabled = false

[batch]
ack_wait_s = 2          # a killed broker's lines come back after 2 s
poll_s = 0.2
concurrency = 16

[providers.mock]
kind = "mock"
latency_ms = 20

[models.mock]
deployments = [{ provider = "mock" }]
"""


def spawn(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LLM_EDGE_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "llm_edge", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def config_file() -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write(CONFIG)
    return handle.name


async def test_sigkill_mid_batch_loses_and_duplicates_nothing(
    nats_url: str, config_file: str
) -> None:
    """Kill -9 broker and worker while a 1,000-line batch runs; after a restart the batch
    completes with exactly one result per custom_id."""
    nc = await connect(nats_url, "crash-test")
    await BatchStore.open(nc)
    await nc.jetstream().purge_stream("LLM_EDGE_BATCH_LINES")
    common = ["--nats-url", nats_url, "--config", config_file]
    procs = [spawn("broker", *common), spawn("worker", "mock", *common)]
    try:
        await wait_ready(nc)
        reply = await nc.request(
            "llm.batch.submit",
            msgspec.json.encode({"lines": lines(LINES), "endpoint": "/v1/chat/completions"}),
            timeout=30,
        )
        batch_id = msgspec.json.decode(reply.data)["id"]
        progress = await first_progress(nc, batch_id)
        assert 0 < progress < LINES, "the batch must be killed mid-way"
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        procs = [spawn("broker", *common), spawn("worker", "mock", *common)]
        await wait_ready(nc)
        final = await wait_final(nc, batch_id)
        assert final["status"] == "completed"
        assert final["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
        store = await BatchStore.open(nc)
        with tempfile.TemporaryFile() as out:
            await store.read_file(final["output_file_id"], out)  # type: ignore[arg-type]
            out.seek(0)
            ids = Counter(json.loads(line)["custom_id"] for line in out)
        assert len(ids) == LINES
        assert set(ids.values()) == {1}
        assert set(ids) == {f"req-{i}" for i in range(LINES)}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        await close_quietly(nc)
        Path(config_file).unlink()  # noqa: ASYNC240  (a temp file)


async def wait_ready(nc: Client) -> None:
    """Until a broker answers its ping (it answers once everything it runs is serving)."""
    for _ in range(200):
        try:
            await nc.request("llm.broker.ping", b"", timeout=0.5)
        except (NoRespondersError, NatsTimeout):
            await asyncio.sleep(0.05)  # a process starting: nothing to subscribe to yet
        else:
            return
    raise AssertionError("no broker came up")


async def first_progress(nc: Client, batch_id: str) -> int:
    """Completed count from the first progress event past a few hundred lines."""
    sub = await nc.subscribe(f"llm.batch.events.*.{batch_id}")
    try:
        while True:
            event = msgspec.json.decode((await sub.next_msg(timeout=60)).data)
            done = event["request_counts"]["completed"]
            if done >= 300:
                return int(done)
    finally:
        await sub.unsubscribe()


OUTAGE_CONFIG = """
[cache]
enabled = false

[batch]
poll_s = 0.2
max_deliver = 2
backoff_s = [0.1, 0.2]

[breaker]           # no worker trips the breaker: its Retry-After is the lines' wait
open_s = 0.2
open_max_s = 0.4

[providers.mock]
kind = "mock"

[models.mock]
deployments = [{ provider = "mock" }]
"""
NAK_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.LLM_EDGE_BATCH_LINES.*"


async def test_worker_outage_delays_lines_instead_of_failing_them(
    nats_url: str, tmp_path: Path
) -> None:
    """With no worker running, lines answered 503 wait with backoff past max_deliver; once a
    worker process starts, every line completes and the error file stays empty."""
    config = tmp_path / "outage.toml"
    config.write_text(OUTAGE_CONFIG)
    nc = await connect(nats_url, "outage-test")
    await BatchStore.open(nc)
    await nc.jetstream().purge_stream("LLM_EDGE_BATCH_LINES")
    naks = await nc.subscribe(NAK_ADVISORY)
    common = ["--nats-url", nats_url, "--config", str(config)]
    procs = [spawn("broker", *common)]
    try:
        await wait_ready(nc)
        count = 20
        reply = await nc.request(
            "llm.batch.submit",
            msgspec.json.encode({"lines": lines(count), "endpoint": "/v1/chat/completions"}),
            timeout=30,
        )
        batch_id = msgspec.json.decode(reply.data)["id"]
        waited: set[int] = set()  # lines refused more often than max_deliver, still queued
        while len(waited) < count:
            advisory = json.loads((await naks.next_msg(timeout=30)).data)
            if advisory["deliveries"] > 2:
                waited.add(advisory["stream_seq"])
        procs.append(spawn("worker", "mock", *common))
        final = await wait_final(nc, batch_id)
        assert final["status"] == "completed"
        assert final["request_counts"] == {"total": count, "completed": count, "failed": 0}
        assert final["error_file_id"] is None
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        await naks.unsubscribe()
        await close_quietly(nc)


TAKEOVER_CONFIG = """
[cache]
enabled = false

[batch]
poll_s = 0.2
lease_s = 1

[providers.mock]
kind = "mock"

[models.mock]
deployments = [{ provider = "mock" }]
"""
TAKEOVER_LINES = 20_000


async def test_broker_killed_mid_validation_is_taken_over_promptly(
    nats_url: str, tmp_path: Path
) -> None:
    """SIGKILL the broker that claimed a batch's validation: another broker process finishes
    it within the lease (1 s here), queueing every line exactly once."""
    config = tmp_path / "takeover.toml"
    config.write_text(TAKEOVER_CONFIG)
    nc = await connect(nats_url, "takeover-test")
    store = await BatchStore.open(nc)
    await nc.jetstream().purge_stream("LLM_EDGE_BATCH_LINES")
    data = b"".join(json.dumps(row).encode() + b"\n" for row in lines(TAKEOVER_LINES))
    file = FileObject(
        id=f"file-takeover-{uuid.uuid4().hex[:8]}",
        bytes=len(data),
        created_at=0,
        filename="takeover.jsonl",
        purpose="batch",
    )
    await store.put_file(file, data)
    records = await (await nc.jetstream().key_value("llm_edge_batches")).watch("batch.*")
    common = ["--nats-url", nats_url, "--config", str(config)]
    procs = [spawn("broker", *common)]
    batch_id = ""
    try:
        await wait_ready(nc)
        reply = await nc.request(
            "llm.batch.create",
            msgspec.json.encode({"input_file_id": file.id, "endpoint": "/v1/chat/completions"}),
            timeout=10,
        )
        batch_id = msgspec.json.decode(reply.data)["id"]
        async with asyncio.timeout(10):  # the first broker claims validation ...
            async for entry in records:
                if claimed(entry, batch_id):
                    break
        procs[0].send_signal(signal.SIGKILL)  # ... and dies holding it
        procs[0].wait()
        killed = await store.get(batch_id)
        assert killed is not None
        assert killed.batch.status == "validating", "the kill must come mid-validation"
        procs.append(spawn("broker", *common))
        await wait_ready(nc)
        taken_over = await wait_status(nc, batch_id, {"in_progress"}, patience_s=20)
        assert taken_over["request_counts"]["total"] == TAKEOVER_LINES
        assert await store.remaining(batch_id) == TAKEOVER_LINES  # no line queued twice
    finally:
        await records.stop()  # type: ignore[no-untyped-call]
        if batch_id:
            with contextlib.suppress(Exception):
                await store.purge_lines(batch_id)
                await nc.request(
                    "llm.batch.cancel", msgspec.json.encode({"id": batch_id}), timeout=5
                )
        for proc in procs:
            proc.kill()
            proc.wait()
        await close_quietly(nc)


def claimed(entry: KeyValue.Entry | None, batch_id: str) -> bool:
    """Whether a batches-bucket update is ``batch_id``'s record with a lease taken."""
    if entry is None or entry.key != f"batch.{batch_id}" or not entry.value:
        return False
    return bool(msgspec.json.decode(entry.value, type=BatchRecord).lease_owner)
