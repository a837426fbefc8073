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

from broker.cache import CacheSettings
from workers.config import ProviderConfig, ProviderKind

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_TIMEOUT_S",
    "BrokerSettings",
    "Config",
    "ConfigError",
    "Deployment",
    "ModelConfig",
]

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_REQUEST_BYTES = 1_000_000
DEFAULT_MAX_IN_FLIGHT = 4096
MOCK_PROVIDER = "mock"


class ConfigError(ValueError):
    """The configuration file is invalid; the message names the key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    """One place a model is served: a provider plus the model name it knows."""

    name: str
    provider: str
    model: str
    weight: float = 1.0
    priority: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    """A model name clients send, its aliases and its deployments."""

    name: str
    deployments: tuple[Deployment, ...]
    aliases: tuple[str, ...] = ()
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerSettings:
    """Knobs of the broker pipeline."""

    default_timeout_s: float = DEFAULT_TIMEOUT_S
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> BrokerSettings:
        """Build from the ``[broker]`` table."""
        _check_keys("broker", raw, {"default_timeout_s", "max_request_bytes", "max_in_flight"})
        settings = cls(
            default_timeout_s=float(raw.get("default_timeout_s", DEFAULT_TIMEOUT_S)),
            max_request_bytes=int(raw.get("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES)),
            max_in_flight=int(raw.get("max_in_flight", DEFAULT_MAX_IN_FLIGHT)),
        )
        if settings.default_timeout_s <= 0:
            raise ConfigError("broker.default_timeout_s must be > 0")
        if settings.max_request_bytes < 1024 or settings.max_in_flight < 1:
            raise ConfigError("broker.max_request_bytes must be >= 1024, max_in_flight >= 1")
        return settings


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole configuration.

    Attributes:
        providers: by name.
        models: by canonical name.
        broker: pipeline knobs.
        cache: cache tiers and policy.
    """

    providers: Mapping[str, ProviderConfig]
    models: Mapping[str, ModelConfig]
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
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
            _check_keys("top level", raw, {"broker", "cache", "providers", "models"})
            providers = {
                name: ProviderConfig.from_mapping(name, table)
                for name, table in raw.get("providers", {}).items()
            }
            models = {
                name: _model_from_mapping(name, table)
                for name, table in raw.get("models", {}).items()
            }
            return cls(
                providers=providers,
                models=models,
                broker=BrokerSettings.from_mapping(raw.get("broker", {})),
                cache=CacheSettings.from_mapping(raw.get("cache", {})),
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


def _check_keys(where: str, raw: Mapping[str, Any], known: set[str]) -> None:
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")


def _model_from_mapping(name: str, raw: Mapping[str, Any]) -> ModelConfig:
    _check_keys(f"models.{name}", raw, {"deployments", "aliases", "timeout_s"})
    deployments = []
    for i, dep in enumerate(raw.get("deployments", [])):
        _check_keys(
            f"models.{name}.deployments[{i}]",
            dep,
            {"name", "provider", "model", "weight", "priority"},
        )
        if "provider" not in dep:
            raise ConfigError(f"models.{name}.deployments[{i}]: missing provider")
        deployments.append(
            Deployment(
                name=str(dep.get("name", f"{name}@{dep['provider']}")),
                provider=str(dep["provider"]),
                model=str(dep.get("model", name)),
                weight=float(dep.get("weight", 1.0)),
                priority=int(dep.get("priority", 0)),
            )
        )
    if not deployments:
        raise ConfigError(f"models.{name}: needs at least one deployment")
    names = [d.name for d in deployments]
    if len(set(names)) != len(names):
        raise ConfigError(f"models.{name}: duplicate deployment names {names}")
    timeout = raw.get("timeout_s")
    return ModelConfig(
        name=name,
        deployments=tuple(deployments),
        aliases=tuple(str(a) for a in raw.get("aliases", [])),
        timeout_s=float(timeout) if timeout is not None else None,
    )
