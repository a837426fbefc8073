"""Runs the bridge on uvicorn (httptools parser; uvloop when the process runs on it).

Requests uvicorn cannot parse are refused with our JSON envelope too (see
:mod:`edge_bridge.protocol`). The bridge is a NATS micro service like the other roles
(``llm-edge-bridge``): discovery and the operator console list it with the HTTP requests it
answered and has in flight, which uvicorn counts anyway (nothing is added per request).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass

import uvicorn
from nats.micro.service import Service

from edge_bridge.app import DEFAULT_HTTP_TIMEOUT_S, DEFAULT_MAX_REQUEST_BYTES, BridgeApp
from edge_bridge.protocol import EnvelopeHttpToolsProtocol
from edge_bridge.retry import Reconnects
from edge_client.request import DEFAULT_RETRY, RetryPolicy
from edge_runtime.discovery import register
from edge_runtime.lifecycle import serve
from edge_runtime.local import LocalRoutes, local_view
from edge_runtime.process import (
    DEFAULT_INBOX_PREFIX,
    STOP_STEP_S,
    Lifeline,
    close_quietly,
    connect,
    settle,
)

__all__ = ["BridgeOptions", "BridgeServer", "serve_bridge"]

log = logging.getLogger("llm_edge.bridge")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeOptions:
    """Where the bridge listens and connects."""

    nats_url: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    timeout_s: float = DEFAULT_HTTP_TIMEOUT_S
    tls_cert: str | None = None  # HTTPS when both are set
    tls_key: str | None = None
    nats_tls: ssl.SSLContext | None = None
    nats_inbox_prefix: str = DEFAULT_INBOX_PREFIX  # the bridge user may read only its own
    #: How a chat or messages request lost to a NATS failover is sent again (its deadline,
    #: ``timeout_s`` or the caller's ``Llm-Timeout-Ms``, bounds every attempt).
    retry: RetryPolicy = DEFAULT_RETRY
    #: The largest request body read (413 above it, naming the limit); the NATS server's
    #: max_payload caps it too.
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    #: Host names beside loopback ones that the keyless console answers to.
    console_hosts: frozenset[str] = frozenset()


class BridgeServer:
    """The bridge's HTTP server; ``port=0`` picks a free port (see :attr:`port`)."""

    def __init__(
        self,
        options: BridgeOptions,
        lifeline: Lifeline | None = None,
        routes: LocalRoutes | None = None,
    ) -> None:
        self.options = options
        self._lifeline = lifeline
        self._routes = routes
        self._sock = socket.socket(socket.AF_INET6 if ":" in options.host else socket.AF_INET)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((options.host, options.port))
        self.port: int = self._sock.getsockname()[1]
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._micro: Service | None = None

    async def start(self) -> None:
        """Connect to NATS (any server of the list, and the others on a failover) and start
        serving."""
        reconnects = Reconnects()
        connection = await connect(
            self.options.nats_url,
            "llm-edge-bridge",
            self.options.nats_tls,
            inbox_prefix=self.options.nats_inbox_prefix,
            lifeline=self._lifeline,
            reconnected=reconnects.reconnected,
        )
        self.nc = local_view(connection, self._routes)
        app = BridgeApp(
            self.nc,
            timeout_s=self.options.timeout_s,
            retry=self.options.retry,
            reconnects=reconnects,
            max_request_bytes=self.options.max_request_bytes,
            console_hosts=self.options.console_hosts,
        )
        config = uvicorn.Config(
            app,
            http=EnvelopeHttpToolsProtocol,  # httptools; its own 400s as our envelope
            lifespan="on",
            access_log=False,
            proxy_headers=False,  # no X-Forwarded-For is read: skip the middleware per request
            log_level="warning",
            timeout_graceful_shutdown=10,
            ssl_certfile=self.options.tls_cert,
            ssl_keyfile=self.options.tls_key,
        )
        self._server = uvicorn.Server(config)
        # ``serve()`` would take over SIGINT/SIGTERM; the process owns those (graceful drain of
        # every service), so run the server body without uvicorn's signal capture.
        self._task = asyncio.create_task(self._server._serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                await self._task
            await asyncio.sleep(0.01)
        state = self._server.server_state
        self._micro = await register(
            self.nc,
            "bridge",
            [],
            lambda: {"in_flight": len(state.tasks), "requests": state.total_requests},
        )

    @property
    def service_id(self) -> str:
        """The bridge's NATS micro service id (``$SRV`` discovery names it)."""
        return self._micro.id if self._micro is not None else ""

    async def stop(self) -> None:
        """Finish open requests, then close the listener and the NATS connection."""
        if self._micro is not None:
            await settle(self._micro.stop(), STOP_STEP_S)
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._lifeline is not None:
            self._lifeline.leaving = True
        await close_quietly(self.nc)


async def serve_bridge(options: BridgeOptions, stop: asyncio.Event) -> None:
    """Run the bridge until ``stop`` is set.

    Raises:
        ConnectionLost: the server closed the connection for good (the bridge stopped).
    """
    lifeline = Lifeline(stop)
    server = BridgeServer(options, lifeline)
    await serve(
        server,
        stop,
        ready=lambda: f"bridge listening on http://{options.host}:{server.port}/v1",
        log=log,
        lifeline=lifeline,
    )
