"""Provider settings: how a worker reaches one upstream."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.tables import check_keys, field_names
from schemas.embeddings import MAX_DIMENSIONS

__all__ = ["DEFAULT_EMBEDDING_DIMENSIONS", "DEFAULT_TIMEOUT_S", "ProviderConfig", "ProviderKind"]

#: The longest an upstream call may take when the request's own budget is longer: the
#: official SDKs' (600 s; minutes to a reasoning model's first token are normal).
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_CONCURRENCY = 1024


class ProviderKind(enum.StrEnum):
    """Which adapter serves a provider."""

    MOCK = "mock"
    OPENAI = "openai"
    OPENAI_COMPATIBLE = "openai_compatible"
    AZURE = "azure"
    ANTHROPIC = "anthropic"


_DEFAULT_BASE_URLS = {
    ProviderKind.OPENAI: "https://api.openai.com/v1",
    ProviderKind.ANTHROPIC: "https://api.anthropic.com/v1",
}
#: The mock's vector dimensions when a request names none (``text-embedding-3-small``'s).
DEFAULT_EMBEDDING_DIMENSIONS = 1536
#: A GA Azure OpenAI data-plane API version; override per provider with ``api_version``.
DEFAULT_AZURE_API_VERSION = "2024-10-21"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderConfig:
    """One configured provider.

    Attributes:
        name: the provider's name; its workers consume ``llm.provider.<name>``.
        kind: the adapter.
        base_url: upstream API root (``.../v1`` for OpenAI-shaped APIs).
        api_key_env: the environment variable holding the key; keys never leave the worker.
        headers: extra headers sent upstream on every call.
        timeout_s: upstream timeout when the request carries no tighter deadline.
        max_concurrency: upstream calls in flight per worker process.
        latency_ms: mock only: simulated latency.
        chunk_delay_ms: mock only: simulated delay between streamed chunks.
        api_version: Azure OpenAI only: the ``api-version`` query parameter.
        embedding_dimensions: mock only: a vector's dimensions when the request names none.
    """

    name: str
    kind: ProviderKind
    base_url: str = ""
    api_key_env: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    api_version: str = DEFAULT_AZURE_API_VERSION
    embedding_dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS

    @classmethod
    def from_mapping(cls, name: str, raw: Mapping[str, Any]) -> ProviderConfig:
        """Build from a config-file table; raises ``ValueError`` naming the bad key."""
        check_keys(f"providers.{name}", raw, field_names(cls) - {"name"})
        try:
            kind = ProviderKind(raw.get("kind", name))
        except ValueError:
            choices = ", ".join(k.value for k in ProviderKind)
            raise ValueError(
                f"providers.{name}: unknown kind {raw.get('kind', name)!r} (one of {choices})"
            ) from None
        base_url = str(raw.get("base_url", _DEFAULT_BASE_URLS.get(kind, "")))
        if kind in {ProviderKind.OPENAI_COMPATIBLE, ProviderKind.AZURE} and not base_url:
            raise ValueError(f"providers.{name}: {kind.value} needs base_url")
        config = cls(
            name=name,
            kind=kind,
            base_url=base_url.rstrip("/"),
            api_key_env=raw.get("api_key_env"),
            headers=dict(raw.get("headers", {})),
            timeout_s=float(raw.get("timeout_s", DEFAULT_TIMEOUT_S)),
            max_concurrency=int(raw.get("max_concurrency", DEFAULT_MAX_CONCURRENCY)),
            latency_ms=float(raw.get("latency_ms", 0.0)),
            chunk_delay_ms=float(raw.get("chunk_delay_ms", 0.0)),
            api_version=str(raw.get("api_version", DEFAULT_AZURE_API_VERSION)),
            embedding_dimensions=int(raw.get("embedding_dimensions", DEFAULT_EMBEDDING_DIMENSIONS)),
        )
        if config.timeout_s <= 0 or config.max_concurrency < 1 or config.latency_ms < 0:
            raise ValueError(
                f"providers.{name}: timeout_s, max_concurrency, latency_ms out of range"
            )
        if not 1 <= config.embedding_dimensions <= MAX_DIMENSIONS:
            raise ValueError(
                f"providers.{name}: embedding_dimensions must be from 1 to {MAX_DIMENSIONS}"
            )
        return config

    def has_credentials(self, environ: Mapping[str, str]) -> bool:
        """Whether this provider can serve: keyless kinds always can, others need their key."""
        if self.kind is ProviderKind.MOCK or self.api_key_env is None:
            return True
        return bool(environ.get(self.api_key_env))
