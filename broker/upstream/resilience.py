"""Retries and failover across deployments and fallback models, under breakers and deadlines.

One request walks an ordering of candidates: the model's deployments (ranked by its routing
strategy, open breakers left out), then each fallback model's. A retryable failure moves to
the next candidate at once; coming back to a deployment already tried waits for an
exponential, jittered backoff or the upstream's ``Retry-After`` (when it fits the deadline).
Attempts stop at ``max_attempts``, at the deadline, or when the retry budget is spent. When
no candidate is available at all the answer is an immediate 503 with ``Retry-After``.

A stream's attempt succeeds when its first event arrives, but the deployment's breaker hears
the verdict only when the stream ends (:meth:`Resilient.judge`): a stream that starts and then
breaks is a failure, and a half-open probe must not close the breaker on its first chunk.

Each attempt holds a permit of its deployment's limits (:mod:`broker.admission`): the walk
takes the first candidate with capacity free; when every available candidate is full, the
request waits for the first of them to free, up to its wait bound, and is refused with
``Retry-After`` when none frees in time. A stream's permit is held until the stream ends.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt

from broker import metrics
from broker.admission.admit import NO_LIMIT, Admission
from broker.admission.gate import Permit
from broker.admission.queue import Ticket
from broker.config import Config
from broker.errors import (
    AllDeploymentsOpen,
    BrokerError,
    DeadlineExceeded,
    NoProvider,
    UpstreamFailed,
)
from broker.request import Call
from broker.upstream.deployments import Deployment, ModelConfig
from broker.upstream.forward import WorkerLost
from broker.upstream.retry import RetryBudget
from broker.upstream.router import DeploymentStats, Router
from schemas import headers

__all__ = ["AllDeploymentsOpen", "Resilient", "Run", "attempt_headers"]

T = TypeVar("T")
#: Completion tokens assumed when ranking by cost a request that sets no cap.
ROUTING_COMPLETION_GUESS = 256
Sleep = Callable[[float], Awaitable[None]]


#: Whether a deployment can take the request (its context window): ``None`` takes all.
Fits = Callable[[Deployment], bool]


@dataclass(slots=True)
class _Walk:
    """The candidates of one request (and the model each serves) and where the walk is."""

    candidates: list[Deployment]
    models: dict[str, ModelConfig]
    first: ModelConfig | None = None  # the model walked first (None: the request's)
    position: int = 0
    last: Deployment | None = None
    wait_s: float = 0.0
    upstream_s: float = 0.0  # time the attempts spent with provider workers

    def peek(self) -> Deployment:
        return self.candidates[self.position % len(self.candidates)]


@dataclass(frozen=True, slots=True)
class Run(Generic[T]):
    """A call that succeeded: its result, the deployment that gave it, how many attempts it
    took and how long they spent with provider workers (backoffs not counted), the
    deployment's permit (released already, unless the caller judges the call later), and the
    model the deployment serves (``None``: the request's own)."""

    result: T
    deployment: Deployment
    attempts: int
    upstream_s: float
    permit: Permit = NO_LIMIT
    model: ModelConfig | None = None


def _failed(exc: BaseException) -> tuple[bool, bool, float | None]:
    """(retryable, the deployment's fault, Retry-After) of an attempt's failure."""
    if isinstance(exc, UpstreamFailed):
        retry_after = exc.extra_headers.get(headers.RETRY_AFTER)
        return (
            headers.RETRYABLE in exc.extra_headers,
            exc.status >= 500 or exc.status == 429,
            float(retry_after) if retry_after else None,
        )
    if isinstance(exc, WorkerLost):
        return True, False, None  # a worker process died: the upstream itself is not at fault
    if isinstance(exc, NoProvider | DeadlineExceeded):
        return True, True, None  # our own 503/504: the normal backoff applies
    return False, False, None


class Resilient:
    """Runs attempts for a request across candidates.

    Args:
        config: models (fallbacks), resilience settings.
        router: orderings, breakers, statistics.
        clock: the clock of ``Call.deadline``.
        sleep: how to wait between attempts (tests pass a no-op).
        rng: backoff jitter.
        admission: the deployments' capacity (``None``: unlimited).
    """

    def __init__(
        self,
        config: Config,
        router: Router,
        clock: Callable[[], float],
        *,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        admission: Admission | None = None,
    ) -> None:
        self._admission = admission
        self._config = config
        self._settings = config.resilience
        self.router = router
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._budget = RetryBudget(config.resilience, clock)

    def candidates(
        self, prepared: Call, model: ModelConfig | None = None, fits: Fits | None = None
    ) -> list[Deployment]:
        """The model's ranked deployments, then each fallback model's (``model``: another
        than the request's; ``fits``: only the deployments whose window takes it)."""
        return self._walk(prepared, model or prepared.model, fits).candidates

    def _walk(self, prepared: Call, first: ModelConfig, fits: Fits | None) -> _Walk:
        tokens = prepared.estimate(ROUTING_COMPLETION_GUESS)
        models: list[ModelConfig] = [first]
        models += [
            m for name in first.fallbacks if (m := self._config.models.get(name)) is not None
        ]
        walk = _Walk([], {}, first)
        for model in models:
            for deployment in self.router.order(model, tokens):
                if deployment.name not in walk.models and (fits is None or fits(deployment)):
                    walk.models[deployment.name] = model
                    walk.candidates.append(deployment)
        return walk

    def _all_open(self, prepared: Call, model: ModelConfig | None = None) -> AllDeploymentsOpen:
        first = model or prepared.model
        models = [first, *(self._config.models[n] for n in first.fallbacks)]
        wait = min(self.router.retry_after(m) for m in models)
        return AllDeploymentsOpen(
            f"every deployment of `{first.name}` (and its fallbacks) is unavailable; "
            f"retry in {wait:.0f}s",
            retry_after=max(1.0, round(wait)),
        )

    async def run(
        self,
        prepared: Call,
        attempt: Callable[[Deployment, float], Awaitable[T]],
        *,
        judge_later: bool = False,
        model: ModelConfig | None = None,
        fits: Fits | None = None,
    ) -> Run[T]:
        """Call ``attempt(deployment, deadline)`` until one succeeds.

        Args:
            prepared: the request.
            attempt: one call to one deployment.
            judge_later: the success of the attempt is not the call's verdict (a stream that
                has only begun): the caller reports it with :meth:`judge`.
            model: the model whose deployments (then fallbacks) to walk, when it is not the
                request's own (a context-window or content-policy fallback).
            fits: leaves out the deployments whose context window cannot take the request.

        Returns:
            The result, the deployment that gave it, the attempts and their time.

        Raises:
            BrokerError: the last failure (or :class:`AllDeploymentsOpen`).
        """
        walk = self._walk(prepared, model or prepared.model, fits)
        if not walk.candidates:
            raise self._all_open(prepared, model)
        self._budget.request()
        # The first attempt runs without tenacity: most requests need no retry, and the
        # retry machinery costs more than the rest of the miss path (measured: 22 -> 6 us).
        deployment, permit = await self._next_allowed(walk, prepared)
        try:
            result = await self._attempt(
                attempt, deployment, prepared, walk, judge_later=judge_later, permit=permit
            )
            return Run(result, deployment, 1, walk.upstream_s, permit, walk.models[deployment.name])
        except BrokerError as exc:
            first_failure = exc
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._settings.max_attempts),
            retry=lambda state: self._should_retry(state, walk, prepared),
            wait=lambda state: walk.wait_s,
            sleep=self._sleep,
            reraise=True,
        )
        first = True
        async for try_ in retrying:
            with try_:
                if first:  # replay the first failure so tenacity decides on it
                    first = False
                    raise first_failure
                deployment, permit = await self._next_allowed(walk, prepared)
                result = await self._attempt(
                    attempt, deployment, prepared, walk, judge_later=judge_later, permit=permit
                )
                attempts = try_.retry_state.attempt_number
                model_of = walk.models[deployment.name]
                return Run(result, deployment, attempts, walk.upstream_s, permit, model_of)
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    def now(self) -> float:
        """The clock attempts are timed on."""
        return self._clock()

    def judge(
        self, deployment: Deployment, failure: BaseException | None, first_event_s: float
    ) -> None:
        """The verdict on a stream that had begun, for its deployment's breaker.

        Args:
            deployment: who served it.
            failure: why it ended early (``None``: it ended well).
            first_event_s: how long its first event took (what makes a stream slow).
        """
        _judge(self.router.stats(deployment), failure, first_event_s)

    async def _next_allowed(self, walk: _Walk, prepared: Call) -> tuple[Deployment, Permit]:
        """The next candidate whose breaker lets a call through and that has capacity, with
        its permit; when every such candidate is full, the first to free (waiting for it).

        Raises:
            AllDeploymentsOpen: no candidate's breaker lets a call through.
            AtCapacity, Overloaded: the candidates stay full past the request's wait bound.
        """
        admission = self._admission
        ticket: Ticket | None = None
        full: list[Deployment] = []
        for _ in range(len(walk.candidates)):
            deployment = walk.peek()
            walk.position += 1
            breaker = self.router.stats(deployment).breaker
            if not breaker.available():
                continue
            permit = NO_LIMIT
            if admission is not None and admission.gate(deployment) is not None:
                ticket = ticket or admission.ticket(prepared)
                taken = admission.deployment(deployment, ticket)
                if taken is None:
                    full.append(deployment)
                    continue
                permit = taken
            if breaker.allow():
                return self._moved(walk, deployment), permit
            permit.release()
        if full and admission is not None and ticket is not None:
            return await self._wait_for(admission, full, ticket, prepared, walk)
        raise self._all_open(prepared, walk.first)

    async def _wait_for(
        self,
        admission: Admission,
        full: list[Deployment],
        ticket: Ticket,
        prepared: Call,
        walk: _Walk,
    ) -> tuple[Deployment, Permit]:
        """Wait for the first of the ``full`` deployments to grant ``ticket``."""
        gates = {}
        for deployment in full:
            gate = admission.gate(deployment)
            if gate is not None:
                gates[gate] = deployment
        latencies = [self.router.stats(d).ewma_s or 0.0 for d in full]
        grant = await admission.wait_any(
            list(gates), ticket, prepared, "deployment", min(latencies, default=0.0)
        )
        deployment = gates[grant.gate]
        if not self.router.stats(deployment).breaker.allow():  # it opened meanwhile
            grant.permit.release()
            raise self._all_open(prepared, walk.first)
        return self._moved(walk, deployment), grant.permit

    @staticmethod
    def _moved(walk: _Walk, deployment: Deployment) -> Deployment:
        if walk.last is not None and deployment.name != walk.last.name:
            metrics.FAILOVERS.inc()
        walk.last = deployment
        return deployment

    async def _attempt(
        self,
        attempt: Callable[[Deployment, float], Awaitable[T]],
        deployment: Deployment,
        prepared: Call,
        walk: _Walk,
        *,
        judge_later: bool,
        permit: Permit,
    ) -> T:
        stats = self.router.stats(deployment)
        deadline = prepared.deadline
        if deployment.timeout_s is not None:
            deadline = min(deadline, self._clock() + deployment.timeout_s)
        stats.in_flight += 1
        started = self._clock()
        try:
            result = await attempt(deployment, deadline)
        except BaseException as exc:
            permit.release()
            _judge(stats, exc, self._clock() - started)
            raise
        finally:
            stats.in_flight -= 1
            walk.upstream_s += self._clock() - started
            stats.last_call = self._clock()
        elapsed = self._clock() - started
        if not judge_later:
            permit.release()
            stats.breaker.record(True, elapsed)
            stats.answered += 1
        stats.observe_latency(elapsed, self._clock())
        return result

    def _should_retry(self, state: RetryCallState, walk: _Walk, prepared: Call) -> bool:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if exc is None or isinstance(exc, AllDeploymentsOpen):
            return False
        retryable, _, retry_after = _failed(exc)
        if not retryable or state.attempt_number >= self._settings.max_attempts:
            return False  # (tenacity asks before it checks its stop: no budget for nothing)
        remaining = prepared.deadline - self._clock()
        if isinstance(exc, DeadlineExceeded) and remaining <= 0:
            return False
        walk.wait_s = 0.0
        if walk.last is not None and walk.peek().name == walk.last.name:  # same one again
            backoff = self._rng.uniform(
                0,
                min(
                    self._settings.backoff_max_s,
                    self._settings.backoff_initial_s * 2 ** (state.attempt_number - 1),
                ),
            )
            if retry_after is not None and retry_after > self._settings.retry_after_max_s:
                return False
            walk.wait_s = max(backoff, retry_after or 0.0)
        # Moving on to a deployment this request has not tried adds no load to the failing
        # one, so it is free; coming back to one already tried spends the retry budget. (When
        # failover spent it too, 20 concurrent calls hitting a failing primary before its
        # breaker opened used it up, and callers got the primary's 502 beside a healthy
        # fallback: 6 of 300 in a fault run.)
        first_visit = walk.position < len(walk.candidates)
        allowed = walk.wait_s < remaining and (first_visit or self._budget.try_retry())
        if allowed:
            metrics.RETRIES.inc()
        return allowed


def _judge(stats: DeploymentStats, failure: BaseException | None, elapsed: float) -> None:
    """Tell a deployment's breaker (and its counts) how a call ended."""
    breaker = stats.breaker
    if failure is None:
        breaker.record(True, elapsed)
    elif not isinstance(failure, BrokerError) or isinstance(failure, WorkerLost):
        breaker.abandon()  # cancelled by the caller, or the worker died: no word on the upstream
        return
    elif _failed(failure)[1]:
        breaker.record(False)
        stats.errors += 1
    else:
        breaker.record(True, elapsed)  # the request's own fault (a 4xx)
    stats.answered += 1


def attempt_headers(deployment: Deployment, attempts: int) -> dict[str, str]:
    """Headers naming the deployment that answered and how many attempts it took."""
    return {
        headers.PROVIDER: deployment.provider,
        headers.DEPLOYMENT: deployment.name,
        headers.ATTEMPTS: str(attempts),
    }
