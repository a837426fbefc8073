"""Broker to provider worker over NATS: one request, a whole reply or a stream of pieces.

The request goes as its caller sent it, with the API it speaks (``Llm-Api``) and the caller's
headers for the upstream; a streamed answer's messages come back as :class:`Piece`s, their
bodies untouched (the pipeline decodes what it keeps).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker.config import Deployment
from broker.errors import DeadlineExceeded, NoProvider, UpstreamFailed
from broker.repeats import once_key
from broker.request import Call, Piece, Prepared, Reply
from edge_runtime.inbox import Inbox, Mailbox
from edge_runtime.tracing import inject
from schemas import StreamEnd, error_body, headers, subjects
from schemas.api import Api

__all__ = ["KEEPALIVE", "WORKER_IDLE_S", "Forwarder", "ReplyHook", "StreamEvent", "WorkerLost"]

#: A worker silent this long (no answer, no keepalive) is taken for dead: the call fails over.
#: Workers are asked for a keepalive KEEPALIVES_PER_IDLE times as often, so a live but busy
#: worker is not mistaken for a dead one (that would make a second upstream call).
WORKER_IDLE_S = 4.0
KEEPALIVES_PER_IDLE = 4
KEEPALIVE = "keepalive"


class WorkerLost(NoProvider):
    """The worker that took the call went silent: it died, or its host or link did."""

    code = "worker_lost"


StreamEvent = Piece | StreamEnd
#: Hears every final reply header set from a worker (the provider's rate-limit headers):
#: ``(deployment, headers, status)``.
ReplyHook = Callable[[Deployment, Mapping[str, str], int], None]

_end_decoder = msgspec.json.Decoder(StreamEnd)
#: What the worker reports that the caller should see too.
_PASSED_ON = (headers.RETRY_AFTER, headers.RETRYABLE)
#: What a worker's successful whole answer may say about itself.
_ANSWER_HEADERS = (headers.TOKEN_COUNT,)


class Forwarder:
    """Sends prepared requests to a deployment's provider workers.

    Args:
        nc: connected NATS client.
        clock: the clock ``Prepared.deadline`` is measured on.
        idle_s: how long a worker may stay silent (no answer, no keepalive) before the call
            counts as lost and is retried elsewhere.
        on_reply: hears the headers of each call's last message (what the provider said of
            its limits).
        subject: the subject of a provider's workers (``llm.provider.<name>``: chat).
        inbox: where answers arrive (shared by the forwarders of one connection).
    """

    def __init__(
        self,
        nc: Client,
        clock: Callable[[], float],
        *,
        idle_s: float = WORKER_IDLE_S,
        on_reply: ReplyHook | None = None,
        subject: Callable[[str], str] = subjects.provider_subject,
        inbox: Inbox | None = None,
    ) -> None:
        self.on_reply = on_reply
        self._nc = nc
        self._clock = clock
        self._idle_s = idle_s
        self._subject = subject
        self._inbox = inbox or Inbox(nc)
        self._keepalive_ms = str(int(idle_s / KEEPALIVES_PER_IDLE * 1000))

    def to(self, subject: Callable[[str], str]) -> Forwarder:
        """A forwarder of the same connection and inbox whose calls go to ``subject(provider)``
        (another API's worker subject, such as ``llm.provider.<name>.embeddings``)."""
        return Forwarder(
            self._nc,
            self._clock,
            idle_s=self._idle_s,
            on_reply=self.on_reply,
            subject=subject,
            inbox=self._inbox,
        )

    def _headers(self, prepared: Call, deployment: Deployment, deadline: float) -> dict[str, str]:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise DeadlineExceeded("the request's deadline passed before it reached a provider")
        forward_headers = {
            headers.TIMEOUT_MS: str(int(remaining * 1000)),
            headers.UPSTREAM_MODEL: deployment.model,
            headers.REQUEST_ID: prepared.request_id,
            headers.KEEPALIVE_MS: self._keepalive_ms,
            **prepared.upstream_headers,
        }
        if prepared.api is not Api.CHAT:
            forward_headers[headers.API] = prepared.api.value
        if prepared.idempotent:  # one upstream call for its attempts, whole or streamed
            forward_headers[headers.ONCE_KEY] = once_key(
                prepared.tenant.name, prepared.request_id, prepared.digest()
            )
        inject(forward_headers)  # this broker's span is the worker's parent
        if headers.TRACEPARENT not in forward_headers and prepared.trace:
            forward_headers[headers.TRACEPARENT] = prepared.trace
        return forward_headers

    async def whole(self, prepared: Call, deployment: Deployment, deadline: float) -> Reply:
        """One call to the provider's workers; a 200 reply (who answered is named by
        :class:`~broker.upstream.calls.Upstream`, which knows the attempts too).

        Raises:
            NoProvider: no worker subscribed.
            WorkerLost: the worker went silent (no answer, no keepalive) for ``idle_s``.
            DeadlineExceeded: no answer by ``deadline``.
            UpstreamFailed: the worker reported a failure.
        """
        reply_to, replies = await self._send(prepared, deployment, deadline)
        try:
            msg = await self._answer(replies, deployment, deadline)
        except (asyncio.CancelledError, WorkerLost):  # a silent worker may only be slow:
            await self._cancel(prepared, reply_to)  # stop it before the call is retried
            raise
        finally:
            self._inbox.close(reply_to)
        answer_headers = msg.headers or {}
        status = int(answer_headers.get(headers.STATUS, "200"))
        if self.on_reply is not None:
            self.on_reply(deployment, answer_headers, status)
        if status != 200:
            extra = {n: answer_headers[n] for n in _PASSED_ON if n in answer_headers}
            raise UpstreamFailed(status, msg.data, extra, answer_headers.get(headers.ERROR_CODE))
        said = {n: answer_headers[n] for n in _ANSWER_HEADERS if n in answer_headers}
        return Reply(200, msg.data, said)

    async def stream(
        self, prepared: Prepared, deployment: Deployment, deadline: float
    ) -> AsyncGenerator[StreamEvent, None]:
        """Pieces as the worker sends them, then the end record.

        Raises:
            NoProvider, WorkerLost, DeadlineExceeded: as for :meth:`whole`.
            UpstreamFailed: the worker reported an error (before or after chunks), or a
                message was lost or came out of order (``Llm-Seq``): such a stream is
                never completed, so never cached.
        """
        reply_to, replies = await self._send(prepared, deployment, deadline)
        ended = False  # the worker sent its last message: nothing left to cancel
        expected = 0
        try:
            while True:
                msg = await self._answer(replies, deployment, deadline)
                hdrs = msg.headers or {}
                kind = hdrs.get(headers.STREAM)
                if kind in {"chunk", "end"}:
                    if hdrs.get(headers.SEQ, str(expected)) != str(expected):
                        message = f"stream message {expected} from the worker was lost"
                        await self._cancel(prepared, reply_to)  # a broken stream: stop paying
                        raise UpstreamFailed(502, error_body(502, "stream_gap", message), {})
                    expected += 1
                if kind == "chunk":
                    yield Piece(msg.data, hdrs.get(headers.EVENT, ""))
                    continue
                ended = True
                status = int(hdrs.get(headers.STATUS, "200" if kind == "end" else "502"))
                if self.on_reply is not None:
                    self.on_reply(deployment, hdrs, status)
                if kind == "end":
                    yield _end_decoder.decode(msg.data)  # (the caller may close us right here)
                    return
                extra = {n: hdrs[n] for n in _PASSED_ON if n in hdrs}
                raise UpstreamFailed(status, msg.data, extra, hdrs.get(headers.ERROR_CODE))
        except (asyncio.CancelledError, GeneratorExit, WorkerLost):  # caller left, or worker silent
            if not ended:
                await self._cancel(prepared, reply_to)
            raise
        finally:
            self._inbox.close(reply_to)

    async def _send(
        self, prepared: Call, deployment: Deployment, deadline: float
    ) -> tuple[str, Mailbox]:
        """Publish the call to the provider's workers; its reply subject (to close) and
        mailbox."""
        forward_headers = self._headers(prepared, deployment, deadline)
        reply_to, replies = await self._inbox.open()
        try:
            await self._nc.publish(
                self._subject(deployment.provider),
                prepared.data,
                reply=reply_to,
                headers=forward_headers,
            )
        except BaseException:
            self._inbox.close(reply_to)
            raise
        return reply_to, replies

    async def _cancel(self, prepared: Call, reply_to: str) -> None:
        """Tell the worker to stop the call: a cancel is honoured only with the call's reply
        subject as its reply (see docs/nats-api.md, Who may cancel)."""
        with contextlib.suppress(Exception):  # reconnecting: the worker's timeout ends it
            await self._nc.publish(subjects.CANCEL, prepared.request_id.encode(), reply=reply_to)

    async def _answer(self, replies: Mailbox, deployment: Deployment, deadline: float) -> Msg:
        """The worker's next message that is not a keepalive.

        Raises:
            NoProvider: NATS answered for the server that nobody serves the subject.
            WorkerLost: nothing, not even a keepalive, for ``idle_s`` (the worker died).
            DeadlineExceeded: the deadline passed first.
        """
        while True:
            remaining = deadline - self._clock()
            try:
                msg = await replies.get(max(min(remaining, self._idle_s), 0.001))
            except TimeoutError:
                if remaining <= self._idle_s:
                    raise _too_slow(deployment, remaining) from None
                raise WorkerLost(
                    f"the `{deployment.provider}` worker went silent for {self._idle_s:g}s",
                    retry_after=1,
                ) from None
            hdrs = msg.headers or {}
            if hdrs.get(headers.STREAM) == KEEPALIVE:
                continue
            if hdrs.get("Status") == "503" and not msg.data:  # NATS no-responders
                raise _no_provider(deployment)
            return msg


def _no_provider(deployment: Deployment) -> NoProvider:
    return NoProvider(f"no worker is serving provider `{deployment.provider}`", retry_after=1)


def _too_slow(deployment: Deployment, budget: float) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"provider `{deployment.provider}` did not answer within the deadline ({budget:.1f}s)"
    )
