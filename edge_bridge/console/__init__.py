"""The operator console: a live page of the whole mesh, served by the bridge."""

from edge_bridge.console.routes import ConsoleRoutes

__all__ = ["ConsoleRoutes"]
