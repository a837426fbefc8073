"""Models and their deployments, as configured (the ``[models.*]`` tables)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.upstream.prices import (
    DEFAULT_TIER,
    PRICE_KEYS,
    Prices,
    Tokens,
    check_prices,
    resolve_prices,
    tier_prices,
)
from edge_runtime.tables import check_keys

__all__ = [
    "DEFAULT_BATCH_DISCOUNT",
    "Deployment",
    "ModelConfig",
    "Strategy",
    "model_from_mapping",
]

#: The price factor of the providers' Batch APIs (OpenAI's and Anthropic's: 50 % off).
DEFAULT_BATCH_DISCOUNT = 0.5


class Strategy(enum.StrEnum):
    """Per-model routing strategy (see :mod:`broker.upstream.router`)."""

    ROUND_ROBIN = "round_robin"
    WEIGHTED = "weighted"
    FAILOVER = "failover"
    LEAST_LATENCY = "least_latency"
    COST = "cost"
    LEAST_BUSY = "least_busy"


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    """One place a model is served: a provider plus the model name it knows.

    Attributes:
        input_price, output_price: USD per 1M prompt / completion tokens.
        cached_input_price, cache_write_price, cache_write_1h_price: USD per 1M input tokens
            read from the provider's prompt cache, written to it, written to it for an hour
            (``None``: as :func:`~broker.upstream.prices.resolve_prices` defaults them).
        tiers: the rates of each service tier priced apart (``flex``, ``priority``,
            ``batch`` ...), resolved; a tier not named costs the base rates.
        rpm, tpm, concurrency: the provider's limits (requests and tokens per minute, calls
            in flight), held by the whole mesh of brokers together; a request waits for a
            full deployment (:mod:`broker.admission`).
        timeout_s: per-attempt upstream budget (the request's deadline still bounds it).
        probe_s: how often to probe the deployment while it is idle (``None``: the
            ``[admission] probe_s`` of unpriced deployments; 0: never).
        context_window: the tokens a call may hold, prompt and answer together (``None``:
            not declared, so never checked: the upstream decides).
        max_output_tokens: the most tokens it writes in one answer (``None``: not declared).
        batch_discount: the price factor of lines run on the provider's own Batch API
            (:data:`DEFAULT_BATCH_DISCOUNT`: OpenAI and Anthropic charge half).
    """

    name: str
    provider: str
    model: str
    weight: float = 1.0
    priority: int = 0
    input_price: float = 0.0
    output_price: float = 0.0
    cached_input_price: float | None = None
    cache_write_price: float | None = None
    cache_write_1h_price: float | None = None
    tiers: tuple[tuple[str, Prices], ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    timeout_s: float | None = None
    probe_s: float | None = None
    batch_discount: float = DEFAULT_BATCH_DISCOUNT
    context_window: int | None = None
    max_output_tokens: int | None = None
    _base: Prices = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # resolved once: resolving the table on every answer cost 3.8 µs
        base = resolve_prices({key: getattr(self, key) for key in PRICE_KEYS})
        object.__setattr__(self, "_base", base)

    def takes(self, prompt_tokens: int, max_tokens: int) -> bool:
        """Whether a call of ``prompt_tokens`` asking for up to ``max_tokens`` (0: no cap
        asked) fits its declared window and answer length."""
        if self.max_output_tokens is not None and max_tokens > self.max_output_tokens:
            return False
        return self.context_window is None or prompt_tokens + max_tokens <= self.context_window

    @property
    def priced(self) -> bool:
        """Whether the deployment has a price (cost headers and metrics are named only then)."""
        base = (self.input_price, self.output_price, self.cached_input_price)
        writes = (self.cache_write_price, self.cache_write_1h_price)
        return any((*base, *writes)) or bool(self.tiers)

    def prices(self, tier: str | None = None) -> Prices:
        """The rates of ``tier`` (its own when the deployment prices it apart, else the base)."""
        for name, prices in self.tiers:
            if name == tier:
                return prices
        return self._base

    def cost(self, tokens: Tokens, tier: str | None = DEFAULT_TIER) -> float:
        """USD for ``tokens`` served in ``tier``, by :meth:`~broker.upstream.prices.Prices.cost`
        (the one cost formula: routing by cost, the spend meter, batches and money saved by
        hits use it)."""
        return self.prices(tier).cost(tokens)

    def batch_cost(self, tokens: Tokens) -> float:
        """USD for a line run on the provider's own Batch API: at the deployment's ``batch``
        tier when it prices one, else :meth:`cost` times ``batch_discount``."""
        if any(name == "batch" for name, _ in self.tiers):
            return self.cost(tokens, "batch")
        return self.cost(tokens) * self.batch_discount


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    """A model name clients send, its aliases, deployments, strategy and fallbacks.

    Attributes:
        fallbacks: models tried when every deployment fails or is open.
        context_fallback: the model a request too long for every deployment goes to (and
            one the upstream refused as too long is sent to once): :mod:`broker.upstream.fallback`.
        content_policy_fallback: the model a request refused for content policy is sent to
            once.
    """

    name: str
    deployments: tuple[Deployment, ...]
    aliases: tuple[str, ...] = ()
    timeout_s: float | None = None
    strategy: Strategy = Strategy.ROUND_ROBIN
    fallbacks: tuple[str, ...] = ()
    context_fallback: str | None = None
    content_policy_fallback: str | None = None
    batch_offload: str | None = None
    #: whether some deployment declares a context window or an answer length (resolved once:
    #: every request asks, and walking the deployments cost 0.46 µs against 0.03 µs)
    windowed: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        windowed = any(
            d.context_window is not None or d.max_output_tokens is not None
            for d in self.deployments
        )
        object.__setattr__(self, "windowed", windowed)


_DEPLOYMENT_KEYS = {
    "name",
    "provider",
    "model",
    "weight",
    "priority",
    "input_price",
    "output_price",
    "cached_input_price",
    "cache_write_price",
    "cache_write_1h_price",
    "tiers",
    "rpm",
    "tpm",
    "concurrency",
    "timeout_s",
    "probe_s",
    "context_window",
    "max_output_tokens",
    "batch_discount",
}
#: What a model's table may declare for all its deployments (each may declare its own).
_INHERITED = ("context_window", "max_output_tokens")
_MODEL_KEYS = {
    "deployments",
    "aliases",
    "timeout_s",
    "strategy",
    "fallbacks",
    "context_fallback",
    "content_policy_fallback",
    "batch_offload",
    *_INHERITED,
}


def _optional(raw: Mapping[str, Any], key: str, kind: type[int] | type[float]) -> Any:
    return None if raw.get(key) is None else kind(raw[key])


def _deployment(
    model: str, index: int, raw: Mapping[str, Any], inherited: Mapping[str, Any]
) -> Deployment:
    where = f"models.{model}.deployments[{index}]"
    check_keys(where, raw, _DEPLOYMENT_KEYS)
    raw = {**inherited, **raw}
    if "provider" not in raw:
        raise ValueError(f"{where}: missing provider")
    prices = check_prices(where, raw)
    tiers = tier_prices(where, raw, raw.get("tiers"))
    try:
        deployment = Deployment(
            name=str(raw.get("name", f"{model}@{raw['provider']}")),
            provider=str(raw["provider"]),
            model=str(raw.get("model", model)),
            weight=float(raw.get("weight", 1.0)),
            priority=int(raw.get("priority", 0)),
            input_price=prices["input_price"] or 0.0,
            output_price=prices["output_price"] or 0.0,
            cached_input_price=prices["cached_input_price"],
            cache_write_price=prices["cache_write_price"],
            cache_write_1h_price=prices["cache_write_1h_price"],
            tiers=tiers,
            rpm=_optional(raw, "rpm", int),
            tpm=_optional(raw, "tpm", int),
            concurrency=_optional(raw, "concurrency", int),
            timeout_s=_optional(raw, "timeout_s", float),
            probe_s=_optional(raw, "probe_s", float),
            context_window=_optional(raw, "context_window", int),
            max_output_tokens=_optional(raw, "max_output_tokens", int),
            batch_discount=float(raw.get("batch_discount", DEFAULT_BATCH_DISCOUNT)),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    if deployment.weight <= 0:
        raise ValueError(f"{where}: weight must be > 0")
    limits = (deployment.rpm, deployment.tpm, deployment.concurrency, deployment.timeout_s)
    if any(v is not None and v <= 0 for v in limits):
        raise ValueError(f"{where}: rpm, tpm, concurrency and timeout_s must be > 0")
    if any(
        v is not None and v <= 0 for v in (deployment.context_window, deployment.max_output_tokens)
    ):
        raise ValueError(f"{where}: context_window and max_output_tokens must be > 0")
    if not 0 <= deployment.batch_discount <= 1:
        raise ValueError(f"{where}: batch_discount must be between 0 and 1")
    if deployment.probe_s is not None and deployment.probe_s < 0:
        raise ValueError(f"{where}: probe_s must be >= 0")
    return deployment


def model_from_mapping(name: str, raw: Mapping[str, Any]) -> ModelConfig:
    """Parse one ``[models.<name>]`` table; raises ``ValueError`` naming the key."""
    check_keys(f"models.{name}", raw, _MODEL_KEYS)
    inherited = {key: raw[key] for key in _INHERITED if key in raw}
    deployments = [
        _deployment(name, i, d, inherited) for i, d in enumerate(raw.get("deployments", []))
    ]
    if not deployments:
        raise ValueError(f"models.{name}: needs at least one deployment")
    names = [d.name for d in deployments]
    if len(set(names)) != len(names):
        raise ValueError(f"models.{name}: duplicate deployment names {names}")
    try:
        strategy = Strategy(raw.get("strategy", Strategy.ROUND_ROBIN))
    except ValueError:
        choices = ", ".join(s.value for s in Strategy)
        raise ValueError(
            f"models.{name}: unknown strategy {raw.get('strategy')!r} (one of {choices})"
        ) from None
    timeout = _optional(raw, "timeout_s", float)
    if timeout is not None and timeout <= 0:
        raise ValueError(f"models.{name}: timeout_s must be > 0")
    offload = raw.get("batch_offload")
    if offload is not None and offload not in {"auto", "never"}:
        raise ValueError(f"models.{name}.batch_offload must be auto or never")
    return ModelConfig(
        name=name,
        deployments=tuple(deployments),
        aliases=tuple(str(a) for a in raw.get("aliases", [])),
        timeout_s=timeout,
        strategy=strategy,
        fallbacks=tuple(str(f) for f in raw.get("fallbacks", [])),
        context_fallback=_name(raw, "context_fallback"),
        content_policy_fallback=_name(raw, "content_policy_fallback"),
        batch_offload=offload,
    )


def _name(raw: Mapping[str, Any], key: str) -> str | None:
    return None if raw.get(key) is None else str(raw[key])
