"""LLM Edge Broker: the request pipeline, caches, routing, HTTP bridge and process runtime."""

from __future__ import annotations

from broker.cache import CacheSettings, ResponseCache
from broker.config import BrokerSettings, Config, ConfigError, Deployment, ModelConfig
from broker.errors import BrokerError
from broker.pipeline import ChatPipeline

__all__ = [
    "BrokerError",
    "BrokerSettings",
    "CacheSettings",
    "ChatPipeline",
    "Config",
    "ConfigError",
    "Deployment",
    "ModelConfig",
    "ResponseCache",
]
