"""The bridge sends a lost attempt again: what it retries, what it does not, and how.

A stand-in broker on ``llm.chat`` (a plain subscriber on a real nats-server of the test's
own) answers each attempt as the test scripts it, and records what it was sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError

from edge_bridge import BridgeOptions, BridgeServer
from edge_client import RetryPolicy
from edge_runtime.process import close_quietly, connect
from schemas import headers
from tests.support.cluster import home_of
from tests.support.servers import EmbeddedCluster, EmbeddedNats

PROBE = "Test-Probe"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
QUICK = RetryPolicy(attempts=4, attempt_timeout_s=0.5, backoff_s=0.05, max_backoff_s=0.2)


@dataclass
class Attempt:
    request_id: str
    reply: str
    timeout_ms: str | None


@dataclass
class StandIn:
    """A broker stand-in: ``answer(n, msg)`` handles the n-th attempt (from 1)."""

    nc: Client
    answer: Callable[[int, Msg], Awaitable[None]] | None = None
    attempts: list[Attempt] = field(default_factory=list)
    cancels: list[tuple[str, str]] = field(default_factory=list)  # (request id, reply)
    seen: asyncio.Event = field(default_factory=asyncio.Event)
    answering: set[asyncio.Future[None]] = field(default_factory=set)

    async def on_chat(self, msg: Msg) -> None:
        hdrs = msg.headers or {}
        if PROBE in hdrs:  # the test asking whether llm.chat reaches this stand-in yet
            await self.nc.publish(msg.reply, b"")
            return
        self.attempts.append(
            Attempt(hdrs.get(headers.REQUEST_ID, ""), msg.reply, hdrs.get(headers.TIMEOUT_MS))
        )
        self.seen.set()
        if self.answer is not None:
            task = asyncio.ensure_future(self.answer(len(self.attempts), msg))
            self.answering.add(task)
            task.add_done_callback(self.answering.discard)

    async def on_cancel(self, msg: Msg) -> None:
        self.cancels.append((msg.data.decode(), msg.reply))

    async def reply(self, msg: Msg, status: int, body: bytes, **extra: str) -> None:
        """Answer as a broker does: the status, and the request id echoed."""
        request_id = (msg.headers or {}).get(headers.REQUEST_ID, "")
        hdrs = {headers.STATUS: str(status), headers.REQUEST_ID: request_id, **extra}
        await self.nc.publish(msg.reply, body, headers=hdrs)


async def stand_in(url: str) -> StandIn:
    nc = await connect(url, "stand-in")
    broker = StandIn(nc)
    await nc.subscribe("llm.chat", cb=broker.on_chat)
    await nc.subscribe("llm.cancel", cb=broker.on_cancel)
    await nc.flush()
    return broker


@pytest.fixture
async def broker(own_nats: EmbeddedNats) -> AsyncIterator[StandIn]:
    running = await stand_in(own_nats.url)
    yield running
    await close_quietly(running.nc)


async def routed(url: str) -> None:
    """Until ``llm.chat`` published on the server at ``url`` reaches the stand-in (its
    subscription, made on another server of the cluster, has spread to that one)."""
    nc = await connect(url, "router")
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    await nc.request("llm.chat", b"", timeout=1, headers={PROBE: "1"})
                except NoRespondersError:
                    await asyncio.sleep(0.05)
                else:
                    return
    finally:
        await close_quietly(nc)


async def bridge_on(url: str, retry: RetryPolicy = QUICK) -> BridgeServer:
    bridge = BridgeServer(BridgeOptions(nats_url=url, port=0, retry=retry))
    await bridge.start()
    return bridge


@pytest.fixture
def retry() -> RetryPolicy:
    """The bridge's retry policy (a test may name another with ``parametrize``)."""
    return QUICK


@pytest.fixture
async def http(own_nats: EmbeddedNats, retry: RetryPolicy) -> AsyncIterator[httpx.AsyncClient]:
    bridge = await bridge_on(own_nats.url, retry)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bridge.port}/v1", timeout=30) as c:
        yield c
    await bridge.stop()


def ok(text: str) -> bytes:
    return b'{"id":"c","object":"chat.completion","choices":[],"text":"' + text.encode() + b'"}'


#: Backoffs (full jitter) that add up to seconds, far more than a stand-in takes to subscribe:
#: with :data:`QUICK`'s four attempts they may add up to a few milliseconds.
PATIENT = RetryPolicy(attempts=30, attempt_timeout_s=0.5, backoff_s=0.05, max_backoff_s=0.2)


@pytest.mark.parametrize("retry", [PATIENT])
async def test_no_broker_at_first_is_retried_until_one_answers(
    own_nats: EmbeddedNats, http: httpx.AsyncClient
) -> None:
    """NATS no-responders is sent again after a backoff: a broker that subscribes meanwhile
    answers, under the request id the bridge made before the first attempt."""
    pending = asyncio.ensure_future(http.post("/chat/completions", json=BODY))
    await asyncio.sleep(0.1)  # the first attempts find nobody
    late = await stand_in(own_nats.url)

    async def answer(n: int, msg: Msg) -> None:
        await late.reply(msg, 200, ok("late broker"))

    late.answer = answer
    try:
        response = await pending
        assert response.status_code == 200
        assert response.json()["text"] == "late broker"
        assert [a.request_id for a in late.attempts] == [response.headers["x-request-id"]]
    finally:
        await close_quietly(late.nc)


async def test_a_503_is_sent_again_under_the_same_request_id(
    broker: StandIn, http: httpx.AsyncClient
) -> None:
    """A broker's 503 (a store electing its leader) is sent again after its Retry-After; the
    caller sent no X-Request-Id, and every attempt carries the one the bridge made."""

    async def answer(n: int, msg: Msg) -> None:
        if n == 1:
            body = b'{"error":{"message":"electing","type":"x","code":"jetstream_unavailable"}}'
            await broker.reply(msg, 503, body, **{headers.RETRY_AFTER: "0"})
        else:
            await broker.reply(msg, 200, ok("second"))

    broker.answer = answer
    response = await http.post("/chat/completions", json=BODY)
    assert response.status_code == 200
    assert response.json()["text"] == "second"
    first, second = broker.attempts
    assert first.request_id
    assert first.request_id == second.request_id == response.headers["x-request-id"]
    assert first.reply != second.reply  # each attempt its own reply subject


@pytest.mark.parametrize("code", ["overloaded", "all_deployments_unavailable"])
async def test_a_back_off_503_is_answered_as_it_is(
    broker: StandIn, http: httpx.AsyncClient, code: str
) -> None:
    """A 503 the broker decided (a shed tenant, open breakers) goes to the caller at once,
    with its Retry-After: sending it again would only add load."""

    async def answer(n: int, msg: Msg) -> None:
        body = b'{"error":{"message":"no","type":"x","code":"' + code.encode() + b'"}}'
        await broker.reply(msg, 503, body, **{headers.RETRY_AFTER: "1"})

    broker.answer = answer
    response = await http.post("/chat/completions", json=BODY)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert len(broker.attempts) == 1


async def test_a_late_first_answer_is_taken_and_the_retry_cancelled(
    broker: StandIn, http: httpx.AsyncClient
) -> None:
    """The first attempt answers after the attempt timeout sent a second: its answer is the
    caller's, and the second attempt is cancelled on its own reply subject."""

    async def answer(n: int, msg: Msg) -> None:
        if n == 1:
            await asyncio.sleep(0.8)  # past the 0.5 s attempt timeout, before the next one
            await broker.reply(msg, 200, ok("first"))

    broker.answer = answer
    response = await http.post("/chat/completions", json=BODY)
    assert response.status_code == 200
    assert response.json()["text"] == "first"
    retries = broker.attempts[1:]
    assert retries  # one at 0.5 s (another at 1 s if this machine is slow)
    await broker.nc.flush()
    async with asyncio.timeout(5):
        while len(broker.cancels) < len(retries):  # noqa: ASYNC110  (messages of their own)
            await asyncio.sleep(0.02)
    assert sorted(broker.cancels) == sorted((a.request_id, a.reply) for a in retries)


async def test_the_callers_deadline_bounds_the_attempts(
    broker: StandIn, http: httpx.AsyncClient
) -> None:
    """Nobody answers: attempts go out until the caller's Llm-Timeout-Ms is spent, each with
    what is left of it, then 504 (and every attempt is cancelled)."""
    started = time.monotonic()
    response = await http.post("/chat/completions", json=BODY, headers={"llm-timeout-ms": "1800"})
    took = time.monotonic() - started
    assert response.status_code == 504
    assert 1.7 < took < 3.0
    budgets = [int(a.timeout_ms or 0) for a in broker.attempts]
    assert len(budgets) >= QUICK.attempts - 1  # one every 0.5 s; the last waits to the end
    assert 1700 < budgets[0] <= 1800
    assert budgets == sorted(budgets, reverse=True)
    assert budgets[-1] < 600
    await broker.nc.flush()
    async with asyncio.timeout(5):
        while len(broker.cancels) < len(budgets):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert {reply for _, reply in broker.cancels} == {a.reply for a in broker.attempts}


async def chunk(broker: StandIn, msg: Msg, seq: int, text: str) -> None:
    body = b'{"choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"}}]}'
    await broker.nc.publish(
        msg.reply, body, headers={headers.STREAM: "chunk", headers.SEQ: str(seq)}
    )


async def end(broker: StandIn, msg: Msg, seq: int) -> None:
    await broker.nc.publish(msg.reply, b"", headers={headers.STREAM: "end", headers.SEQ: str(seq)})


async def test_a_stream_is_retried_before_its_first_message(
    broker: StandIn, http: httpx.AsyncClient
) -> None:
    """A stream whose first attempt never says anything is sent again; the caller gets the
    second attempt's stream, whole."""

    async def answer(n: int, msg: Msg) -> None:
        if n == 2:
            await chunk(broker, msg, 0, "one")
            await chunk(broker, msg, 1, "two")
            await end(broker, msg, 2)

    broker.answer = answer
    response = await http.post("/chat/completions", json={**BODY, "stream": True})
    assert response.status_code == 200
    assert response.text.count("data: ") == 3
    assert '"one"' in response.text
    assert '"two"' in response.text
    assert response.text.endswith("data: [DONE]\n\n")
    assert len(broker.attempts) == 2


async def test_a_begun_stream_is_never_sent_again(broker: StandIn, http: httpx.AsyncClient) -> None:
    """Once a stream's first message came, its attempt is the only one: a stream that goes
    silent is not sent again (its first bytes are with the caller); it ends at the deadline."""

    async def answer(n: int, msg: Msg) -> None:
        await chunk(broker, msg, 0, "begun")

    broker.answer = answer
    response = await http.post(
        "/chat/completions", json={**BODY, "stream": True}, headers={"llm-timeout-ms": "1500"}
    )
    assert response.status_code == 200
    assert '"begun"' in response.text
    assert "[DONE]" not in response.text
    assert response.text.endswith('"code":"deadline_exceeded","param":null}}\n\n')
    assert len(broker.attempts) == 1


async def test_a_stream_with_a_lost_message_ends_with_an_error_event(
    broker: StandIn, http: httpx.AsyncClient
) -> None:
    """A stream whose message 1 never came (Llm-Seq 0, then 2) is not passed on as a whole
    answer: the caller gets what came in order, then an error event and no [DONE], and the
    request is cancelled."""

    async def answer(n: int, msg: Msg) -> None:
        await chunk(broker, msg, 0, "zero")
        await chunk(broker, msg, 2, "two")
        await end(broker, msg, 3)

    broker.answer = answer
    response = await http.post("/chat/completions", json={**BODY, "stream": True})
    assert response.status_code == 200
    assert '"zero"' in response.text
    assert '"two"' not in response.text
    assert "[DONE]" not in response.text
    assert '"code":"stream_gap"' in response.text
    await broker.nc.flush()
    async with asyncio.timeout(5):
        while not broker.cancels:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert len(broker.attempts) == 1


async def test_keepalives_keep_a_slow_attempt_from_being_sent_again(
    broker: StandIn, http: httpx.AsyncClient
) -> None:
    """A broker that keeps saying "working on it" for three attempt timeouts is waited for:
    the keepalives are not the answer, the request goes out once, and its answer arrives."""
    attempt_s = QUICK.attempt_timeout_s

    async def answer(n: int, msg: Msg) -> None:
        assert (msg.headers or {}).get(headers.KEEPALIVE_MS) == "250"  # a quarter of 0.5 s
        for _ in range(int(3 * attempt_s / 0.1)):
            await broker.nc.publish(msg.reply, b"", headers={headers.STREAM: "keepalive"})
            await asyncio.sleep(0.1)
        await broker.reply(msg, 200, b'{"slow": "but here"}')

    broker.answer = answer
    response = await http.post("/chat/completions", json=BODY)
    assert response.status_code == 200
    assert response.json() == {"slow": "but here"}
    assert len(broker.attempts) == 1


async def test_a_reply_lost_to_the_bridges_reconnect_is_sent_again_at_once(
    nats_cluster: EmbeddedCluster,
) -> None:
    """The bridge's server dies while an attempt waits (its answer would come to the dead
    server): the bridge reconnects to another server of its list and sends the request
    again at once, under the same id, long before the 30 s attempt timeout."""
    urls = nats_cluster.urls
    slow = RetryPolicy(attempts=4, attempt_timeout_s=30.0, backoff_s=0.05, max_backoff_s=0.2)
    bridge = await bridge_on(",".join(urls), slow)
    home = home_of(nats_cluster, bridge.nc)  # the server of the list the bridge picked
    broker = await stand_in(urls[(home + 1) % len(urls)])

    async def answer(n: int, msg: Msg) -> None:
        if n == 2:  # the first attempt's answer is taken as lost with the server
            await broker.reply(msg, 200, ok("after the reconnect"))

    broker.answer = answer
    try:
        await routed(urls[home])
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{bridge.port}/v1", timeout=30
        ) as http:
            pending = asyncio.ensure_future(http.post("/chat/completions", json=BODY))
            async with asyncio.timeout(10):
                await broker.seen.wait()
            nats_cluster.nodes[home].kill()
            async with asyncio.timeout(10):
                response = await pending
        assert response.status_code == 200
        assert response.json()["text"] == "after the reconnect"
        first, second = broker.attempts
        assert first.request_id == second.request_id == response.headers["x-request-id"]
    finally:
        await close_quietly(broker.nc)
        await bridge.stop()
