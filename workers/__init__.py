"""Provider workers: one adapter per upstream API, served on ``llm.provider.<name>``
(OpenAI-shaped APIs, Anthropic, Gemini on Google AI Studio and Vertex AI, AWS Bedrock, a mock).

Thin on purpose: a name below is imported from its module when first used, so a process that
reads only the provider settings (:mod:`workers.config`) loads no adapter, HTTP client or
runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy import lazy_exports

if TYPE_CHECKING:
    from workers.anthropic import AnthropicProvider
    from workers.base import Embedder, Provider, ProviderRequest
    from workers.bedrock import BedrockProvider
    from workers.config import ProviderConfig, ProviderKind
    from workers.errors import ErrorKind, ProviderError, kind_for_status
    from workers.gemini import GeminiProvider
    from workers.mock import MockProvider, mock_reply_text
    from workers.openai import OpenAIProvider, parse_retry_after
    from workers.registry import build_provider, http_client
    from workers.runner import WorkerService, serve_worker

__all__ = [
    "AnthropicProvider",
    "BedrockProvider",
    "Embedder",
    "ErrorKind",
    "GeminiProvider",
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

_HOMES = {
    "AnthropicProvider": "anthropic",
    "BedrockProvider": "bedrock",
    "Embedder": "base",
    "ErrorKind": "errors",
    "GeminiProvider": "gemini",
    "MockProvider": "mock",
    "OpenAIProvider": "openai",
    "Provider": "base",
    "ProviderConfig": "config",
    "ProviderError": "errors",
    "ProviderKind": "config",
    "ProviderRequest": "base",
    "WorkerService": "runner",
    "build_provider": "registry",
    "http_client": "registry",
    "kind_for_status": "errors",
    "mock_reply_text": "mock",
    "parse_retry_after": "openai",
    "serve_worker": "runner",
}


__getattr__ = lazy_exports(__name__, _HOMES)
