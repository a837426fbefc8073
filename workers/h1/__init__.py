"""A small HTTP/1.1 client for upstream calls: keep-alive pools on asyncio protocols, parsed
by httptools (see :mod:`workers.h1.client`)."""

from workers.h1.client import DEFAULT_KEEPALIVE_S, DEFAULT_MAX_CONNECTIONS, Call, UpstreamClient
from workers.h1.connection import Headers, Response
from workers.h1.errors import TransportError, TransportTimeout

__all__ = [
    "DEFAULT_KEEPALIVE_S",
    "DEFAULT_MAX_CONNECTIONS",
    "Call",
    "Headers",
    "Response",
    "TransportError",
    "TransportTimeout",
    "UpstreamClient",
]
