"""Builds the adapter for a configured provider."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from workers.anthropic import AnthropicProvider
from workers.base import Provider
from workers.config import ProviderConfig, ProviderKind
from workers.mock import MockProvider
from workers.openai import OpenAIProvider

__all__ = ["build_provider", "http_client"]

#: Pool sized for hundreds of concurrent upstream calls per worker process.
DEFAULT_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200)


def http_client(limits: httpx.Limits = DEFAULT_LIMITS) -> httpx.AsyncClient:
    """A pooled client for one worker process."""
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0, connect=10.0))


def build_provider(
    config: ProviderConfig, environ: Mapping[str, str], client: httpx.AsyncClient
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
        )
    api_key = environ.get(config.api_key_env) if config.api_key_env else None
    if config.api_key_env and not api_key:
        raise ValueError(f"provider {config.name}: environment variable {config.api_key_env} unset")
    if config.kind is ProviderKind.ANTHROPIC:
        return AnthropicProvider(config, client, api_key)
    return OpenAIProvider(config, client, api_key)
