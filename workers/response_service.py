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

from schemas import error_body, headers, subjects
from schemas.responses import UpstreamOp, UpstreamResponseCall
from workers.errors import ProviderError
from workers.queue_service import QueueService

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


class ResponseService(QueueService):
    """One provider's background responses on NATS.

    Args:
        nc: connected NATS client.
        provider: the provider's name.
        upstream: its adapter.
    """

    def __init__(self, nc: Client, provider: str, upstream: UpstreamResponses) -> None:
        super().__init__(nc, subjects.provider_responses_subject(provider), MAX_RESPONSE_CALLS)
        self._upstream = upstream

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
