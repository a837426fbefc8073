"""Serves one provider on NATS: consumes ``llm.provider.<name>`` in the workers' queue group."""

from __future__ import annotations

import asyncio
import logging

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from broker.runtime import PENDING_MSGS_LIMIT, InFlight
from schemas import decode_chat_request, error_body, headers, subjects
from workers.base import Provider, ProviderRequest
from workers.errors import ProviderError

__all__ = ["DEFAULT_WORKER_TIMEOUT_S", "WorkerService", "serve_worker"]

log = logging.getLogger("llm_edge.worker")

#: Used when a request reaches a worker without a time budget (a direct producer).
DEFAULT_WORKER_TIMEOUT_S = 60.0


def timeout_from(hdrs: dict[str, str] | None, default: float) -> float:
    """The remaining budget in seconds from the ``Llm-Timeout-Ms`` header."""
    if hdrs and (raw := hdrs.get(headers.TIMEOUT_MS)):
        try:
            return max(0.0, float(raw) / 1000)
        except ValueError:
            return default
    return default


class WorkerService:
    """Runs a provider's calls concurrently, one task per request.

    Args:
        nc: connected NATS client.
        provider: the adapter.
        max_concurrency: calls in flight in this process.
    """

    def __init__(self, nc: Client, provider: Provider, *, max_concurrency: int = 1024) -> None:
        self._nc = nc
        self._provider = provider
        self._inflight = InFlight(max_concurrency)
        self._sub: Subscription | None = None
        self.subject = subjects.provider_subject(provider.name)

    async def start(self) -> None:
        """Subscribe in the workers' queue group."""
        self._sub = await self._nc.subscribe(
            self.subject,
            queue=subjects.WORKER_QUEUE,
            cb=self._on_msg,
            pending_msgs_limit=PENDING_MSGS_LIMIT,
        )

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop taking requests, let running ones finish (bounded), release the provider."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        await self._inflight.drain(drain_timeout)
        await self._provider.aclose()

    async def _on_msg(self, msg: Msg) -> None:
        await self._inflight.spawn(self._handle(msg))

    async def _handle(self, msg: Msg) -> None:
        if not msg.reply:
            return
        status, body, extra = await self._call(msg)
        reply_headers = {headers.STATUS: str(status), headers.PROVIDER: self._provider.name}
        reply_headers.update(extra)
        await self._nc.publish(msg.reply, body, headers=reply_headers)

    async def _call(self, msg: Msg) -> tuple[int, bytes, dict[str, str]]:
        hdrs = msg.headers
        timeout = timeout_from(hdrs, DEFAULT_WORKER_TIMEOUT_S)
        try:
            chat = decode_chat_request(msg.data)
            request = ProviderRequest(
                body=msg.data,
                chat=chat,
                upstream_model=(hdrs or {}).get(headers.UPSTREAM_MODEL) or chat.model,
                timeout_s=timeout,
                request_id=(hdrs or {}).get(headers.REQUEST_ID, ""),
            )
            async with asyncio.timeout(timeout):
                return 200, await self._provider.complete(request), {}
        except ProviderError as exc:
            extra = {headers.RETRYABLE: "1"} if exc.retryable else {}
            if exc.retry_after is not None:
                extra[headers.RETRY_AFTER] = f"{exc.retry_after:g}"
            return exc.status, error_body(exc.status, exc.kind.value, exc.message), extra
        except TimeoutError:
            message = f"{self._provider.name} did not answer within {timeout:.1f}s"
            return 504, error_body(504, "deadline_exceeded", message), {headers.RETRYABLE: "1"}
        except msgspec.MsgspecError as exc:
            return 400, error_body(400, "invalid_request", str(exc)), {}
        except Exception:
            log.exception("provider %s failed unexpectedly", self._provider.name)
            return 500, error_body(500, "internal_error", "provider worker failed"), {}


async def serve_worker(
    nc: Client, provider: Provider, stop: asyncio.Event, *, max_concurrency: int = 1024
) -> None:
    """Serve ``provider`` until ``stop`` is set, then drain."""
    service = WorkerService(nc, provider, max_concurrency=max_concurrency)
    await service.start()
    log.info("worker ready: %s on %s", provider.name, service.subject)
    try:
        await stop.wait()
    finally:
        await service.stop()
