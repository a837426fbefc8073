"""The same request-path cases in memory (injected collaborators) and on a real nats-server.

The memory lane builds :class:`broker.pipeline.ChatPipeline` from its wings with an in-memory
forward to the mock provider: no NATS, no worker. The NATS lane runs the broker service and a
mock worker on the session's nats-server and asks over ``llm.chat``. A case that passes in
one lane and fails in the other points at the wiring, not at the pipeline.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import pytest

from broker.admission.admit import Admission
from broker.cache.front import ReadThrough
from broker.cache.response import ResponseCache
from broker.config import Config
from broker.errors import UpstreamFailed
from broker.pipeline import ChatPipeline
from broker.prepare import RequestPreparer
from broker.record import RequestRecord
from broker.request import Piece, Prepared, Reply
from broker.tenancy.budget import SpendLedger
from broker.tenancy.limits import RateLimiter
from broker.tenancy.meter import Meter
from broker.tenancy.tenants import hash_key
from broker.upstream.calls import Upstream
from broker.upstream.deployments import Deployment
from broker.upstream.forward import StreamEvent
from broker.upstream.resilience import Resilient
from broker.upstream.router import Router
from schemas import ChatCompletionChunk, StreamEnd, headers, subjects
from tests.support.stack import StackFactory, config_from
from workers import MockProvider, ProviderRequest

CONFIG = """
    [cache]
    l2 = "off"
    [batch]
    enabled = false
    [providers.mock]
    kind = "mock"
    [providers.flaky]
    kind = "mock"
    [models.mock]
    deployments = [{ provider = "mock" }]
    [models.failover]
    strategy = "failover"
    deployments = [{ provider = "flaky", priority = 0 }, { provider = "mock", priority = 1 }]
"""

Answer = tuple[int, dict[str, str], bytes]
Ask = Callable[[dict[str, object], dict[str, str]], Awaitable[Answer]]


class MemoryForward:
    """One attempt in memory: the mock provider answers; provider ``flaky`` always fails."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._mock = MockProvider()

    def _call(self, prepared: Prepared, deployment: Deployment) -> ProviderRequest:
        self.calls.append(deployment.provider)
        if deployment.provider == "flaky":
            raise UpstreamFailed(503, b"", {headers.RETRYABLE: "1"})
        return ProviderRequest(prepared.data, prepared.request, deployment.model, 30.0)

    async def whole(self, prepared: Prepared, deployment: Deployment, deadline: float) -> Reply:
        return Reply(200, await self._mock.complete(self._call(prepared, deployment)))

    async def stream(
        self, prepared: Prepared, deployment: Deployment, deadline: float
    ) -> AsyncGenerator[StreamEvent, None]:
        call = self._call(prepared, deployment)
        async for chunk in self._mock.stream(call):
            yield Piece(msgspec.json.encode(chunk))
        yield StreamEnd(finish_reason="stop")


@dataclass
class RecordingSink:
    """Collects what the pipeline answers, like a caller would see it."""

    done: asyncio.Event = field(default_factory=asyncio.Event)
    status: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks: list[ChatCompletionChunk] = field(default_factory=list)

    async def whole(self, reply: Reply, meta: dict[str, str]) -> None:
        self.status, self.body, self.meta = reply.status, reply.body, {**meta, **reply.headers}
        self.done.set()

    async def chunk(self, piece: Piece, meta: dict[str, str]) -> None:
        self.chunks.append(msgspec.json.decode(piece.data, type=ChatCompletionChunk))

    async def end(self, end: StreamEnd, meta: dict[str, str]) -> None:
        self.status, self.meta = 200, dict(meta)
        self.done.set()

    async def error(self, reply: Reply, meta: dict[str, str], *, streaming: bool) -> None:
        self.status, self.body, self.meta = reply.status, reply.body, {**meta, **reply.headers}
        self.done.set()


def memory_pipeline(
    config: Config, forward: MemoryForward, max_in_flight: int = 100
) -> ChatPipeline:
    """The pipeline from its wings, with nothing but memory behind it."""
    clock = asyncio.get_running_loop().time
    ids = iter(range(1, 1_000_000))
    cache = ResponseCache(config.cache) if config.cache.enabled else None
    preparer = RequestPreparer(config, config.cache, 1 << 20, clock, lambda: f"r{next(ids)}")
    deployments = {d.name: d for m in config.models.values() for d in m.deployments}

    async def no_wait(_: float) -> None:
        return None

    admission = Admission(
        config.admission, deployments.values(), max_in_flight=max_in_flight, clock=clock
    )
    router = Router(config.breaker, clock=clock)
    resilient = Resilient(config, router, clock, sleep=no_wait, admission=admission)
    return ChatPipeline(
        preparer=preparer,
        front=ReadThrough(cache, clock),
        upstream=Upstream(resilient, forward),
        meter=Meter(deployments, RateLimiter(None), SpendLedger(None)),
        record=RequestRecord(config.broker),
        admission=admission,
        clock=clock,
    )


@pytest.fixture(params=["memory", "nats"])
async def ask(
    request: pytest.FixtureRequest, nats_url: str, make_stack: StackFactory
) -> AsyncIterator[Ask]:
    """``ask(body, headers)`` -> (status, headers, body), in the lane the test is run in."""
    config = config_from(CONFIG)
    if request.param == "memory":
        pipeline = memory_pipeline(config, MemoryForward())

        async def in_memory(body: dict[str, object], hdrs: dict[str, str]) -> Answer:
            sink = RecordingSink()
            await pipeline.handle(json.dumps(body).encode(), hdrs, sink)
            await asyncio.wait_for(sink.done.wait(), 10)
            return sink.status, sink.meta, sink.body

        yield in_memory
        return
    stack = await make_stack(nats_url, config)

    async def over_nats(body: dict[str, object], hdrs: dict[str, str]) -> Answer:
        msg = await stack.nc.request(subjects.CHAT, json.dumps(body).encode(), 10, headers=hdrs)
        answer = msg.headers or {}
        return int(answer[headers.STATUS]), answer, msg.data

    yield over_nats


def chat(text: str, model: str = "mock") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


async def test_a_miss_then_an_l1_hit_with_the_same_answer(ask: Ask) -> None:
    """The first ask goes upstream; the identical second is served from L1, unchanged."""
    body = chat(f"hello {uuid.uuid4().hex}")
    status, first_headers, first = await ask(body, {})
    assert (status, first_headers[headers.CACHE]) == (200, "MISS")
    assert first_headers[headers.PROVIDER] == "mock"
    status, second_headers, second = await ask(body, {})
    assert (status, second_headers[headers.CACHE]) == (200, "HIT-L1")
    assert second == first


async def test_invalid_request_gets_an_envelope(ask: Ask) -> None:
    """A request without messages is refused with a 400 naming the field."""
    status, answer_headers, body = await ask({"model": "mock"}, {})
    assert status == 400
    assert answer_headers[headers.CACHE] == "BYPASS"
    error = msgspec.json.decode(body)["error"]
    assert error["type"] == "invalid_request_error"
    assert "messages" in error["message"]


async def test_unknown_model_is_404(ask: Ask) -> None:
    """A model nobody configured is a 404 ``model_not_found`` with ``param: model``."""
    status, _, body = await ask(chat("hi", model="no-such-model"), {})
    assert status == 404
    assert msgspec.json.decode(body)["error"]["param"] == "model"


async def test_failing_deployment_fails_over_in_memory() -> None:
    """A retryable failure of the first deployment moves to the next: one answer, two calls."""
    forward = MemoryForward()
    pipeline = memory_pipeline(config_from(CONFIG), forward)
    sink = RecordingSink()
    await pipeline.handle(json.dumps(chat("over", "failover")).encode(), {}, sink)
    await asyncio.wait_for(sink.done.wait(), 10)
    assert sink.status == 200
    assert forward.calls == ["flaky", "mock"]
    assert sink.meta[headers.ATTEMPTS] == "2"
    assert sink.meta[headers.DEPLOYMENT].startswith("failover")


async def test_stream_in_memory_assembles_and_caches() -> None:
    """A streamed miss relays chunks, then the same request streamed again is a cache hit."""
    forward = MemoryForward()
    pipeline = memory_pipeline(config_from(CONFIG), forward)
    body = {**chat(f"stream {uuid.uuid4().hex}"), "stream": True}
    texts = []
    for expected in ("MISS", "HIT-L1"):
        sink = RecordingSink()
        await pipeline.handle(json.dumps(body).encode(), {}, sink)
        await asyncio.wait_for(sink.done.wait(), 10)
        assert sink.meta[headers.CACHE] == expected
        texts.append("".join(c.choices[0].delta.content or "" for c in sink.chunks if c.choices))
    assert texts[0] == texts[1] != ""
    assert forward.calls == ["mock"]


class BrokenMeter(Meter):
    """A meter with a bug: admitting any request raises."""

    async def admit(self, prepared: Prepared) -> None:
        raise RuntimeError("a bug in admission")

    @staticmethod
    def limits(tenant: object) -> bool:
        return True


class BrokenPreparer(RequestPreparer):
    """A preparer with a bug: every request raises something no one expected."""

    def prepare(self, data: bytes, hdrs: dict[str, str], tenant: object = None) -> Prepared:
        raise RecursionError("a bug in preparation")


@pytest.mark.parametrize("broken", ["preparer", "meter"])
async def test_a_bug_anywhere_still_answers_once(broken: str) -> None:
    """Whatever a wing raises, the caller gets one 500 envelope, not a silent timeout."""
    config = config_from(CONFIG)
    pipeline = memory_pipeline(config, MemoryForward())
    clock = asyncio.get_running_loop().time
    if broken == "preparer":
        pipeline._preparer = BrokenPreparer(config, None, 1 << 20, clock, lambda: "r")
    else:
        pipeline._meter = BrokenMeter({}, RateLimiter(None), SpendLedger(None))
    sink = RecordingSink()
    await pipeline.handle(json.dumps(chat("hi")).encode(), {}, sink)
    await asyncio.wait_for(sink.done.wait(), 10)
    assert sink.status == 500
    assert msgspec.json.decode(sink.body)["error"]["code"] == "internal_error"


class HeldForward(MemoryForward):
    """The mock provider, held until the test lets the calls go."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def whole(self, prepared: Prepared, deployment: Deployment, deadline: float) -> Reply:
        self.entered.set()
        await self.release.wait()
        return await super().whole(prepared, deployment, deadline)


async def test_a_request_cancelled_while_it_waits_for_a_slot_gives_its_place_back() -> None:
    """With the broker's one slot taken by tenant a, a request of tenant b waits in the
    broker's queue; its caller's cancel ends the wait (nobody is answered, nothing is left
    queued), and once a's request ends the slot is free."""
    forward = HeldForward()
    config = config_from(
        CONFIG
        + f"""
        [tenants.a]
        keys = ["{hash_key("sk-le-tenant-a-0000000000000000000000")}"]
        [tenants.b]
        keys = ["{hash_key("sk-le-tenant-b-0000000000000000000000")}"]
        """
    )
    pipeline = memory_pipeline(config, forward, max_in_flight=1)
    admission = pipeline._admission
    body = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "x"}]}).encode()
    first, second = RecordingSink(), RecordingSink()
    as_a = {headers.AUTHORIZATION: "Bearer sk-le-tenant-a-0000000000000000000000"}
    as_b = {
        headers.AUTHORIZATION: "Bearer sk-le-tenant-b-0000000000000000000000",
        headers.REQUEST_ID: "waiting-b",
    }
    await pipeline.handle(body, as_a, first, reply_to="first")
    async with asyncio.timeout(5):
        await forward.entered.wait()
    await pipeline.handle(body, as_b, second, reply_to="second")
    async with asyncio.timeout(5):
        while admission.waiting < 1:  # noqa: ASYNC110
            await asyncio.sleep(0)
    assert admission.queue_depths() == [("broker", "b", "default", 1)]
    pipeline.cancel("waiting-b", "second")
    async with asyncio.timeout(5):
        while admission.waiting:  # noqa: ASYNC110
            await asyncio.sleep(0)
    assert admission.queue_depths() == []
    forward.release.set()
    async with asyncio.timeout(5):
        await first.done.wait()
        while pipeline.in_flight:  # noqa: ASYNC110
            await asyncio.sleep(0)
    assert first.status == 200
    assert not second.done.is_set()  # the cancelled request is never answered
    slots = admission.broker.pools[0]
    assert slots is not None
    assert slots.in_use == 0
