"""Builds the adapter for a configured provider."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

from workers.anthropic import AnthropicProvider
from workers.base import Provider
from workers.config import ProviderConfig, ProviderKind
from workers.gemini import ApiKeyAuth, GeminiProvider
from workers.h1 import UpstreamClient
from workers.mock import MockProvider
from workers.openai import OpenAIProvider
from workers.upstream_http import http_client, proxy_for

__all__ = ["build_provider", "http_client"]


def _require(config: ProviderConfig, module: str, extra: str) -> None:
    """Refuse a kind whose optional library is not installed, naming the extra to install."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing too
        found = False
    if not found:
        raise ValueError(
            f"provider {config.name}: kind {config.kind.value} needs the {extra} extra "
            f"(pip install 'llm-edge-broker[{extra}]')"
        )


def build_provider(
    config: ProviderConfig, environ: Mapping[str, str], client: UpstreamClient
) -> Provider:
    """Return the adapter for ``config``, reading its key from ``environ``.

    Raises:
        ValueError: the provider needs a key that ``environ`` does not hold, a library that
            is not installed, or settings it lacks (a Vertex AI key file, a Bedrock region).
    """
    if config.kind is ProviderKind.MOCK:
        return MockProvider(
            config.name,
            latency_s=config.latency_ms / 1000,
            chunk_delay_s=config.chunk_delay_ms / 1000,
            embedding_dimensions=config.embedding_dimensions,
        )
    api_key = environ.get(config.api_key_env) if config.api_key_env else None
    if config.api_key_env and not api_key:
        raise ValueError(f"provider {config.name}: environment variable {config.api_key_env} unset")
    if config.kind is ProviderKind.VERTEX:
        _require(config, "google.auth", "vertex")
        from workers.vertex import vertex_provider  # noqa: PLC0415  (google-auth: Vertex only)

        return vertex_provider(config, environ, client)
    if config.kind is ProviderKind.BEDROCK:
        _require(config, "botocore", "bedrock")
        from workers.bedrock import bedrock_provider  # noqa: PLC0415  (botocore: Bedrock only)

        return bedrock_provider(config, environ, client)
    proxy = proxy_for(config.base_url, environ)
    if config.kind is ProviderKind.ANTHROPIC:
        return AnthropicProvider(config, client, api_key, proxy)
    if config.kind is ProviderKind.GEMINI:
        return GeminiProvider(
            config, client, f"{config.base_url}/models", ApiKeyAuth(api_key), proxy
        )
    return OpenAIProvider(config, client, api_key, proxy)
