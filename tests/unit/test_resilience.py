"""Retries and failover with an injected clock and recorded (not slept) waits."""

from __future__ import annotations

import asyncio
import random
import textwrap

import pytest

from broker.cache.directives import CacheDirectives
from broker.config import Config
from broker.errors import BrokerError, NoProvider, UpstreamFailed
from broker.request import Prepared, Reply
from broker.upstream.breaker import BreakerState
from broker.upstream.deployments import Deployment
from broker.upstream.resilience import AllDeploymentsOpen, Resilient, Run
from broker.upstream.router import Router
from schemas import ChatRequest, Message, headers

CONFIG = Config.from_toml(
    textwrap.dedent("""
    [resilience]
    max_attempts = 4
    backoff_initial_s = 0.5
    backoff_max_s = 4
    budget_ratio = 0.0
    budget_min = 3

    [breaker]
    failure_threshold = 2
    open_s = 30
    jitter = 0

    [providers.p]
    kind = "mock"

    [models.main]
    strategy = "failover"
    fallbacks = ["backup"]
    deployments = [
      { name = "first", provider = "p", priority = 0 },
      { name = "second", provider = "p", priority = 1 },
    ]

    [models.backup]
    deployments = [{ name = "spare", provider = "p" }]
""")
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A Resilient with a fake clock; sleeps advance the clock and are recorded."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.sleeps: list[float] = []
        self.calls: list[str] = []
        self.router = Router(CONFIG.breaker, clock=self.clock, rng=random.Random(3))
        self.resilient = Resilient(
            CONFIG, self.router, self.clock, sleep=self.sleep, rng=random.Random(3)
        )

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.now += seconds

    def prepared(self, budget_s: float = 60) -> Prepared:
        request = ChatRequest(model="main", messages=[Message(role="user", content="hi")])
        return Prepared(
            data=b"{}",
            request=request,
            model=CONFIG.models["main"],
            request_id="r",
            deadline=self.clock.now + budget_s,
            key=None,
            directives=CacheDirectives(),
        )

    async def run(
        self, outcomes: dict[str, list[BrokerError | None]], budget_s: float = 60
    ) -> Run[Reply]:
        async def attempt(deployment: Deployment, deadline: float) -> Reply:
            self.calls.append(deployment.name)
            script = outcomes.get(deployment.name) or [None]
            failure = script.pop(0) if len(script) > 1 else script[0]
            if failure is not None:
                raise failure
            return Reply(200, b"ok")

        return await self.resilient.run(self.prepared(budget_s), attempt)


def upstream(status: int, retry_after: str | None = None) -> UpstreamFailed:
    extra = {headers.RETRYABLE: "1"} if status >= 500 or status == 429 else {}
    if retry_after:
        extra[headers.RETRY_AFTER] = retry_after
    return UpstreamFailed(status, b"{}", extra)


async def test_failover_follows_priority_then_fallback_model() -> None:
    """Retryable failures move to the next deployment at once, then to the fallback model."""
    h = Harness()
    run = await h.run({"first": [upstream(500)], "second": [upstream(503)]})
    used, attempts = run.deployment, run.attempts
    assert h.calls == ["first", "second", "spare"]
    assert (used.name, attempts) == ("spare", 3)
    assert h.sleeps == [0.0, 0.0]  # failing over to another deployment does not wait


async def test_non_retryable_errors_are_not_retried() -> None:
    """A 400 from the upstream is the request's fault: one attempt, no breaker failure."""
    h = Harness()
    with pytest.raises(UpstreamFailed):
        await h.run({"first": [upstream(400)]})
    assert h.calls == ["first"]
    assert h.router.breakers()["first"].state is BreakerState.CLOSED


async def test_retry_after_is_honoured_on_the_same_deployment() -> None:
    """Coming back to a deployment waits for its Retry-After (when it fits the deadline)."""
    h = Harness()
    solo = CONFIG.models["backup"]
    prepared = h.prepared()
    prepared.model = solo
    script = [upstream(429, retry_after="3"), None]

    async def attempt(deployment: Deployment, deadline: float) -> Reply:
        h.calls.append(deployment.name)
        failure = script.pop(0)
        if failure is not None:
            raise failure
        return Reply(200, b"ok")

    run = await h.resilient.run(prepared, attempt)
    assert run.attempts == 2
    assert h.sleeps == [3.0]


async def test_no_retry_past_the_deadline() -> None:
    """A wait that would end after the deadline is not taken: the failure is returned."""
    h = Harness()
    solo = CONFIG.models["backup"]
    prepared = h.prepared(budget_s=2)
    prepared.model = solo

    async def attempt(deployment: Deployment, deadline: float) -> Reply:
        h.calls.append(deployment.name)
        raise upstream(429, retry_after="5")

    with pytest.raises(UpstreamFailed):
        await h.resilient.run(prepared, attempt)
    assert h.calls == ["spare"]
    assert h.sleeps == []


async def test_breaker_opens_and_then_gets_no_traffic() -> None:
    """After failure_threshold failures the deployment is skipped without being called."""
    h = Harness()
    for _ in range(2):
        await h.run({"first": [upstream(500)]})
    assert h.router.breakers()["first"].state is BreakerState.OPEN
    h.calls.clear()
    await h.run({})
    assert h.calls == ["second"]


async def test_half_open_probe_closes_on_recovery() -> None:
    """Once open_s passes, one probe reaches the deployment; its success closes the breaker."""
    h = Harness()
    for _ in range(2):
        await h.run({"first": [upstream(500)]})
    h.clock.now += 30
    h.calls.clear()
    await h.run({})
    assert h.calls == ["first"]
    assert h.router.breakers()["first"].state is BreakerState.CLOSED


async def cancelled_attempt(h: Harness) -> None:
    """A request to ``main`` whose attempt is cancelled by its caller while in flight."""
    started = asyncio.Event()

    async def attempt(deployment: Deployment, deadline: float) -> Reply:
        h.calls.append(deployment.name)
        started.set()
        await asyncio.Event().wait()  # the upstream never answers before the caller leaves
        raise AssertionError("unreachable")

    task = asyncio.create_task(h.resilient.run(h.prepared(), attempt))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancelled_probe_does_not_close_the_breaker() -> None:
    """A half-open probe cancelled by its caller is no evidence: still half-open, slot free."""
    h = Harness()
    for _ in range(2):
        await h.run({"first": [upstream(500)]})
    h.clock.now += 30
    await cancelled_attempt(h)
    breaker = h.router.breakers()["first"]
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.available()  # the next request may probe


async def test_a_cancelled_call_does_not_reset_the_failure_count() -> None:
    """In closed state a cancelled call leaves the failure count: one more failure trips."""
    h = Harness()
    await h.run({"first": [upstream(500)]})
    await cancelled_attempt(h)
    await h.run({"first": [upstream(500)]})
    assert h.router.breakers()["first"].state is BreakerState.OPEN


async def test_all_open_is_a_fast_503_with_retry_after() -> None:
    """With every deployment and fallback open: 503 at once, Retry-After from the breakers."""
    h = Harness()
    for name in ("first", "second", "spare"):
        h.router.stats(
            next(d for m in CONFIG.models.values() for d in m.deployments if d.name == name)
        ).breaker.force(BreakerState.OPEN)
    with pytest.raises(AllDeploymentsOpen) as caught:
        await h.run({})
    assert h.calls == []
    assert caught.value.status == 503
    assert caught.value.retry_after == 30


async def test_retry_budget_caps_upstream_calls_in_an_outage() -> None:
    """During an outage each request tries every deployment once (failing over is free), and
    coming back to one already tried stops once the budget (3 per window here) is spent."""
    h = Harness()
    total = 0
    for _ in range(10):
        h.calls.clear()
        with pytest.raises((UpstreamFailed, NoProvider)):
            await h.run(
                {
                    "first": [NoProvider("down")],
                    "second": [NoProvider("down")],
                    "spare": [NoProvider("down")],
                }
            )
        total += len(h.calls)
        for breaker in h.router.breakers().values():
            breaker.force(BreakerState.CLOSED)  # keep breakers out of it: budget only
    assert total == 10 * 3 + 3  # each deployment once per request, plus 3 budgeted returns
