"""Serves ``llm.provider.<provider>.responses``: the broker reads and cancels the background
responses an upstream runs itself (OpenAI's ``background: true``), by the upstream's own id
(:class:`~schemas.responses.UpstreamResponseCall`).

Only workers whose adapter has such an upstream subscribe. A reply is the upstream's
``response`` object, or an OpenAI error envelope; its status is in ``Llm-Status``.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from edge_runtime.process import STOP_STEP_S, InFlight, settle
from schemas import error_body, headers, subjects
from schemas.responses import UpstreamOp, UpstreamResponseCall
from workers.errors import ProviderError

__all__ = ["ResponseService", "UpstreamResponses"]

log = logging.getLogger("llm_edge.worker")
_call = msgspec.json.Decoder(UpstreamResponseCall)
#: Calls in flight per worker process (each is one short upstream call).
MAX_RESPONSE_CALLS = 64


@runtime_checkable
class UpstreamResponses(Protocol):
    """An adapter whose upstream runs background responses itself."""

    native_responses: bool

    async def retrieve_response(self, response_id: str) -> bytes:
        """The upstream's response object as it is now."""
        ...

    async def cancel_response(self, response_id: str) -> bytes:
        """Ask the upstream to stop it; the response object as it is then."""
        ...


class ResponseService:
    """One provider's background responses on NATS.

    Args:
        nc: connected NATS client.
        provider: the provider's name.
        upstream: its adapter.
    """

    def __init__(self, nc: Client, provider: str, upstream: UpstreamResponses) -> None:
        self._nc = nc
        self._upstream = upstream
        self.subject = subjects.provider_responses_subject(provider)
        self._inflight = InFlight(MAX_RESPONSE_CALLS)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Subscribe in the workers' queue group."""
        self._sub = await self._nc.subscribe(
            self.subject, queue=subjects.WORKER_QUEUE, cb=self._on_msg
        )

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop taking calls; let running ones finish (bounded)."""
        if self._sub is not None:
            await settle(self._sub.drain(), STOP_STEP_S)  # type: ignore[no-untyped-call]
        await self._inflight.drain(drain_timeout)

    async def _on_msg(self, msg: Msg) -> None:
        await self._inflight.spawn(self._answer(msg))

    async def _answer(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            call = _call.decode(msg.data)
            if call.op is UpstreamOp.CANCEL:
                status, body = 200, await self._upstream.cancel_response(call.id)
            else:
                status, body = 200, await self._upstream.retrieve_response(call.id)
        except ProviderError as exc:
            status, body = exc.status, error_body(exc.status, exc.kind.value, exc.message)
        except msgspec.MsgspecError as exc:
            status, body = 400, error_body(400, "invalid_request", f"invalid call: {exc}")
        await self._nc.publish(msg.reply, body, headers={headers.STATUS: str(status)})
