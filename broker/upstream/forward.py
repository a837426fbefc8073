"""Broker to provider worker over NATS: one request, a whole reply or a stream of chunks."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

import msgspec
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from broker.config import Deployment
from broker.errors import DeadlineExceeded, NoProvider, UpstreamFailed
from broker.request import Prepared, Reply
from edge_runtime.tracing import inject
from schemas import ChatCompletionChunk, StreamEnd, headers, subjects

__all__ = ["Forwarder", "StreamEvent"]

StreamEvent = ChatCompletionChunk | StreamEnd

_chunk_decoder = msgspec.json.Decoder(ChatCompletionChunk)
_end_decoder = msgspec.json.Decoder(StreamEnd)
#: What the worker reports that the caller should see too.
_PASSED_ON = (headers.RETRY_AFTER, headers.RETRYABLE)


class Forwarder:
    """Sends prepared requests to a deployment's provider workers.

    Args:
        nc: connected NATS client.
        clock: the clock ``Prepared.deadline`` is measured on.
    """

    def __init__(self, nc: Client, clock: Callable[[], float]) -> None:
        self._nc = nc
        self._clock = clock

    def _budget(
        self, prepared: Prepared, deployment: Deployment, deadline: float
    ) -> tuple[float, dict[str, str]]:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise DeadlineExceeded("the request's deadline passed before it reached a provider")
        forward_headers = {
            headers.TIMEOUT_MS: str(int(remaining * 1000)),
            headers.UPSTREAM_MODEL: deployment.model,
            headers.REQUEST_ID: prepared.request_id,
        }
        inject(forward_headers)  # this broker's span is the worker's parent
        if headers.TRACEPARENT not in forward_headers and prepared.trace:
            forward_headers[headers.TRACEPARENT] = prepared.trace
        return remaining, forward_headers

    async def whole(self, prepared: Prepared, deployment: Deployment, deadline: float) -> Reply:
        """Request/reply with the provider's workers; a 200 reply (who answered is named by
        :class:`~broker.upstream.calls.Upstream`, which knows the attempts too).

        Raises:
            NoProvider: no worker subscribed.
            DeadlineExceeded: no answer by ``deadline``.
            UpstreamFailed: the worker reported a failure.
        """
        remaining, forward_headers = self._budget(prepared, deployment, deadline)
        subject = subjects.provider_subject(deployment.provider)
        try:
            answer = await self._nc.request(
                subject, prepared.data, timeout=remaining, headers=forward_headers
            )
        except NoRespondersError:
            raise _no_provider(deployment) from None
        except NatsTimeout:
            raise _too_slow(deployment, remaining) from None
        answer_headers = answer.headers or {}
        status = int(answer_headers.get(headers.STATUS, "200"))
        if status != 200:
            extra = {n: answer_headers[n] for n in _PASSED_ON if n in answer_headers}
            raise UpstreamFailed(status, answer.data, extra)
        return Reply(200, answer.data)

    async def stream(
        self, prepared: Prepared, deployment: Deployment, deadline: float
    ) -> AsyncGenerator[StreamEvent, None]:
        """Chunks as the worker sends them, then the end record.

        Raises:
            NoProvider, DeadlineExceeded: as for :meth:`whole`.
            UpstreamFailed: the worker reported an error (before or after chunks).
        """
        remaining, forward_headers = self._budget(prepared, deployment, deadline)
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        try:
            await self._nc.publish(
                subjects.provider_subject(deployment.provider),
                prepared.data,
                reply=inbox,
                headers=forward_headers,
            )
            while True:
                remaining = deadline - self._clock()
                try:
                    msg = await sub.next_msg(timeout=max(remaining, 0.001))
                except NatsTimeout:
                    raise _too_slow(deployment, remaining) from None
                hdrs = msg.headers or {}
                kind = hdrs.get(headers.STREAM)
                if kind == "chunk":
                    yield _chunk_decoder.decode(msg.data)
                    continue
                if kind == "end":
                    yield _end_decoder.decode(msg.data)
                    return
                if hdrs.get("Status") == "503" and not msg.data:  # NATS no-responders
                    raise _no_provider(deployment)
                extra = {n: hdrs[n] for n in _PASSED_ON if n in hdrs}
                raise UpstreamFailed(int(hdrs.get(headers.STATUS, "502")), msg.data, extra)
        finally:
            await sub.unsubscribe()


def _no_provider(deployment: Deployment) -> NoProvider:
    return NoProvider(f"no worker is serving provider `{deployment.provider}`", retry_after=1)


def _too_slow(deployment: Deployment, budget: float) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"provider `{deployment.provider}` did not answer within the deadline ({budget:.1f}s)"
    )
