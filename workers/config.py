"""Provider settings: how a worker reaches one upstream."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.tables import check_keys, field_names
from schemas.embeddings import MAX_DIMENSIONS

__all__ = [
    "DEFAULT_BATCH_INLINE_BYTES",
    "DEFAULT_EMBEDDING_DIMENSIONS",
    "DEFAULT_TIMEOUT_S",
    "GOOGLE_CREDENTIALS_ENV",
    "ProviderConfig",
    "ProviderKind",
]

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
    GEMINI = "gemini"
    VERTEX = "vertex"
    BEDROCK = "bedrock"


_DEFAULT_BASE_URLS = {
    ProviderKind.OPENAI: "https://api.openai.com/v1",
    ProviderKind.ANTHROPIC: "https://api.anthropic.com/v1",
    ProviderKind.GEMINI: "https://generativelanguage.googleapis.com/v1beta",
}
#: The mock's vector dimensions when a request names none (``text-embedding-3-small``'s).
DEFAULT_EMBEDDING_DIMENSIONS = 1536
#: Vertex AI's region when the provider names none.
DEFAULT_VERTEX_REGION = "us-central1"
#: The environment variable naming a Google service-account key file (Google's own name).
GOOGLE_CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
#: What makes the AWS credential chain worth trying without a look at the files it reads.
_AWS_CHAIN_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)
#: A GA Azure OpenAI data-plane API version; override per provider with ``api_version``.
DEFAULT_AZURE_API_VERSION = "2024-10-21"
#: The Gemini API's cap on a batch's inline requests (20 MB): a larger provider batch goes
#: up as a JSONL file through the Files API (up to 2 GB).
DEFAULT_BATCH_INLINE_BYTES = 20 * 1024 * 1024


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
        region: Vertex AI's region (``us-central1``, ``global``) or Bedrock's AWS region
            (default: ``AWS_REGION``, ``AWS_DEFAULT_REGION``, then the profile's).
        project: Vertex AI only: the Google Cloud project (default: the key file's).
        credentials_file: Vertex AI only: a service-account key file (default: the file
            ``GOOGLE_APPLICATION_CREDENTIALS`` names).
        profile: Bedrock only: the AWS profile of the shared config and credentials files
            (default: ``AWS_PROFILE``, else the usual chain).
        batch_inline_bytes: Gemini only: a provider batch whose requests take at most this
            many bytes is sent inline in its create call; a larger one is uploaded as a file.
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
    region: str = ""
    project: str = ""
    credentials_file: str = ""
    profile: str = ""
    batch_inline_bytes: int = DEFAULT_BATCH_INLINE_BYTES

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
            region=str(
                raw.get("region", DEFAULT_VERTEX_REGION if kind is ProviderKind.VERTEX else "")
            ),
            project=str(raw.get("project", "")),
            credentials_file=str(raw.get("credentials_file", "")),
            profile=str(raw.get("profile", "")),
            batch_inline_bytes=int(raw.get("batch_inline_bytes", DEFAULT_BATCH_INLINE_BYTES)),
        )
        if config.timeout_s <= 0 or config.max_concurrency < 1 or config.latency_ms < 0:
            raise ValueError(
                f"providers.{name}: timeout_s, max_concurrency, latency_ms out of range"
            )
        if not 0 <= config.batch_inline_bytes <= DEFAULT_BATCH_INLINE_BYTES:
            raise ValueError(
                f"providers.{name}: batch_inline_bytes must be from 0 to "
                f"{DEFAULT_BATCH_INLINE_BYTES} (the Gemini API's inline cap)"
            )
        if not 1 <= config.embedding_dimensions <= MAX_DIMENSIONS:
            raise ValueError(
                f"providers.{name}: embedding_dimensions must be from 1 to {MAX_DIMENSIONS}"
            )
        return config

    def has_credentials(self, environ: Mapping[str, str]) -> bool:
        """Whether this provider can serve: keyless kinds always can, others need their key.

        Vertex AI needs a service-account key file; Bedrock needs something the AWS chain
        reads (its variables, a profile, or a shared credentials or config file).
        """
        if self.kind is ProviderKind.VERTEX:
            return bool(self.credentials_file or environ.get(GOOGLE_CREDENTIALS_ENV))
        if self.kind is ProviderKind.BEDROCK:
            return bool(self.profile) or _aws_chain_configured(environ)
        if self.kind is ProviderKind.MOCK or self.api_key_env is None:
            return True
        return bool(environ.get(self.api_key_env))


def _aws_chain_configured(environ: Mapping[str, str]) -> bool:
    if any(environ.get(name) for name in _AWS_CHAIN_ENV):
        return True
    home = environ.get("HOME", "")
    files = (
        environ.get("AWS_SHARED_CREDENTIALS_FILE") or (f"{home}/.aws/credentials" if home else ""),
        environ.get("AWS_CONFIG_FILE") or (f"{home}/.aws/config" if home else ""),
    )
    return any(path and Path(path).is_file() for path in files)
