"""What the broker records of each answered request: the request counter and the log line.

One line per request (ids, routing, cache, tokens: never content), and one count in
``llm_edge_requests_total``. ``[broker] request_log`` picks which requests get a line:
``misses`` (default: hits are the hot path and the counter already has them), ``all``, ``off``.
"""

from __future__ import annotations

import time

from broker import metrics
from broker.config import BrokerSettings
from broker.request import Call
from broker.status import BrokerStatus
from edge_runtime.logs import request_line
from schemas import Usage, headers

__all__ = ["RequestRecord"]


class RequestRecord:
    """Counts and logs answered requests.

    Args:
        settings: ``request_log`` and ``tenant_metrics``.
        status: the broker's console counters and recent-requests ring, fed with every count
            and every record (whatever ``request_log`` says).
    """

    def __init__(self, settings: BrokerSettings, status: BrokerStatus | None = None) -> None:
        self._log = settings.request_log
        self._tenant_metrics = settings.tenant_metrics
        self._status = status

    @property
    def logs_hits(self) -> bool:
        """Whether cache hits get a log line too."""
        return self._log == "all"

    def count(self, prepared: Call, provider: str, status: int) -> None:
        """Count an answered request in ``llm_edge_requests_total``."""
        tenant = prepared.tenant.name if self._tenant_metrics else ""
        metrics.requests_counter(provider, prepared.model.name, status, tenant).inc()
        if self._status is not None:
            self._status.count(provider, status)

    def log(
        self,
        prepared: Call,
        *,
        status: int,
        cache: str,
        reply_headers: dict[str, str],
        started: float,
        usage: Usage | None = None,
    ) -> None:
        """The request's one log line; ``started`` is its ``time.perf_counter()`` start."""
        if self._log == "off" and self._status is None:
            return
        fields: dict[str, object] = {
            "request_id": prepared.request_id,
            "tenant": prepared.tenant.name,
            "model": prepared.model.name,
            "status": status,
            "cache": cache,
            "deployment": reply_headers.get(headers.DEPLOYMENT, ""),
            "attempts": reply_headers.get(headers.ATTEMPTS, "0"),
            "stream": prepared.stream,
        }
        if headers.COALESCED in reply_headers:
            fields["coalesced"] = True
        fallback = reply_headers.get(headers.FALLBACK)
        if fallback is not None:  # another model answered: which, and why
            fields["fallback"] = fallback
            fields["served_model"] = reply_headers.get(headers.MODEL, "")
        if usage is not None:
            fields["prompt_tokens"] = usage.prompt_tokens
            fields["completion_tokens"] = usage.completion_tokens
        if self._status is not None:
            self._status.record(fields, time.perf_counter() - started)
        if self._log != "off":
            request_line(fields, started)

    @staticmethod
    def now() -> float:
        """The start mark :meth:`log` measures from."""
        return time.perf_counter()
