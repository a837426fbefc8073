"""The bridge's NATS attempts: a request whose attempt was lost is sent again, within its deadline.

When a NATS server dies, an HTTP request in flight through it can lose its way: the request
was on its way to a broker on that server, the reply was sent while the bridge's own
connection moved to another server, or the failover left nobody subscribed for a moment. The
bridge sends such a request again, under the same ``X-Request-Id``, with the producer
client's :class:`~edge_client.request.RetryPolicy`:

- NATS no-responders: after a backoff;
- a 503 from the broker (a store electing its leader): after its ``Retry-After``, unless the
  broker decided it after trying every deployment (:data:`BACK_OFF_CODES`);
- no message at all within ``attempt_timeout_s``: neither the answer nor a keepalive. Every
  attempt asks its broker for keepalives (``Llm-Keepalive-Ms``), which it sends while the
  answer has not begun, so a call that is merely slow (minutes to a reasoning model's first
  token) is never sent again; only one whose broker or reply was lost falls silent;
- the bridge's connection came back from a drop while the attempt waited: at once (the
  reply may have been published while the bridge was away).

A caller that sends ``Llm-Idempotent: 1`` has every attempt of its whole request answered
from one upstream call (the workers' claims), whichever broker it reaches, even when a
broker dies with the call in flight. It is the caller's choice: the claim costs about
0.3 ms of CPU per miss (a third of the miss path; peer harness S2), and without it an
attempt is sent again only when its broker or its reply was lost, which a broker answers
from its own memory of the request id when it was the one that got it.

Every attempt has its own reply subject and every one is listened to until the request is
answered: a slow first attempt that answers after a retry was sent is taken, not thrown
away. Once a request is answered (or its stream has begun) the attempts still running are
cancelled. A stream is retried only before its first message reaches the bridge, and so
before its first byte reaches the HTTP caller; from then on it is that attempt's to finish.
The last attempt waits for the deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from edge_client.chat import ChatStreamError, keepalive_ms
from edge_client.request import DEFAULT_RETRY, RetryPolicy
from edge_runtime.inbox import Inbox, Mailbox
from schemas import ErrorEnvelope, headers, subjects

__all__ = ["NO_BROKER_BODY", "Reconnects", "Relay", "no_responders"]

#: 503s a running broker decided after trying every deployment it has (a shed tenant, open
#: breakers, no worker for the model): answered as they are. Sending them again would only
#: add load and feed the breakers; the caller has the ``Retry-After``.
BACK_OFF_CODES = frozenset({"overloaded", "all_deployments_unavailable", "no_provider_available"})
NO_BROKER_BODY = (
    b'{"error":{"message":"no broker is running","type":"service_unavailable","code":"no_broker"}}'
)
_envelope = msgspec.json.Decoder(ErrorEnvelope)


def no_responders(msg: Msg) -> bool:
    """Whether ``msg`` is the NATS server's "nobody is subscribed" status."""
    return (msg.headers or {}).get("Status") == "503" and not msg.data


class Reconnects:
    """Wakes the attempts waiting on a connection when it comes back from a drop.

    Its :meth:`reconnected` is the connection's ``reconnected_cb``; nats-py calls it once the
    subscriptions are back on the new server, so a retry's reply can arrive.
    """

    def __init__(self) -> None:
        self._waiting: dict[Mailbox, Msg] = {}

    def watch(self, queue: Mailbox, wake: Msg) -> None:
        """Put ``wake`` in ``queue`` at the next reconnect (until :meth:`forget`)."""
        self._waiting[queue] = wake

    def forget(self, queue: Mailbox) -> None:
        self._waiting.pop(queue, None)

    async def reconnected(self) -> None:
        for queue, wake in self._waiting.items():
            queue.put_nowait(wake)


def _retry_after(msg: Msg) -> str | None:
    """``None`` when ``msg`` is an answer to give the caller; else the wait it asks for
    (``""``: none named) before the request is sent again."""
    if no_responders(msg):
        return ""
    hdrs = msg.headers or {}
    if hdrs.get(headers.STATUS) != "503":
        return None
    try:
        code = _envelope.decode(msg.data).error.code
    except msgspec.MsgspecError:
        code = None
    return None if code in BACK_OFF_CODES else hdrs.get(headers.RETRY_AFTER, "")


def _budget_s(caller_ms: str | None) -> float | None:
    """The caller's ``Llm-Timeout-Ms`` in seconds, when it is a positive number."""
    try:
        ms = int(caller_ms or "")
    except ValueError:
        return None
    return ms / 1000 if ms > 0 else None


class _Attempts:
    """One request's attempts: their reply subjects all feed one mailbox."""

    def __init__(self, relay: Relay, subject: str, body: bytes, hdrs: dict[str, str]) -> None:
        self._relay, self._subject, self._body, self._hdrs = relay, subject, body, hdrs
        self._loop = asyncio.get_running_loop()
        self.queue = Mailbox()
        self.open: list[str] = []  # reply subjects that may still be answered
        self._opened: list[str] = []  # every one (closed in the inbox at the end)
        self.tries = 0
        self._epoch = 0
        hdrs[headers.KEEPALIVE_MS] = str(keepalive_ms(relay.policy.attempt_timeout_s))
        caller_s = _budget_s(hdrs.get(headers.TIMEOUT_MS))
        self._forward_budget = caller_s is not None  # else the broker judges the header
        budget = relay.timeout_s if caller_s is None else min(relay.timeout_s, caller_s)
        self.deadline = self._loop.time() + budget

    def __enter__(self) -> _Attempts:
        if self._relay.reconnects is not None:
            self._relay.reconnects.watch(self.queue, self._relay.wake)
        return self

    def __exit__(self, *_: object) -> None:
        if self._relay.reconnects is not None:
            self._relay.reconnects.forget(self.queue)
        for reply_to in self._opened:
            self._relay.inbox.close(reply_to)

    async def send(self) -> str:
        """Publish the next attempt; its reply subject."""
        nc = self._relay.nc
        reply_to, _ = await self._relay.inbox.open(self.queue)
        self.open.append(reply_to)
        self._opened.append(reply_to)
        self.tries += 1
        if self._forward_budget:  # the caller's budget, less what the earlier attempts took
            remaining = int((self.deadline - self._loop.time()) * 1000)
            self._hdrs[headers.TIMEOUT_MS] = str(max(remaining, 1))
        # published while disconnected, the attempt waits in the client's buffer and goes
        # out on the next connection: only a later reconnect can have lost it
        self._epoch = nc.stats["reconnects"] + (0 if nc.is_connected else 1)
        await nc.publish(self._subject, self._body, reply=reply_to, headers=self._hdrs)
        return reply_to

    async def answer(self, current: str) -> Msg | None:
        """The next message for one of the open attempts, or ``None`` when ``current`` must
        be sent again: it fell silent (no answer, no keepalive) for ``attempt_timeout_s``, or
        a reconnect may have lost its reply.

        Raises:
            TimeoutError: the request's deadline passed.
        """
        policy = self._relay.policy
        last = self.tries >= policy.attempts

        def silence_until() -> float:
            if last:
                return self.deadline
            return min(self.deadline, self._loop.time() + policy.attempt_timeout_s)

        until = silence_until()
        while True:
            try:
                msg = await self.queue.get(max(until - self._loop.time(), 0.0))
            except TimeoutError:
                if until >= self.deadline:
                    raise
                return None
            if msg is self._relay.wake:
                if self._relay.nc.stats["reconnects"] > self._epoch and not last:
                    return None
                continue
            if msg.subject not in self.open:
                continue  # an attempt given up on (it answered 503 before)
            if (msg.headers or {}).get(headers.STREAM) == "keepalive":
                until = silence_until()  # a broker is working on it: slow, not lost
                continue
            if msg.subject != current and _retry_after(msg) is not None:
                self.open.remove(msg.subject)  # an earlier attempt's late refusal
                continue
            return msg

    async def pause(self, retry_after: str) -> bool:
        """Wait before the next attempt; ``False`` when none fits before the deadline (or the
        policy's attempts are spent)."""
        policy = self._relay.policy
        wait = policy.wait_s(self.tries, retry_after or None)
        if self.tries >= policy.attempts or self._loop.time() + wait >= self.deadline:
            return False
        await asyncio.sleep(wait)
        return True

    async def cancel(self, keep: str | None = None) -> None:
        """Cancel every open attempt but ``keep`` (its reply subject proves it is ours)."""
        nc = self._relay.nc
        request_id = self._hdrs[headers.REQUEST_ID].encode()
        for reply_to in self.open:
            if reply_to != keep and not nc.is_closed:
                await nc.publish(subjects.CANCEL, request_id, reply=reply_to)
        self.open = [keep] if keep in self.open else []

    async def first(self) -> Msg:
        """The first message that answers the request: a success, a failure that another
        attempt would not fix, or the last attempt's refusal.

        Raises:
            TimeoutError: the request's deadline passed.
        """
        while True:
            current = await self.send()
            while True:
                msg = await self.answer(current)
                if msg is None:
                    break  # send again at once
                retry_after = _retry_after(msg)
                if retry_after is None:
                    return msg
                if not await self.pause(retry_after):
                    return msg
                self.open.remove(msg.subject)
                break


class Relay:
    """Sends the bridge's requests over NATS and follows their attempts.

    Args:
        nc: the bridge's connection.
        inbox: where replies arrive.
        timeout_s: the longest a request may take (a caller's ``Llm-Timeout-Ms`` may be less).
        policy: attempts, per-attempt wait and backoff.
        reconnects: the connection's reconnect signal (without it, a reply lost to a
            reconnect is retried after ``policy.attempt_timeout_s``).
    """

    def __init__(
        self,
        nc: Client,
        inbox: Inbox,
        *,
        timeout_s: float,
        policy: RetryPolicy = DEFAULT_RETRY,
        reconnects: Reconnects | None = None,
    ) -> None:
        self.nc, self.inbox, self.timeout_s = nc, inbox, timeout_s
        self.policy, self.reconnects = policy, reconnects
        self.wake = Msg(nc)  # what a reconnect puts in the queues; on no subject, no reply

    async def stream(
        self, subject: str, body: bytes, hdrs: Mapping[str, str]
    ) -> AsyncGenerator[Msg, None]:
        """Every message of the answer, the last one included: a whole answer (one message),
        or a stream's messages to ``Llm-Stream: end`` or ``error``; attempts are retried only
        until the first message.

        Raises:
            TimeoutError: the stream did not finish within the deadline.
            ChatStreamError: nobody serves ``subject`` (503).
        """
        with _Attempts(self, subject, body, dict(hdrs)) as attempts:
            finished = False
            try:
                msg = await attempts.first()
                if no_responders(msg):
                    finished = True
                    raise ChatStreamError(503, NO_BROKER_BODY)
                chosen = msg.subject
                await attempts.cancel(keep=chosen)
                while True:
                    finished = (msg.headers or {}).get(headers.STREAM) != "chunk"
                    yield msg
                    if finished:
                        return
                    msg = await self._next_of(attempts, chosen)
            finally:
                if not finished:
                    await attempts.cancel()

    async def _next_of(self, attempts: _Attempts, chosen: str) -> Msg:
        """The chosen attempt's next message (others' and reconnect wakes are dropped)."""
        while True:
            left = attempts.deadline - asyncio.get_running_loop().time()
            msg = await attempts.queue.get(max(left, 0.0))
            if msg.subject == chosen:
                return msg
