"""Operations: /metrics moves with real traffic; a rolling restart of real processes under
load loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout

from edge_runtime.process import close_quietly, connect
from tests.support.servers import EmbeddedNats
from tests.support.stack import StackFactory, config_from

CONFIG = """
    [cache]
    l2 = "off"
    [batch]
    enabled = false
    [providers.mock]
    kind = "mock"
    latency_ms = 20
    [models.metered]
    deployments = [{ provider = "mock" }]
    [providers.held]     # no worker: the test answers llm.provider.held itself, when it likes
    kind = "mock"
    [models.held]
    deployments = [{ provider = "held" }]
"""


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_endpoint_counts_real_traffic(
    nats_url: str, make_stack: StackFactory
) -> None:
    """After requests through the bridge, /metrics shows them: requests by provider and status
    (hits under provider "cache"), cache hits and misses by tier, request duration, and the
    in-flight gauge one higher while a request waits for its provider, back after."""
    stack = await make_stack(nats_url, config_from(CONFIG), providers=["mock"], bridge=True)
    assert stack.http is not None
    root = stack.base_url.removesuffix("/v1")

    async def metrics() -> str:
        assert stack.http is not None
        return (await stack.http.get(f"{root}/metrics")).text

    before = await metrics()
    body = {"model": "metered", "messages": [{"role": "user", "content": "count me"}]}
    for _ in range(3):
        assert (await stack.http.post("/chat/completions", json=body)).status_code == 200
    await stack.http.post("/chat/completions", json={"model": "metered"})  # a 400
    response = await stack.http.get(f"{root}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    requests = "llm_edge_requests_total"
    assert delta(requests, provider="mock", model="metered", status="200") == 1
    assert delta(requests, provider="cache", model="metered", status="200") == 2
    assert delta("llm_edge_requests_total", model="", status="400") == 1
    assert delta("llm_edge_cache_hits_total", tier="l1") == 2
    assert delta("llm_edge_cache_misses_total", tier="l1") >= 1
    duration = "llm_edge_request_duration_seconds_count"
    assert delta(duration, provider="mock", model="metered") == 1
    assert delta("llm_edge_overhead_seconds_count") == 1

    idle = sample(before, "llm_edge_in_flight")
    assert sample(after, "llm_edge_in_flight") == idle  # every request above has ended
    arrived: asyncio.Queue[Msg] = asyncio.Queue()
    await stack.nc.subscribe("llm.provider.held", cb=arrived.put)
    held = {"model": "held", "messages": [{"role": "user", "content": "wait"}]}
    answer = asyncio.create_task(stack.http.post("/chat/completions", json=held))
    forwarded = await asyncio.wait_for(arrived.get(), 10)  # the broker is waiting on it
    assert sample(await metrics(), "llm_edge_in_flight") == idle + 1
    await forwarded.respond(msgspec.json.encode(completion("held")))
    assert (await asyncio.wait_for(answer, 10)).status_code == 200
    assert sample(await metrics(), "llm_edge_in_flight") == idle


def completion(model: str) -> dict[str, object]:
    """A provider worker's whole answer."""
    return {
        "id": "chatcmpl-held",
        "object": "chat.completion",
        "created": 1741569952,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "released"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


async def _traffic(nc: Client, results: list[int], stop: asyncio.Event, lane: int) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        body = msgspec.json.encode(
            {
                "model": "metered",
                "messages": [{"role": "user", "content": f"lane {lane} request {i}"}],
            }
        )
        reply = await nc.request(
            "llm.chat", body, timeout=10, headers={"Cache-Control": "no-cache, no-store"}
        )
        results.append(int((reply.headers or {}).get("Llm-Status", "0")))


def spawn(*args: str) -> subprocess.Popen[bytes]:
    """``python -m llm_edge ARGS`` as its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "llm_edge", *args],
        env={**os.environ, "LLM_EDGE_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def started(nc: Client, name: str, proc: subprocess.Popen[bytes]) -> None:
    """Wait until ``proc`` answers $SRV.PING as a ``name`` service (its metadata names its
    pid): the new process serves."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        async with asyncio.timeout(30):
            while True:
                await nc.publish(f"$SRV.PING.{name}", b"", reply=inbox)
                with contextlib.suppress(NatsTimeout):  # every answer is in: ping again
                    while True:
                        msg = await sub.next_msg(timeout=0.2)
                        if msg.data and (  # not the server's no-responders notice
                            msgspec.json.decode(msg.data)["metadata"]["pid"] == str(proc.pid)
                        ):
                            return
    finally:
        await sub.unsubscribe()


async def sigterm(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (a graceful drain) and the exit status."""
    proc.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(proc.wait, 30)


@pytest.mark.process
async def test_rolling_restart_loses_no_request(own_nats: EmbeddedNats, tmp_path: Path) -> None:
    """Broker and worker processes (``python -m llm_edge``) are replaced one by one with
    SIGTERM under steady traffic: every request is answered 200 and every old process exits
    cleanly (graceful drain: stop taking messages, finish those in flight)."""
    nats_url = own_nats.url  # no service another test left behind joins the queue groups
    config_file = tmp_path / "config.toml"
    config_file.write_text(textwrap.dedent(CONFIG))
    common = ["--nats-url", nats_url, "--config", str(config_file)]
    roles = {"llm-edge-broker": ["broker"], "llm-edge-worker-mock": ["worker", "mock"]}
    client = await connect(nats_url, "rolling-client")
    running: dict[str, list[subprocess.Popen[bytes]]] = {name: [] for name in roles}
    results: list[int] = []
    exits: list[int] = []
    stop = asyncio.Event()
    lanes: list[asyncio.Future[None]] = []

    def launch(name: str) -> subprocess.Popen[bytes]:
        proc = spawn(*roles[name], *common)
        running[name].append(proc)
        return proc

    try:  # the first generation starts at once
        first = [(name, launch(name)) for name in roles for _ in range(2)]
        await asyncio.gather(*(started(client, name, proc) for name, proc in first))
        lanes = [asyncio.ensure_future(_traffic(client, results, stop, n)) for n in range(16)]
        for _ in range(2):  # every process of the first generation is replaced
            for name in roles:
                # the replacement is up before the old one goes
                await started(client, name, launch(name))
                exits.append(await sigterm(running[name].pop(0)))
        stop.set()
        await asyncio.gather(*lanes)
    finally:
        stop.set()
        for lane in lanes:
            lane.cancel()
        for procs in running.values():
            for proc in procs:
                proc.kill()
                proc.wait()
        await close_quietly(client)
    assert exits == [0, 0, 0, 0]
    assert len(results) > 50
    assert set(results) == {200}, {s: results.count(s) for s in set(results)}


async def test_srv_ping_finds_every_service(nats_url: str, make_stack: StackFactory) -> None:
    """$SRV.PING is answered by the broker and each provider worker; their status endpoints
    report live numbers."""
    stack = await make_stack(nats_url, config_from(CONFIG))
    inbox = stack.nc.new_inbox()
    sub = await stack.nc.subscribe(inbox)
    await stack.nc.publish("$SRV.PING", b"", reply=inbox)
    names: set[str] = set()
    async with asyncio.timeout(5):
        while not {"llm-edge-broker", "llm-edge-worker-mock"} <= names:
            names.add(msgspec.json.decode((await sub.next_msg(timeout=5)).data)["name"])
    await sub.unsubscribe()
    info = await stack.nc.request("$SRV.INFO.llm-edge-broker", b"", timeout=5)
    assert "llm.chat" in msgspec.json.decode(info.data)["metadata"]["subjects"]
    status = await stack.nc.request("llm.status.broker", b"", timeout=5)
    assert msgspec.json.decode(status.data)["in_flight"] == 0
    worker = await stack.nc.request("llm.status.worker-mock", b"", timeout=5)
    assert msgspec.json.decode(worker.data)["provider"] == "mock"


async def test_one_json_log_line_per_request_without_content(
    nats_url: str, caplog: pytest.LogCaptureFixture, make_stack: StackFactory
) -> None:
    """A miss logs one line with request id, model, deployment, cache status and tokens; the
    prompt never appears."""
    import logging

    from edge_runtime.logs import JsonFormatter

    caplog.set_level(logging.INFO, logger="llm_edge.requests")
    stack = await make_stack(nats_url, config_from(CONFIG))
    secret_prompt = "my very private question 42"
    body = msgspec.json.encode(
        {"model": "metered", "messages": [{"role": "user", "content": secret_prompt}]}
    )
    reply = await stack.nc.request(
        "llm.chat", body, timeout=10, headers={"X-Request-Id": "req-log-1"}
    )
    assert (reply.headers or {})["Llm-Status"] == "200"
    await stack.nc.flush()
    await stack.stop()
    records = [
        r
        for r in caplog.records
        if r.name == "llm_edge.requests"
        and getattr(r, "fields", {}).get("request_id") == "req-log-1"
    ]
    assert len(records) == 1
    line = msgspec.json.decode(JsonFormatter().format(records[0]))
    assert (line["model"], line["cache"], line["status"]) == ("metered", "MISS", 200)
    assert line["deployment"] == "metered@mock"
    assert line["prompt_tokens"] > 0
    assert line["latency_ms"] > 0
    assert secret_prompt not in caplog.text


async def test_cost_header_and_cost_saved_on_hits(nats_url: str, make_stack: StackFactory) -> None:
    """A priced answer names its cost; the same answer from cache names the cost it saved."""
    config = config_from(
        CONFIG
        + """
    [models.priced]
    deployments = [{ provider = "mock", input_price = 2.5, output_price = 10.0 }]
    """
    )
    stack = await make_stack(nats_url, config)
    body = msgspec.json.encode(
        {"model": "priced", "messages": [{"role": "user", "content": "what does this cost?"}]}
    )
    miss = await stack.nc.request("llm.chat", body, timeout=10)
    hit = await stack.nc.request("llm.chat", body, timeout=10)
    await stack.stop()
    assert miss.headers is not None
    assert hit.headers is not None
    cost = float(miss.headers["Llm-Cost-Usd"])
    usage = msgspec.json.decode(miss.data)["usage"]
    expected = (usage["prompt_tokens"] * 2.5 + usage["completion_tokens"] * 10.0) / 1e6
    assert abs(cost - expected) < 1e-6
    assert hit.headers["X-Cache"] == "HIT-L1"
    assert float(hit.headers["Llm-Cost-Saved-Usd"]) == cost
