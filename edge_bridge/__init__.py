"""The HTTP bridge: OpenAI-compatible HTTP in front of the NATS API.

Thin on purpose: a name below is imported from its module when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy import lazy_exports

if TYPE_CHECKING:
    from edge_bridge.app import DEFAULT_HTTP_TIMEOUT_S, BridgeApp
    from edge_bridge.server import BridgeOptions, BridgeServer, serve_bridge

__all__ = ["DEFAULT_HTTP_TIMEOUT_S", "BridgeApp", "BridgeOptions", "BridgeServer", "serve_bridge"]

_HOMES = {
    "DEFAULT_HTTP_TIMEOUT_S": "app",
    "BridgeApp": "app",
    "BridgeOptions": "server",
    "BridgeServer": "server",
    "serve_bridge": "server",
}


__getattr__ = lazy_exports(__name__, _HOMES)
