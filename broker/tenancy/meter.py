"""The meter: whether a tenant may send a request now, and what each answer cost it.

It is the tenancy wing's one decision point on the request path: the pipeline asks it to
admit a request (budget, then rate limits), to price an upstream answer, and to charge the
tenant afterwards (tokens, tpm true-up, spend). A request whose key has limits of its own
(a :class:`~broker.tenancy.grants.Grant`) is held to those and to its tenant's: both budgets
are checked, both rate-limit scopes counted at once, and its cost added to both. Prices come from
:meth:`~broker.upstream.deployments.Deployment.cost`, the one cost formula: cache reads and
writes at their own rates, at the rates of the service tier that served the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from broker import metrics
from broker.cache.response import CachedReply
from broker.request import Call, Reply
from broker.tenancy.budget import SpendLedger
from broker.tenancy.limits import RateLimiter, Scope, rate_limited
from broker.tenancy.tenants import Caller, TenantConfig
from broker.tenancy.usage import Metered, metered, metered_usage
from broker.upstream.deployments import Deployment
from broker.upstream.prices import DEFAULT_TIER, Tokens, served_tier
from schemas import Usage, headers

__all__ = ["Charge", "KeyScope", "Meter"]


@dataclass(frozen=True, slots=True)
class Charge:
    """What one upstream answer cost: the deployment that gave it, USD, its usage (in OpenAI
    terms, and by how its tokens are billed) and the service tier it was priced at (``None``:
    the answer named none, and the base rates applied).

    ``refused`` is the charge for an answer that refused the request for its content before
    a content-policy fallback gave this one (its provider bills it): the request is charged
    both, each counted under its own provider and tier (:meth:`parts`), and ``Llm-Cost-Usd``
    names the sum (:attr:`total`).
    """

    deployment: Deployment
    cost: float
    usage: Usage | None
    tokens: Tokens | None = None
    tier: str | None = None
    refused: Charge | None = None

    def parts(self) -> list[Charge]:
        """Each answer charged: a refused one first, then this one."""
        earlier = self.refused.parts() if self.refused is not None else []
        return [*earlier, self]

    @property
    def total(self) -> float:
        """USD for every answer charged."""
        return sum(part.cost for part in self.parts())

    @property
    def total_tokens(self) -> int | None:
        """The tokens of every answer charged (``None``: none reported usage)."""
        counted = [part.usage.total_tokens for part in self.parts() if part.usage is not None]
        return sum(counted) if counted else None

    def reply_headers(self) -> dict[str, str]:
        """The reply headers naming the cost (when a deployment charged is priced) and the
        tier."""
        priced = any(part.deployment.priced for part in self.parts())
        out = {headers.COST: f"{self.total:.6f}"} if priced else {}
        if self.tier is not None:
            out[headers.SERVICE_TIER] = self.tier
        return out


class Meter:
    """Admission, pricing and charging for every tenant.

    Args:
        deployments: every configured deployment by name (cache entries name theirs).
        limiter: per-tenant rpm/tpm, shared through Redis.
        ledger: per-tenant spend, shared through Redis.
        tenant_metrics: label token and cost metrics with the tenant.
    """

    def __init__(
        self,
        deployments: Mapping[str, Deployment],
        limiter: RateLimiter,
        ledger: SpendLedger,
        *,
        tenant_metrics: bool = False,
    ) -> None:
        self._deployments = deployments
        self.limiter = limiter
        self.ledger = ledger
        self._tenant_metrics = tenant_metrics

    @staticmethod
    def limits(prepared: Call) -> bool:
        """Whether admitting the request waits on the shared counters."""
        tenant, grant = prepared.tenant, prepared.grant
        return bool(tenant.rpm or tenant.tpm or tenant.budget_usd is not None) or (
            grant is not None and grant.limited
        )

    @staticmethod
    def budgeted(prepared: Call) -> bool:
        """Whether a budget applies (its spend is then recorded before the reply goes out,
        so the next request sees it)."""
        grant = prepared.grant
        return prepared.tenant.budget_usd is not None or (
            grant is not None and grant.budget_usd is not None
        )

    async def admit(self, prepared: Call, *, count: bool = True) -> None:
        """Check the budgets, then count the request against the tenant's limits and its
        key's own (one atomic step: it is counted in both or in neither); with ``count``
        false, only the budgets (a background response's run, counted when it was accepted).

        Raises:
            BudgetExceeded: the tenant's or the key's budget is spent (402).
            RateLimited: over rpm or tpm (429 with ``x-ratelimit-*`` headers of the limit
                that refused it).
        """
        tenant, grant = prepared.tenant, prepared.grant
        if tenant.budget_usd is not None:
            await self.ledger.check(tenant.name, tenant.budget_usd, tenant.budget_period)
        if grant is not None and grant.budget_usd is not None:
            period = grant.budget_period or tenant.budget_period
            await self.ledger.check(_scope(prepared), grant.budget_usd, period, "this key's")
        if not count:
            return
        scopes = [Scope(tenant.name, tenant.rpm, tenant.tpm)]
        if grant is not None and (grant.rpm or grant.tpm):
            scopes.append(Scope(_scope(prepared), grant.rpm, grant.tpm))
        usage = await self.limiter.take(scopes, sum(prepared.estimate()))
        if not usage.allowed:
            raise rate_limited(usage, scopes[usage.scope], "this key's " if usage.scope else "")

    def price(self, reply: Reply, tier: str | None = None) -> Charge | None:
        """The charge for an upstream answer (``None`` for errors), at the rates of ``tier``
        when given (a batch's), else of the tier the answer says served it; with the charge
        for the answer it replaced when a content-policy fallback gave it (``reply.refused``),
        which stands alone when the fallback failed."""
        refused = self.price(reply.refused, tier) if reply.refused is not None else None
        if reply.status != 200:
            return refused
        deployment = self._deployments.get(reply.headers.get(headers.DEPLOYMENT, ""))
        if deployment is None:
            return refused
        charge = _priced(deployment, metered(reply.body), tier)
        return charge if refused is None else replace(charge, refused=refused)

    def price_stream(
        self, answered_by: Mapping[str, str], usage: Usage | None, service_tier: str | None
    ) -> Charge | None:
        """The charge for a stream, from the usage and tier kept as its pieces were relayed
        (its answer is not encoded and read again for them); ``answered_by`` names the
        deployment (``Llm-Deployment``)."""
        deployment = self._deployments.get(answered_by.get(headers.DEPLOYMENT, ""))
        if deployment is None:
            return None
        if usage is None:  # nothing to price, but the tier that served is known
            return Charge(deployment, 0.0, None, None, served_tier(service_tier))
        return _priced(deployment, metered_usage(usage, service_tier), None)

    def saved(self, prepared: Call, hit: CachedReply) -> float | None:
        """USD a cache hit saved, at the price of the deployment that gave the answer (counted
        in ``llm_edge_cost_saved_usd_total``); ``None`` when that deployment is not priced."""
        deployment = self._deployments.get(hit.deployment)
        if deployment is None or not deployment.priced:
            return None
        found = metered(hit.body)
        if found is None:
            return 0.0
        saved = deployment.cost(found.tokens, found.tier)
        metrics.COST_SAVED.labels(prepared.model.name).inc(saved)
        return saved

    def saved_tokens(self, prepared: Call, tokens: Mapping[str, int]) -> float | None:
        """USD the cached inputs of an embeddings answer saved: their tokens (by the
        deployment that computed them) at that deployment's input price (counted in
        ``llm_edge_cost_saved_usd_total``); ``None`` when none of those deployments is priced."""
        priced = [
            (deployment, count)
            for name, count in tokens.items()
            if (deployment := self._deployments.get(name)) is not None and deployment.priced
        ]
        if not priced:
            return None
        saved = sum(deployment.cost(Tokens(input=count)) for deployment, count in priced)
        metrics.COST_SAVED.labels(prepared.model.name).inc(saved)
        return saved

    async def charge_tenant(
        self,
        tenant: TenantConfig,
        model: str,
        charge: Charge,
        *,
        estimate: int | None = None,
        key: KeyScope | None = None,
    ) -> None:
        """Charge ``tenant`` for an answer priced after its request was answered (a
        background response that ran at its upstream): tokens and cost counted under
        ``model``, the cost added to its spend, and its tpm trued up from ``estimate`` (the
        tokens counted when the request was admitted; ``None``: not known, left as counted)
        to the answer's usage, in the minute the answer is known as for any request. The key
        that sent it (``key``: its tpm and budget of its own, as recorded when the request
        was accepted) is charged the same.
        """
        label = tenant.name if self._tenant_metrics else ""
        used = charge.total_tokens
        if used is not None and estimate is not None:
            scopes = [tenant.name] if tenant.tpm else []
            if key is not None and key.tpm:
                scopes.append(key.scope)
            await self.limiter.settle(scopes, used - estimate)
        also = None
        if key is not None and key.budget_period:
            also = (key.scope, key.budget_period)
        for part in charge.parts():
            tier = part.tier or DEFAULT_TIER
            self._count(part, model, label)
            await self.ledger.add(
                tenant.name, tenant.budget_period, part.cost, model, also, tier=tier
            )

    async def charge(self, prepared: Call, charge: Charge | None) -> None:
        """Count tokens, true up the tenant's tpm, add the cost to its spend."""
        if charge is None:
            return
        tenant, grant = prepared.tenant, prepared.grant
        model = prepared.model.name
        label = tenant.name if self._tenant_metrics else ""
        used = charge.total_tokens
        if used is not None:
            scopes = [tenant.name] if tenant.tpm else []
            if grant is not None and grant.tpm:
                scopes.append(_scope(prepared))
            if scopes:  # the estimate was counted up front (by admit)
                await self.limiter.settle(scopes, used - sum(prepared.estimate()))
        also = None
        if grant is not None and grant.budget_usd is not None:
            also = (_scope(prepared), grant.budget_period or tenant.budget_period)
        for part in charge.parts():  # a refused answer's, then the one given
            tier = part.tier or DEFAULT_TIER
            self._count(part, model, label)
            await self.ledger.add(
                tenant.name, tenant.budget_period, part.cost, model, also, tier=tier
            )

    @staticmethod
    def _count(part: Charge, model: str, label: str) -> None:
        """One answer's tokens and cost in the metrics, under its deployment's provider."""
        provider = part.deployment.provider
        if part.usage is not None:
            _count_tokens(part.tokens, provider, model, label)
        if part.cost > 0:
            metrics.COST.labels(provider, model, part.tier or DEFAULT_TIER, label).inc(part.cost)


def _priced(deployment: Deployment, found: Metered | None, tier: str | None) -> Charge:
    """``found`` priced at ``tier``'s rates when given, else at the served tier's."""
    if found is None:
        return Charge(deployment, 0.0, None, None, tier)
    served = tier or found.tier
    cost = deployment.cost(found.tokens, served)
    return Charge(deployment, cost, found.usage, found.tokens, served)


def _count_tokens(tokens: Tokens | None, provider: str, model: str, tenant: str) -> None:
    """``llm_edge_tokens_total`` by kind: input neither read from nor written to the prompt
    cache (``prompt``), read from it (``cached``), written to it (``cache_write``), output
    (``completion``); the kinds add up to the answer's total."""
    if tokens is None:
        return
    kinds = (
        ("prompt", tokens.uncached),
        ("cached", tokens.cached),
        ("cache_write", tokens.cache_write),
        ("completion", tokens.output),
    )
    for kind, count in kinds:
        if count or kind in {"prompt", "completion"}:
            metrics.TOKENS.labels(provider, model, kind, tenant).inc(count)


@dataclass(frozen=True, slots=True)
class KeyScope:
    """A key's own counters, as a request it sent recorded them (an answer charged later).

    Attributes:
        scope: the counters' name, ``<tenant>/<grant id>``.
        tpm: the key has a tpm of its own.
        budget_period: its own budget's period (empty: it has no budget).
    """

    scope: str
    tpm: bool = False
    budget_period: str = ""

    @classmethod
    def of(cls, caller: Caller) -> KeyScope | None:
        """The key of ``caller`` when it has a tpm or budget of its own."""
        grant = caller.grant
        if grant is None or (not grant.tpm and grant.budget_usd is None):
            return None
        period = ""
        if grant.budget_usd is not None:
            period = grant.budget_period or caller.tenant.budget_period
        return cls(f"{caller.tenant.name}/{grant.id}", bool(grant.tpm), period)


def _scope(prepared: Call) -> str:
    """The counters' name of a request's key: ``<tenant>/<grant id>`` (a tenant name never
    holds ``/``, so no tenant's counters are a key's)."""
    assert prepared.grant is not None
    return f"{prepared.tenant.name}/{prepared.grant.id}"
