"""Provider workers: one adapter per upstream API, served on ``llm.provider.<name>``."""

from __future__ import annotations

from workers.anthropic import AnthropicProvider
from workers.base import Provider, ProviderRequest
from workers.config import ProviderConfig, ProviderKind
from workers.errors import ErrorKind, ProviderError, kind_for_status
from workers.mock import MockProvider, mock_reply_text
from workers.openai import OpenAIProvider, parse_retry_after
from workers.registry import build_provider, http_client
from workers.runner import WorkerService, serve_worker

__all__ = [
    "AnthropicProvider",
    "ErrorKind",
    "MockProvider",
    "OpenAIProvider",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "ProviderKind",
    "ProviderRequest",
    "WorkerService",
    "build_provider",
    "http_client",
    "kind_for_status",
    "mock_reply_text",
    "parse_retry_after",
    "serve_worker",
]
