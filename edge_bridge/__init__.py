"""The HTTP bridge: OpenAI-compatible HTTP in front of the NATS API."""

from __future__ import annotations

from edge_bridge.app import DEFAULT_HTTP_TIMEOUT_S, BridgeApp
from edge_bridge.server import BridgeOptions, BridgeServer, serve_bridge

__all__ = ["DEFAULT_HTTP_TIMEOUT_S", "BridgeApp", "BridgeOptions", "BridgeServer", "serve_bridge"]
