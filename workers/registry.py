"""Builds the adapter for a configured provider."""

from __future__ import annotations

from collections.abc import Mapping

from workers.anthropic import AnthropicProvider
from workers.base import Provider
from workers.config import ProviderConfig, ProviderKind
from workers.h1 import UpstreamClient
from workers.mock import MockProvider
from workers.openai import OpenAIProvider
from workers.upstream_http import http_client, proxy_for

__all__ = ["build_provider", "http_client"]


def build_provider(
    config: ProviderConfig, environ: Mapping[str, str], client: UpstreamClient
) -> Provider:
    """Return the adapter for ``config``, reading its key from ``environ``.

    Raises:
        ValueError: the provider needs a key that ``environ`` does not hold.
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
    proxy = proxy_for(config.base_url, environ)
    if config.kind is ProviderKind.ANTHROPIC:
        return AnthropicProvider(config, client, api_key, proxy)
    return OpenAIProvider(config, client, api_key, proxy)
