"""Crash safety of background responses.

On a translated upstream: SIGKILL the broker mid-call and then the worker, restart both: the
response completes once and the upstream was called once. On OpenAI, where it runs as a
background response of OpenAI's own: SIGKILL the worker (and the broker) while OpenAI holds
it: after a restart it completes under our id and OpenAI got exactly one create."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import KeyNotFoundError, NoKeysError

from edge_runtime.embedded import EmbeddedNats
from edge_runtime.process import close_quietly, connect
from schemas.jetstream import ONCE_BUCKET
from tests.support.upstream import FakeOpenAI, Scripted, running_fake

pytestmark = pytest.mark.process

#: The longest any step of the drill may take.
STEP_S = 30.0


def spawn(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LLM_EDGE_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "llm_edge", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def config_file(request: pytest.FixtureRequest) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp()) / "config.toml"
    yield path
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def test_background_response_survives_sigkill_of_broker_and_worker(
    own_nats: EmbeddedNats, config_file: Path
) -> None:
    """A translated upstream: broker killed while the upstream holds the call, the worker
    killed after the call ended: after a restart the job runs again, the workers'
    once-claim answers it from the first call, and the response completes; the upstream
    saw exactly one call."""
    async with running_fake() as upstream:
        release = asyncio.Event()
        upstream.script.append(Scripted(delay_s=STEP_S * 2, release=release))
        toml = f"""
[cache]
enabled = false
[batch]
enabled = false
[responses]
ack_wait_s = 2          # a killed broker's job comes back after 2 s
[providers.oai]
kind = "openai_compatible"
base_url = "{upstream.base_url}"
[models.gpt]
deployments = [{{ provider = "oai", model = "gpt-4.1" }}]
"""
        config_file.write_text(toml)  # noqa: ASYNC240  (a small temp file)
        common = ["--nats-url", own_nats.url, "--config", str(config_file)]
        nc = await connect(own_nats.url, "crash-test")
        # the broker first: a worker binds the once-claims bucket the broker creates
        procs = [spawn("broker", *common)]
        try:
            await wait_ready(nc)
            procs.append(spawn("worker", "oai", *common))
            body = msgspec.json.encode({"model": "gpt", "input": "hold", "background": True})
            reply = await nc.request("llm.responses", body, timeout=STEP_S)
            queued = msgspec.json.decode(reply.data)
            assert queued["status"] == "queued"
            await asyncio.wait_for(calls(upstream, 1), STEP_S)
            broker, worker = procs
            broker.send_signal(signal.SIGKILL)
            broker.wait()
            release.set()  # the worker finishes the call and keeps its answer
            await asyncio.wait_for(answer_kept(nc), STEP_S)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            procs = [spawn("broker", *common), spawn("worker", "oai", *common)]
            done = await asyncio.wait_for(finished(nc, queued["id"]), STEP_S)
            assert done["status"] == "completed"
            assert done["id"] == queued["id"]
            assert done["output"][0]["content"][0]["text"] == "upstream says hi to gpt-4.1"
            assert len(upstream.received) == 1
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
            await close_quietly(nc)


def _openai_config(upstream: FakeOpenAI) -> str:
    return f"""
[cache]
enabled = false
[batch]
enabled = false
[responses]
ack_wait_s = 2          # a killed broker's job comes back after 2 s
poll_s = 0.05
[providers.oai]
kind = "openai"
base_url = "{upstream.base_url}"
[[models.gpt.deployments]]
provider = "oai"
model = "gpt-4.1"
input_price = 2.0
output_price = 8.0
"""


@pytest.mark.parametrize("kill_broker", [False, True], ids=["worker", "worker-and-broker"])
async def test_background_response_at_openai_survives_sigkill(
    own_nats: EmbeddedNats, config_file: Path, kill_broker: bool
) -> None:
    """OpenAI holds the background response; its worker is SIGKILLed (and its broker too):
    restarted, polling resumes on the same OpenAI id, the response completes under our id,
    OpenAI got exactly one create POST, and the response is priced at the prices of the
    deployment that took the create (kept in it by the broker that was killed)."""
    async with running_fake() as upstream:
        upstream.background.hold = asyncio.Event()
        config_file.write_text(_openai_config(upstream))  # noqa: ASYNC240  (a small temp file)
        common = ["--nats-url", own_nats.url, "--config", str(config_file)]
        nc = await connect(own_nats.url, "crash-test")
        procs = [spawn("broker", *common)]
        try:
            await wait_ready(nc)
            procs.append(spawn("worker", "oai", *common))
            body = msgspec.json.encode({"model": "gpt", "input": "hold", "background": True})
            reply = await nc.request("llm.responses", body, timeout=STEP_S)
            queued = msgspec.json.decode(reply.data)
            assert queued["status"] == "queued"
            # OpenAI runs it: the broker reads it there through the worker
            await asyncio.wait_for(upstream.background.read.wait(), STEP_S)
            broker, worker = procs
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            procs = [broker]
            if kill_broker:
                broker.send_signal(signal.SIGKILL)
                broker.wait()
                procs = [spawn("broker", *common)]
            upstream.background.read.clear()
            procs.append(spawn("worker", "oai", *common))
            await asyncio.wait_for(upstream.background.read.wait(), STEP_S)  # read again
            upstream.background.hold.set()
            done = await asyncio.wait_for(finished(nc, queued["id"]), STEP_S)
            assert done["status"] == "completed"
            assert done["id"] == queued["id"]
            assert done["output"][0]["content"][0]["text"] == "upstream says hi to gpt-4.1"
            creates = [r for r in upstream.received if r.method == "POST"]
            assert [r.path for r in creates] == ["/v1/responses"]
            assert creates[0].body["background"] is True
            assert set(upstream.background.runs) == {"resp_bg_1"}
            query = msgspec.json.encode({"id": queued["id"]})
            read = await nc.request("llm.responses.get", query, timeout=STEP_S)
            assert (read.headers or {}).get("Llm-Cost-Usd") == f"{(36 * 2 + 87 * 8) / 1e6:.6f}"
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
            await close_quietly(nc)


async def calls(upstream: FakeOpenAI, count: int) -> None:
    """Until the upstream received ``count`` calls."""
    while len(upstream.received) < count:  # noqa: ASYNC110  (the fake has no arrival event)
        await asyncio.sleep(0.02)


async def answer_kept(nc: Client) -> None:
    """Until a worker stored a call's answer in the once-claims bucket."""
    kv = await nc.jetstream().key_value(ONCE_BUCKET)
    while True:
        with contextlib.suppress(KeyNotFoundError, NoKeysError, NatsTimeout):
            for key in await kv.keys():
                entry = await kv.get(key)
                if entry.value and msgspec.msgpack.decode(entry.value).get("status"):
                    return
        await asyncio.sleep(0.05)  # the bucket announces nothing: read it again


async def finished(nc: Client, response_id: str) -> dict[str, object]:
    """Poll the stored response until it is final."""
    query = msgspec.json.encode({"id": response_id})
    while True:
        with contextlib.suppress(NoRespondersError, NatsTimeout):
            reply = await nc.request("llm.responses.get", query, timeout=2)
            response: dict[str, object] = msgspec.json.decode(reply.data)
            if response.get("status") in {"completed", "failed", "cancelled", "incomplete"}:
                return response
        await asyncio.sleep(0.05)  # polled, as an API client does


async def wait_ready(nc: Client) -> None:
    """Until a broker answers its ping (it answers once everything it runs is serving)."""
    for _ in range(400):
        try:
            await nc.request("llm.broker.ping", b"", timeout=0.5)
        except (NoRespondersError, NatsTimeout):
            await asyncio.sleep(0.05)  # a process starting: nothing to subscribe to yet
        else:
            return
    raise AssertionError("no broker came up")
