"""Background responses that run at their upstream (OpenAI's ``background: true``).

A background response routed to an upstream that runs background responses itself is sent
there as one: the upstream answers at once with its own queued response and id. The broker
keeps that id in the stored response before anything else (so any broker that later gets the
job finds it), then reads the upstream's response through that provider's workers
(``llm.provider.<provider>.responses``, :class:`~schemas.responses.UpstreamResponseCall`)
every ``[responses] poll_s`` until it is final, and stores it under our id. A broker or worker
killed meanwhile loses nothing: the job comes back and polling resumes on the same upstream
id; the upstream got one create. A cancel is passed to the upstream's own cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from broker.request import Reply
from schemas import error_body, headers
from schemas.responses import ResponseStatus, StoredResponse, UpstreamOp, UpstreamResponseCall
from schemas.subjects import provider_responses_subject

__all__ = ["CANCEL_TIMEOUT_S", "READ_TIMEOUT_S", "UpstreamRuns", "running_upstream"]

log = logging.getLogger("llm_edge.responses")

#: The longest one read through a worker may take; one not answered in time (its worker was
#: killed while it read) is tried again at the next poll. A read takes a few hundred ms.
READ_TIMEOUT_S = 5.0
#: The longest a cancel through a worker may take.
CANCEL_TIMEOUT_S = 30.0
#: Statuses of a response the upstream still runs.
_RUNNING = frozenset({ResponseStatus.QUEUED, ResponseStatus.IN_PROGRESS})

_encode = msgspec.json.Encoder().encode
_any = msgspec.json.Decoder(dict[str, Any])


def running_upstream(reply: Reply) -> str | None:
    """The upstream's id of a response it runs in the background, when ``reply`` is one
    (a queued or in-progress response object); ``None`` for any other answer."""
    if reply.status != 200:
        return None
    try:
        body = _any.decode(reply.body)
    except msgspec.MsgspecError:
        return None
    if body.get("status") not in _RUNNING or not isinstance(body.get("id"), str):
        return None
    return str(body["id"])


class UpstreamRuns:
    """Reads and cancels background responses at their upstream.

    Args:
        nc: the broker's connection.
        poll_s: how often a running one is read.
        poll_max_s: how long one may run (from its creation) before it is cancelled there.
    """

    def __init__(self, nc: Client, *, poll_s: float, poll_max_s: float) -> None:
        self._nc = nc
        self._poll_s = poll_s
        self._poll_max_s = poll_max_s

    async def _ask(self, provider: str, op: UpstreamOp, upstream_id: str) -> Reply | None:
        """The worker's answer (``None``: no worker answered in time)."""
        call = _encode(UpstreamResponseCall(op, upstream_id))
        timeout = READ_TIMEOUT_S if op is UpstreamOp.GET else CANCEL_TIMEOUT_S
        try:
            answer = await self._nc.request(
                provider_responses_subject(provider), call, timeout=timeout
            )
        except (TimeoutError, NoRespondersError, NatsError):
            return None
        status = int((answer.headers or {}).get(headers.STATUS, "200"))
        return Reply(status, answer.data, {headers.PROVIDER: provider})

    async def poll(self, stored: StoredResponse, halted: asyncio.Event) -> Reply | None:
        """Read the upstream's response until it is final.

        Returns:
            ``None`` when ``halted`` was set first; else the upstream's final response, or
            why it cannot be had (a 404 for an upstream that lost it, a 504 once
            ``poll_max_s`` passed): final either way, the upstream is not called again.
        """
        created = float(_any.decode(stored.response).get("created_at") or time.time())
        deadline = created + self._poll_max_s
        provider, upstream_id = stored.provider, stored.upstream_id
        unanswered = 0
        while time.time() < deadline:
            reply = await self._ask(provider, UpstreamOp.GET, upstream_id)
            if reply is None:
                unanswered += 1
                if unanswered == 1:
                    log.warning(
                        "no %s worker answered for %s; reading again", provider, upstream_id
                    )
            elif (reply.status == 200 and running_upstream(reply) is None) or (
                400 <= reply.status < 500 and reply.status != 429
            ):
                return reply
            else:
                unanswered = 0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await halted.wait()
            if halted.is_set():
                return None
        await self.cancel(provider, upstream_id)
        message = f"the response did not finish at {provider} within {self._poll_max_s:g}s"
        return Reply(504, error_body(504, "deadline_exceeded", message))

    async def cancel(self, provider: str, upstream_id: str) -> None:
        """Ask the upstream to stop a response it runs (once, bounded; logged when no
        worker could)."""
        reply = await self._ask(provider, UpstreamOp.CANCEL, upstream_id)
        if reply is None or reply.status != 200:
            log.warning(
                "background response %s at %s could not be cancelled there (%s)",
                upstream_id,
                provider,
                "no worker answered" if reply is None else reply.status,
            )
