"""The metrics port of a broker or worker: Prometheus metrics and the health probes.

    GET /healthz   200 while the event loop turns, else 503   (liveness)
    GET /readyz    200 while connected to NATS and subscribed, else 503   (readiness)
    GET anything else: the Prometheus metrics, as ``prometheus_client`` serves them

The probes answer JSON, ``{"status": "ok" | "unavailable", "reason": "..."}``. The port is
served by a thread from the process's start to its exit (see :mod:`edge_runtime.health`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from edge_runtime.health import HEALTH, Health, Verdict

__all__ = ["LIVE_PATH", "READY_PATH", "serve_metrics_port"]

LIVE_PATH = "/healthz"
READY_PATH = "/readyz"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Quiet(WSGIRequestHandler):
    """No access log line per scrape or probe."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _app(health: Health) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    metrics = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == LIVE_PATH:
            return _verdict(health.live(), start_response)
        if path == READY_PATH:
            return _verdict(health.ready(), start_response)
        result: Iterable[bytes] = metrics(environ, start_response)
        return result

    return app


def _verdict(verdict: Verdict, start_response: StartResponse) -> list[bytes]:
    body = json.dumps(
        {"status": "ok" if verdict.ok else "unavailable", "reason": verdict.reason}
    ).encode()
    status = "200 OK" if verdict.ok else "503 Service Unavailable"
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def serve_metrics_port(port: int, host: str, health: Health = HEALTH) -> ThreadingWSGIServer:
    """Serve the metrics and the probes on ``host:port`` from a daemon thread (``port`` 0
    picks a free one: see ``server_port``)."""
    server = make_server(host, port, _app(health), ThreadingWSGIServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics-port", daemon=True).start()
    return server
