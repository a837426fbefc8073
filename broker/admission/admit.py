"""Admission: a request that finds no capacity waits for it, in order, up to a bound.

Three places can be full, and a request waits at each in turn, holding nothing while it
waits at the first:

1. its **tenant** (rpm/tpm, counted in Redis): the request waits for the tenant's window to
   reset when that comes soon enough (:meth:`Admission.tenant`);
2. the **broker** (``[broker] max_in_flight``): a broker slot (:meth:`Admission.enter`);
3. a **deployment** (its provider's calls in flight, requests and tokens per minute): a
   permit of one of the deployments that could serve it (:meth:`Admission.deployment`,
   then :meth:`Admission.wait_any`), the first that frees.

Each wait ends at ``admission.max_wait_s`` or when the request could no longer be answered
before its deadline, whichever comes first; a request that cannot be served in time is
refused at once (503 ``at_capacity``, 429 for its tenant) with ``Retry-After`` set to when
capacity is expected (:meth:`~broker.admission.gate.Gate.estimate_wait`), never after
waiting in vain. What it waited is added to the request's ``queued_s`` (the
``Llm-Queue-Ms`` header).

With nothing queued, taking capacity is a few comparisons in process: the mesh's shares of
each deployment's limits (:mod:`broker.admission.allocator`) move in the background.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from broker import metrics
from broker.admission.classes import Priority
from broker.admission.gate import Gate, Grant, Permit
from broker.admission.learn import read_limits
from broker.admission.limits import Limits
from broker.admission.pool import Pool
from broker.admission.queue import Ticket
from broker.admission.settings import AdmissionSettings
from broker.admission.waits import WaitBook
from broker.errors import AtCapacity, Overloaded, RateLimited
from broker.request import Call
from broker.tenancy.tenants import TenantConfig
from broker.upstream.deployments import Deployment

__all__ = ["NO_LIMIT", "Admission"]

#: Completion tokens assumed for a request that sets no cap (deployment token limits).
COMPLETION_GUESS = 256
#: Jitter added to a tenant's wait for its window, so waiters do not all return at once.
TENANT_JITTER_S = 0.05


class _Unlimited(Permit):
    """The permit of a deployment without limits: nothing to give back."""

    def __init__(self) -> None:
        super().__init__(None, (None, None, None))

    def release(self) -> None:
        """Nothing is held."""

    def settle_tokens(self, tokens: int) -> None:
        """Nothing is counted."""


#: What :meth:`Admission.deployment` returns for a deployment that has no limit.
NO_LIMIT: Permit = _Unlimited()


class Admission:
    """Every gate of one broker, and the waits at them.

    Args:
        settings: the ``[admission]`` table.
        deployments: every configured deployment.
        max_in_flight: the broker's own capacity (``[broker] max_in_flight``).
        clock: the event loop's clock.
        label: a tenant's metric label.
        shared: the mesh's allocator sets each gate's shares (else a gate has all of its
            limits, as a broker alone would).
        rng: jitter.
    """

    def __init__(
        self,
        settings: AdmissionSettings,
        deployments: Iterable[Deployment],
        *,
        max_in_flight: int,
        clock: Callable[[], float] = time.monotonic,
        label: Callable[[TenantConfig], str] = lambda tenant: tenant.name,
        shared: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._label = label
        self._rng = rng or random.Random()
        self.shared = shared
        self.broker = Gate(
            "broker",
            (Pool(max_in_flight), None, None),
            aging_s=settings.aging_s,
            reserve_window_s=settings.reserve_window_s,
            clock=clock,
        )
        self.limits: dict[str, Limits] = {}
        self.gates: dict[str, Gate] = {}
        self.pauses: dict[str, float] = {}
        #: limits providers named for deployments whose configuration names none
        self.learned: dict[str, tuple[int | None, int | None]] = {}
        #: requests waiting at some gate of this broker
        self.waiting = 0
        self.waits = WaitBook(clock)
        #: the allocator's hook: a gate's demand changed
        self.on_demand: Callable[[str], None] = lambda name: None
        for deployment in deployments:
            limits = Limits(deployment.concurrency, deployment.rpm, deployment.tpm)
            if limits.any:
                self._limit(deployment.name, limits)
        metrics.QUEUE_DEPTH.sources.add(self)

    def _new_gate(self, name: str, pools: tuple[Pool | None, Pool | None, Pool | None]) -> Gate:
        return Gate(
            name,
            pools,
            aging_s=self.settings.aging_s,
            reserve_window_s=self.settings.reserve_window_s,
            clock=self._clock,
            on_release=lambda gate: self.on_demand(gate.name),
        )

    def _limit(self, name: str, limits: Limits) -> Gate:
        """Set a deployment's limits (a gate for it on first use)."""
        sizes = (0, 0, 0) if self.shared else limits.sizes()
        gate = self.gates.get(name)
        if gate is None:
            gate = self.gates[name] = self._new_gate(name, limits.pools(sizes))
        else:  # a limit learned later
            for index, pool in enumerate(limits.pools(sizes)):
                if pool is not None:
                    gate.add_pool(index, pool)
        self.limits[name] = limits
        return gate

    # the three waits

    def ticket(self, prepared: Call, *, tokens: bool = True) -> Ticket:
        """The ticket ``prepared`` waits with (``tokens``: estimate its tokens, for gates
        with a token limit)."""
        tenant = prepared.tenant
        estimate = sum(prepared.estimate(COMPLETION_GUESS)) if tokens else 0
        return Ticket(
            tenant.name,
            tenant.weight,
            prepared.priority,
            (1, 1, estimate),
            since=self._clock(),
            label=self._label(tenant),
        )

    def until(self, prepared: Call, service_s: float = 0.0) -> float:
        """When ``prepared`` stops waiting: at ``max_wait_s``, or while a call expected to
        take ``service_s`` still fits before its deadline."""
        return min(self._clock() + self.settings.max_wait_s, prepared.deadline - service_s)

    async def tenant(self, prepared: Call, admit: Callable[[], Awaitable[None]]) -> None:
        """Admit ``prepared`` by its tenant's and its key's limits, waiting for a window to reset
        when it resets in time.

        Raises:
            RateLimited: the window resets too late (429 with its ``Retry-After``).
            BudgetExceeded: the budget is spent (402, never waited for).
        """
        until = self.until(prepared)
        while True:
            try:
                await admit()
            except RateLimited as exc:
                wait = (exc.retry_after or 1.0) + self._rng.uniform(0, TENANT_JITTER_S)
                if self._clock() + wait > until:
                    self._refused(prepared, "tenant")
                    raise
                await asyncio.sleep(wait)
                self._observe(prepared, wait)
                continue
            return

    async def enter(self, prepared: Call) -> Permit:
        """A broker slot for ``prepared`` (waiting for one while the broker is full).

        Raises:
            Overloaded: as many requests wait as ``max_queued``.
            AtCapacity: no slot frees in time.
        """
        ticket = self.ticket(prepared, tokens=False)
        permit = self.broker.try_take(ticket)
        if permit is not None:
            return permit
        grant = await self.wait_any([self.broker], ticket, prepared, "broker")
        return grant.permit

    def deployment(self, deployment: Deployment, ticket: Ticket) -> Permit | None:
        """Permits of ``deployment`` at once (:data:`NO_LIMIT` when it has no limit), or
        ``None`` when it is full."""
        gate = self.gates.get(deployment.name)
        if gate is None:
            return NO_LIMIT
        permit = gate.try_take(ticket)
        if permit is None and self.shared:
            self.on_demand(gate.name)
        return permit

    def gate(self, deployment: Deployment) -> Gate | None:
        """``deployment``'s gate (``None``: no limits)."""
        return self.gates.get(deployment.name)

    async def wait_any(
        self,
        gates: list[Gate],
        ticket: Ticket,
        prepared: Call,
        where: str,
        service_s: float = 0.0,
    ) -> Grant:
        """Wait at every one of ``gates`` for the first that grants ``ticket``.

        Raises:
            Overloaded: as many requests wait as ``max_queued``.
            AtCapacity: none frees in time (``Retry-After``: the soonest expected).
        """
        now = self._clock()
        until = self.until(prepared, service_s)
        estimates = [e for g in gates if (e := g.estimate_wait(ticket.klass)) is not None]
        expected = min(estimates) if estimates else None
        if self.waiting >= self.settings.max_queued:
            self._refused(prepared, where)
            raise Overloaded(
                f"{self.waiting} requests are waiting in this broker already; retry later",
                retry_after=_seconds(expected),
            )
        if until <= now or (expected is not None and now + expected > until):
            self._refused(prepared, where)
            raise _at_capacity(where, expected, until - now)
        future: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        ticket.future, ticket.since = future, now
        self.waiting += 1
        try:
            for gate in gates:
                gate.enqueue(ticket)
                if self.shared and gate is not self.broker:
                    self.on_demand(gate.name)
            await asyncio.wait({future}, timeout=until - now)
        except BaseException:  # the caller left: a grant that came meanwhile goes back
            if future.done() and not future.cancelled():
                future.result().permit.release()
            raise
        finally:
            self.waiting -= 1
            if not future.done():
                future.cancel()  # (a ticket whose future is done is dead to every gate)
            ticket.close()
            self._observe(prepared, self._clock() - now)
        if not future.cancelled():
            return future.result()
        self._refused(prepared, where)
        late = [e for g in gates if (e := g.estimate_wait(ticket.klass)) is not None]
        raise _at_capacity(where, min(late) if late else None, until - now)

    def _observe(self, prepared: Call, waited: float) -> None:
        """Count a wait: into the request's ``Llm-Queue-Ms``, the wait histogram and the
        console's book."""
        prepared.queued_s += waited
        label, klass = self._label(prepared.tenant), Priority(prepared.priority).label
        metrics.QUEUE_WAIT.labels(label, klass).observe(waited)
        self.waits.waited(label, klass, waited)

    def _refused(self, prepared: Call, where: str) -> None:
        label, klass = self._label(prepared.tenant), Priority(prepared.priority).label
        metrics.QUEUE_REFUSED.labels(label, klass, where).inc()
        self.waits.refuse(label, klass, where)

    # what providers say

    def learn(self, deployment: Deployment, hdrs: Mapping[str, str], status: int) -> None:
        """Take in a worker's reply headers: learned limits, and a pause when the provider
        has nothing left for now (every broker hears of it through the statistics)."""
        learned = read_limits(hdrs, status)
        if learned is not None:
            self.adopt(deployment, learned.rpm, learned.tpm, learned.pause_s)

    def adopt(
        self, deployment: Deployment, rpm: int | None, tpm: int | None, pause_s: float
    ) -> None:
        """Limits a provider named (kept where the configuration names none), and a pause it
        asked for; from its headers here, or from a peer's statistics."""
        if rpm or tpm:
            known = self.limits.get(deployment.name, Limits(deployment.concurrency))
            merged = known.merged(rpm, tpm)
            if merged != known and not (known.rpm and known.tpm):
                self._limit(deployment.name, merged)
                self.learned[deployment.name] = (merged.rpm, merged.tpm)
                self.on_demand(deployment.name)
        if pause_s > 0:
            self.pause(deployment.name, self._clock() + pause_s)

    def pause(self, name: str, until: float) -> None:
        """Send nothing to deployment ``name`` before ``until``."""
        gate = self.gates.get(name)
        if gate is None:
            gate = self.gates[name] = self._new_gate(name, (None, None, None))
        gate.pause(until)
        self.pauses[name] = max(self.pauses.get(name, 0.0), until)

    def paused_for(self, name: str) -> float:
        """Seconds deployment ``name`` stays paused from now (0: not paused)."""
        return max(0.0, self.pauses.get(name, 0.0) - self._clock())

    # what the console and metrics read

    def queue_depths(self) -> list[tuple[str, str, str, int]]:
        """``(gate, tenant label, class, waiting)`` for every gate with requests waiting."""
        rows = []
        for gate in (self.broker, *self.gates.values()):
            for (label, klass), count in gate.queue.depth.items():
                rows.append((gate.name, label, Priority(klass).label, count))
        return rows

    def shares(self) -> list[tuple[str, str, int, int]]:
        """``(deployment, pool, permits this broker holds, the mesh's limit)`` of every
        limit (it holds its share, or more while permits taken before it shrank are in
        use)."""
        rows = []
        for name, limits in self.limits.items():
            gate = self.gates[name]
            for pool, whole, kind in zip(gate.pools, limits.sizes(), POOL_NAMES, strict=True):
                if pool is not None:
                    pool.free(self._clock())
                    rows.append((name, kind, max(pool.size, pool.in_use), whole))
        return rows

    def report(self) -> dict[str, Any]:
        """This broker's admission for ``llm.admin.status``: who waits where now, what
        waited in the last minute, its shares of limits, pauses, its own slots."""
        slots = self.broker.pools[0]
        return {
            "waiting": [
                {"gate": gate, "tenant": tenant, "class": klass, "count": count}
                for gate, tenant, klass, count in self.queue_depths()
            ],
            "waits": self.waits.report(),
            "shares": [
                {"deployment": name, "pool": pool, "held": held, "limit": limit}
                for name, pool, held, limit in self.shares()
            ],
            "paused": {
                name: round(left, 3) for name in self.pauses if (left := self.paused_for(name)) > 0
            },
            "slots": {"size": slots.size, "in_use": slots.in_use} if slots is not None else None,
        }


#: Pool names for metrics and status.
POOL_NAMES = ("calls", "requests", "tokens")


def _seconds(estimate: float | None) -> float:
    return float(max(1, math.ceil(estimate))) if estimate is not None else 1.0


def _at_capacity(where: str, expected: float | None, allowed: float) -> AtCapacity:
    what = "this broker" if where == "broker" else "the deployments of this model"
    when = f"in about {_seconds(expected):g}s" if expected is not None else "later"
    return AtCapacity(
        f"{what} are at capacity and none frees within the {max(0.0, allowed):.1f}s this "
        f"request may wait; retry {when}",
        retry_after=_seconds(expected),
    )
