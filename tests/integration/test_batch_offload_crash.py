"""Crash safety of native batch offload: SIGKILL the broker while a provider batch is in
flight; after a restart the batch resumes polling, merges once and loses nothing."""

from __future__ import annotations

import asyncio
import io
import json
import signal
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from edge_runtime.batch_store import BatchStore
from edge_runtime.process import close_quietly, connect
from schemas.batch import BatchRecord
from schemas.offload import OffloadState
from tests.integration.test_batch_crash import spawn, wait_ready
from tests.support.batch import wait_final
from tests.support.fake_provider_batches import running_batches

pytestmark = pytest.mark.process

LINES = 200
CONFIG = """
[cache]
enabled = false

[batch]
poll_s = 0.05
lease_s = 1             # the killed broker's claim on the batch lapses within a second
offload = "auto"
offload_poll_s = 0.05

[providers.openai]
kind = "openai"
base_url = "{base_url}"
api_key_env = "OPENAI_KEY"

[models.gpt]
deployments = [{{ provider = "openai", model = "gpt-4o-mini" }}]
"""


def rows() -> list[dict[str, object]]:
    return [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt",
                "messages": [
                    {"role": "user", "content": f"line {i}" + (" FAIL" if i % 20 == 0 else "")}
                ],
            },
        }
        for i in range(LINES)
    ]


async def test_broker_killed_while_provider_batch_runs_merges_once(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kill -9 the broker while its OpenAI batch is in progress; a new broker process resumes
    polling the same provider batch (none is submitted again), merges it once, and re-runs only
    the lines the provider failed: every custom_id exactly once."""
    monkeypatch.setenv("OPENAI_KEY", "sk-test")
    async with running_batches(polls=10**9) as fake:  # in progress until the test says
        config = tmp_path / "offload.toml"
        config.write_text(CONFIG.format(base_url=fake.base_url))
        nc = await connect(nats_url, "offload-crash-test")
        await BatchStore.open(nc)
        await nc.jetstream().purge_stream("LLM_EDGE_BATCH_LINES")
        records = await (await nc.jetstream().key_value("llm_edge_batches")).watch("batch.*")
        common = ["--nats-url", nats_url, "--config", str(config)]
        procs = [spawn("broker", *common), spawn("worker", "openai", *common)]
        try:
            await wait_ready(nc)
            body = {"lines": rows(), "endpoint": "/v1/chat/completions", "completion_window": "24h"}
            reply = await nc.request("llm.batch.submit", msgspec.json.encode(body), timeout=30)
            batch_id = msgspec.json.decode(reply.data)["id"]
            async with asyncio.timeout(30):  # until the provider batch is in flight and polled
                async for entry in records:
                    if entry is None or entry.key != f"batch.{batch_id}" or not entry.value:
                        continue
                    record = msgspec.json.decode(entry.value, type=BatchRecord)
                    if record.offload and record.offload[0].state is OffloadState.RUNNING:
                        break
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait()
            assert len(fake.batches) == 1
            assert not fake.sync_calls, "no line may have run on the normal path yet"
            fake.polls = 0  # the provider batch ends at its next status read
            procs[0] = spawn("broker", *common)
            await wait_ready(nc)
            final = await wait_final(nc, batch_id)
            assert final["status"] == "completed"
            assert final["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
            store = await BatchStore.open(nc)
            buffer = io.BytesIO()
            await store.read_file(final["output_file_id"], buffer)
            out = [json.loads(line) for line in buffer.getvalue().splitlines()]
            ids = Counter(line["custom_id"] for line in out)
            assert set(ids) == {f"req-{i}" for i in range(LINES)}
            assert set(ids.values()) == {1}
            failed = {f"req-{i}" for i in range(0, LINES, 20)}
            assert {line["custom_id"] for line in out if "offload" not in line} == failed
            assert list(fake.batches) == ["batch_openai1"]  # resumed, never submitted again
            assert fake.sync_calls["openai"] == len(failed)
            assert final["offload"] == {
                "providers": {"openai": LINES},
                "completed": {"openai": LINES - len(failed)},
                "fallback": len(failed),
            }
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
            await records.stop()
            await close_quietly(nc)
