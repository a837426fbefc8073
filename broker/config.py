"""Configuration: models, their deployments, providers and broker knobs, from one TOML file.

The file is validated when loaded; every error names the key at fault. ``os.environ`` is never
read here: callers pass the environment in.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from broker.admission.settings import AdmissionSettings
from broker.audit.settings import AuditSettings
from broker.batch.settings import BatchSettings
from broker.cache.settings import CacheSettings
from broker.responses.settings import ResponsesSettings
from broker.tenancy.jwt_settings import JwtSettings
from broker.tenancy.limits import InputLimits
from broker.tenancy.tenants import TenantConfig
from broker.upstream.breaker import BreakerConfig
from broker.upstream.deployments import Deployment, ModelConfig, Strategy, model_from_mapping
from broker.upstream.retry import ResilienceConfig
from edge_runtime.tables import check_keys
from workers.config import ProviderConfig, ProviderKind

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_REPLICAS",
    "DEFAULT_TIMEOUT_S",
    "BrokerSettings",
    "Config",
    "ConfigError",
    "ConsoleSettings",
    "Deployment",
    "ModelConfig",
    "NatsSettings",
    "Strategy",
]

#: A request's time budget when neither its caller nor its model names one: the official
#: SDKs' own (openai waits 600 s), so a reasoning model thinking for minutes is not cut off.
DEFAULT_TIMEOUT_S = 600.0
#: Anthropic's request limit; coding agents' contexts and images in base64 reach megabytes.
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_IN_FLIGHT = 4096
MOCK_PROVIDER = "mock"
#: Copies of each JetStream asset (stream, KV bucket, object store): 1 suits one server;
#: 3 on a 3-server cluster survives the loss of any one server.
DEFAULT_REPLICAS = 1
#: JetStream's own bound on a stream's replicas.
MAX_REPLICAS = 5


class ConfigError(ValueError):
    """The configuration file is invalid; the message names the key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerSettings:
    """Knobs of the broker pipeline."""

    default_timeout_s: float = DEFAULT_TIMEOUT_S
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    request_log: str = "misses"
    tenant_metrics: bool = False

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> BrokerSettings:
        """Build from the ``[broker]`` table."""
        check_keys(
            "broker",
            raw,
            {
                "default_timeout_s",
                "max_request_bytes",
                "max_in_flight",
                "request_log",
                "tenant_metrics",
            },
        )
        settings = cls(
            default_timeout_s=float(raw.get("default_timeout_s", DEFAULT_TIMEOUT_S)),
            max_request_bytes=int(raw.get("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES)),
            max_in_flight=int(raw.get("max_in_flight", DEFAULT_MAX_IN_FLIGHT)),
            request_log=str(raw.get("request_log", "misses")),
            tenant_metrics=bool(raw.get("tenant_metrics", False)),
        )
        if not isinstance(settings.tenant_metrics, bool) or not isinstance(
            raw.get("tenant_metrics", False), bool
        ):
            raise ConfigError("broker.tenant_metrics must be true or false")
        if settings.request_log not in {"all", "misses", "off"}:
            raise ConfigError("broker.request_log must be all, misses or off")
        if settings.default_timeout_s <= 0:
            raise ConfigError("broker.default_timeout_s must be > 0")
        if settings.max_request_bytes < 1024 or settings.max_in_flight < 1:
            raise ConfigError("broker.max_request_bytes must be >= 1024, max_in_flight >= 1")
        return settings


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleSettings:
    """The ``[console]`` table: keys that open the operator console (hashes, like tenants')."""

    keys: frozenset[str] = frozenset()

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ConsoleSettings:
        """Build from the ``[console]`` table."""
        check_keys("console", raw, {"keys"})
        keys = raw.get("keys", [])
        if not isinstance(keys, list) or any(
            not isinstance(k, str) or not k.startswith("sha256:") or len(k) != 71 for k in keys
        ):
            raise ConfigError("console.keys: store hashes (`llm-edge keys hash KEY`), never keys")
        return cls(keys=frozenset(keys))


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsSettings:
    """The ``[nats]`` table: how the project's JetStream assets are laid out."""

    replicas: int = DEFAULT_REPLICAS

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> NatsSettings:
        """Build from the ``[nats]`` table (the cluster's size is checked at start)."""
        check_keys("nats", raw, {"replicas"})
        replicas = raw.get("replicas", DEFAULT_REPLICAS)
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise ConfigError("nats.replicas must be an integer")
        if not 1 <= replicas <= MAX_REPLICAS:
            raise ConfigError(f"nats.replicas must be from 1 to {MAX_REPLICAS}")
        return cls(replicas=replicas)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole configuration.

    Attributes:
        providers: by name.
        models: by canonical name.
        broker: pipeline knobs.
        cache: cache tiers and policy.
        breaker: circuit breaker thresholds (every deployment).
        resilience: retries, backoff, retry budget.
        batch: the batch engine.
        responses: stored and background responses (the Responses API).
        tenants: tenants, their key hashes, limits and PII mode.
        auth_required: require keys even when none is configured (run-time keys only).
        nats_tenant_subjects: trust ``llm.tenant.<tenant>.*`` subjects as the tenant's identity
            (the NATS server's permissions decide who may publish there).
        jwt: the trusted JWT issuer (``[auth.jwt]``), if any.
        limits: request shape limits.
        console: who may open the operator console.
        nats: JetStream asset layout (replicas).
        admission: waiting for capacity, and sharing deployments' limits among brokers.
        audit: the audit trail (on, and how long it is kept).
    """

    providers: Mapping[str, ProviderConfig]
    models: Mapping[str, ModelConfig]
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    resilience: ResilienceConfig = field(default_factory=ResilienceConfig)
    batch: BatchSettings = field(default_factory=BatchSettings)
    responses: ResponsesSettings = field(default_factory=ResponsesSettings)
    tenants: Mapping[str, TenantConfig] = field(default_factory=dict)
    auth_required: bool = False
    nats_tenant_subjects: bool = False
    jwt: JwtSettings | None = None
    limits: InputLimits = field(default_factory=InputLimits)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    nats: NatsSettings = field(default_factory=NatsSettings)
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    _routes: dict[str, ModelConfig] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for model in self.models.values():
            for name in (model.name, *model.aliases):
                if name in self._routes:
                    raise ConfigError(f"models.{model.name}: name {name!r} is used twice")
                self._routes[name] = model
            for dep in model.deployments:
                if dep.provider not in self.providers:
                    raise ConfigError(
                        f"models.{model.name}: deployment {dep.name!r} names unknown provider "
                        f"{dep.provider!r}"
                    )
        for model in self.models.values():
            named = [("fallback", f) for f in model.fallbacks]
            if model.context_fallback is not None:
                named.append(("context_fallback", model.context_fallback))
            if model.content_policy_fallback is not None:
                named.append(("content_policy_fallback", model.content_policy_fallback))
            for key, fallback in named:
                if fallback not in self.models or fallback == model.name:
                    raise ConfigError(
                        f"models.{model.name}: {key} {fallback!r} is not another configured model"
                    )

    def resolve(self, model: str) -> ModelConfig | None:
        """The model a client's name (or alias) refers to."""
        return self._routes.get(model)

    @classmethod
    def from_toml(cls, text: str, source: str = "<config>") -> Config:
        """Parse and validate a TOML document.

        Raises:
            ConfigError: naming the file and the key at fault.
        """
        try:
            raw = tomllib.loads(text)
            check_keys(
                "top level",
                raw,
                {
                    "broker",
                    "cache",
                    "breaker",
                    "resilience",
                    "batch",
                    "responses",
                    "providers",
                    "models",
                    "tenants",
                    "auth",
                    "limits",
                    "console",
                    "nats",
                    "admission",
                    "audit",
                },
            )
            auth_raw = dict(raw.get("auth", {}))
            jwt_raw = auth_raw.pop("jwt", None)
            auth = _auth_table(auth_raw)
            providers = {
                name: ProviderConfig.from_mapping(name, table)
                for name, table in raw.get("providers", {}).items()
            }
            models = {
                name: model_from_mapping(name, table)
                for name, table in raw.get("models", {}).items()
            }
            return cls(
                providers=providers,
                models=models,
                broker=BrokerSettings.from_mapping(raw.get("broker", {})),
                cache=CacheSettings.from_mapping(raw.get("cache", {})),
                breaker=BreakerConfig.from_mapping(raw.get("breaker", {})),
                resilience=ResilienceConfig.from_mapping(raw.get("resilience", {})),
                batch=BatchSettings.from_mapping(raw.get("batch", {})),
                responses=ResponsesSettings.from_mapping(raw.get("responses", {})),
                tenants={
                    name: TenantConfig.from_mapping(name, table)
                    for name, table in raw.get("tenants", {}).items()
                },
                auth_required=auth["required"],
                nats_tenant_subjects=auth["nats_tenant_subjects"],
                jwt=JwtSettings.from_mapping(jwt_raw) if jwt_raw is not None else None,
                limits=InputLimits.from_mapping(raw.get("limits", {})),
                console=ConsoleSettings.from_mapping(raw.get("console", {})),
                nats=NatsSettings.from_mapping(raw.get("nats", {})),
                admission=AdmissionSettings.from_mapping(raw.get("admission", {})),
                audit=AuditSettings.from_mapping(raw.get("audit", {})),
            )
        except (tomllib.TOMLDecodeError, ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    @classmethod
    def load(cls, path: str | Path | None = None) -> Config:
        """Load ``path``, or the built-in default configuration when it is ``None``."""
        if path is None:
            text = resources.files("broker").joinpath("default_config.toml").read_text()
            return cls.from_toml(text, "default_config.toml")
        return cls.from_toml(Path(path).read_text(), str(path))

    def with_mock_fallback(self, environ: Mapping[str, str]) -> tuple[Config, list[str]]:
        """Serve from the mock provider every model whose providers all lack credentials.

        Returns:
            The adjusted configuration and the names of the models now served by the mock.
        """
        ready = {n for n, p in self.providers.items() if p.has_credentials(environ)}
        providers = dict(self.providers)
        providers.setdefault(
            MOCK_PROVIDER, ProviderConfig(name=MOCK_PROVIDER, kind=ProviderKind.MOCK)
        )
        models: dict[str, ModelConfig] = {}
        mocked: list[str] = []
        for name, model in self.models.items():
            deps = tuple(d for d in model.deployments if d.provider in ready)
            if not deps:
                mocked.append(name)
                deps = (Deployment(name=f"{name}@mock", provider=MOCK_PROVIDER, model=name),)
            models[name] = replace(model, deployments=deps)
        return replace(self, providers=providers, models=models, _routes={}), mocked

    def serving_providers(self) -> list[str]:
        """Providers some model routes to: the workers a full stack needs."""
        return sorted({d.provider for m in self.models.values() for d in m.deployments})


def _auth_table(raw: Mapping[str, Any]) -> dict[str, bool]:
    """The ``[auth]`` table's two switches (``[auth.jwt]`` is read by :class:`JwtSettings`)."""
    names = {"required", "nats_tenant_subjects"}
    check_keys("auth", raw, names)
    for name, value in raw.items():
        if not isinstance(value, bool):
            raise ConfigError(f"auth.{name} must be true or false")
    return {name: bool(raw.get(name, False)) for name in names}
