"""One upstream call per idempotent request, whichever broker and worker its attempts reach.

A producer whose client retries (``edge_client``) marks its whole requests
``Llm-Idempotent: 1``; the broker then forwards each call with ``Llm-Once-Key``, a digest of
(tenant, request id, body). A worker handed such a call claims the key in the NATS KV
bucket :data:`~schemas.jetstream.ONCE_BUCKET` before it calls the upstream (a KV create: one
claim wins):

- the claim is won: the upstream is called and the answer stored under the key; a failure a
  later attempt could fix (5xx, 429) or a cancelled call deletes the claim instead;
- the key holds an answer: that answer is the reply (``Llm-Replayed: 1``), no upstream call;
- the key holds another call's claim: this call waits (polling the key) for its answer, until
  its own deadline; a claim that was deleted, or whose lease passed (its worker died and
  stopped renewing it), is taken over (compare-and-set) and this call runs.

So a retry that lands on another broker, and a broker's own failover to another worker after
a reply was lost, are answered by the first call. Bounds: each KV call has a timeout
(:data:`KV_TIMEOUT_S`); a claim's lease is :data:`LEASE_S`, renewed every :data:`RENEW_S`
while its call runs; entries expire after :data:`~schemas.jetstream.ONCE_TTL_S`. Without the
bucket (the brokers create it; a server without JetStream has none) calls run unclaimed.
When JetStream does not answer a claim (its servers are electing leaders) the claim is tried
again for up to :data:`CLAIM_WAIT_S` (:data:`SINGLE_CLAIM_WAIT_S` for a bucket of one copy, which no
election brings back); a JetStream out for longer does not stop the service: calls run
unclaimed for :data:`SKIP_S` (logged), then claims are tried again. The cost on the reply's
path is one KV create per call; the answer is stored after the reply is sent.

Streams are claimed the same way (:meth:`OnceClaims.stream`). The claim names a join subject
(``llm.once.<provider>.<unique>``) the claiming worker listens on while its stream runs; a
later attempt that finds the claim asks to join, and the claiming worker sends that attempt's
reply subject every message so far and every one to come (:mod:`workers.fanout`). A finished
stream's messages are stored like an answer and replayed to later attempts. A stream whose
messages outgrew :data:`MAX_STREAM_LOG_BYTES` can no longer be joined or stored: a later
attempt runs its own call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from nats.nuid import NUID

from schemas import error_body, headers, subjects
from schemas.jetstream import ONCE_BUCKET
from workers.fanout import Fanout, Message

__all__ = ["FULL", "JOINED", "MAX_STREAM_LOG_BYTES", "Answer", "OnceClaims", "StreamCall"]

log = logging.getLogger("llm_edge.worker")

#: The longest one KV call may take.
KV_TIMEOUT_S = 2.0
#: How long a claim holds without being renewed: a call whose worker died is taken over by a
#: waiting attempt this long after its last renewal (longer than a JetStream election).
LEASE_S = 20.0
#: How often a running call renews its claim.
RENEW_S = 5.0
#: How often a waiting call reads the key.
POLL_S = 0.05
#: How long a claim is tried while JetStream does not answer, at most half the call's budget
#: (a stream whose leader was lost elects another within about 10 s).
CLAIM_WAIT_S = 15.0
#: The same for a bucket of one copy: its server is down, waiting brings no election.
SINGLE_CLAIM_WAIT_S = 1.0
#: After a claim JetStream never answered, calls run unclaimed this long without trying.
SKIP_S = 5.0
#: How long storing an answer is tried (JetStream may be electing a leader meanwhile).
STORE_S = 30.0
#: How long a worker waits before looking for a bucket it did not find.
REBIND_S = 10.0
#: The most a stream's messages may take to be joined by a later attempt, and stored for the
#: attempts after it (a stored stream must fit one KV value too).
MAX_STREAM_LOG_BYTES = 8 * 1024 * 1024
#: What a worker answers a join: it now sends the joiner's messages, or it cannot.
JOINED, FULL = b"joined", b"full"

#: (status, body, extra reply headers) of one call.
Answer = tuple[int, bytes, dict[str, str]]


class _Entry(msgspec.Struct, omit_defaults=True):
    """A key's value: a running claim (``lease`` in epoch seconds; a stream's names the
    subject its worker takes joins on) or a stored answer (a stream's: all its messages)."""

    lease: float = 0.0
    join: str = ""
    status: int = 0
    body: bytes = b""
    headers: dict[str, str] = {}
    messages: list[Message] = []


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Entry).decode


def _retryable(status: int) -> bool:
    return status >= 500 or status == 429


def _claim(join: str = "") -> bytes:
    """A claim whose lease runs :data:`LEASE_S` from now."""
    return _encode(_Entry(lease=time.time() + LEASE_S, join=join))


_nuid = NUID()


@dataclass(frozen=True)
class StreamCall:
    """A streamed call, which later attempts of its request may join."""

    #: its reply subjects and the messages sent so far
    fanout: Fanout
    #: streams the upstream call through :attr:`fanout`; its last message's status
    run: Callable[[], Awaitable[int]]
    #: answers a later attempt's join while this call holds the claim
    on_join: Callable[[Msg], Awaitable[None]]
    #: sent with this call's own join request (its keepalive interval)
    join_headers: dict[str, str] = field(default_factory=dict)


#: How a waiting stream attempt ended: it joined the claiming one, or it sent its reply
#: (replayed or late), or it must run unclaimed; or (an ``int``) it took the claim over.
Followed = Literal["joined", "sent", "unclaimed"] | int


async def _renew(kv: KeyValue, key: str, revision: int, join: str = "") -> None:
    """Push the claim's lease on every :data:`RENEW_S` while the call runs (until cancelled,
    or until another call took the claim over)."""
    while True:
        await asyncio.sleep(RENEW_S)
        try:
            async with asyncio.timeout(KV_TIMEOUT_S):
                revision = await kv.update(key, _claim(join), last=revision)
        except KeyWrongLastSequenceError:
            return
        except (TimeoutError, NatsError):
            pass  # a leader is being elected: the lease outlasts an election


def _late(provider: str) -> Answer:
    message = "the first attempt of this request did not answer within the deadline"
    return 504, error_body(504, "deadline_exceeded", message), {headers.PROVIDER: provider}


class OnceClaims:
    """A worker's claims in :data:`~schemas.jetstream.ONCE_BUCKET`."""

    def __init__(self, nc: Client, provider: str) -> None:
        self._nc, self._provider = nc, provider
        self._kv: KeyValue | None = None
        self._looked_at = -REBIND_S
        self._looking: asyncio.Task[None] | None = None
        self._claim_wait_s = SINGLE_CLAIM_WAIT_S
        #: Until then claims are not tried: the last one JetStream never answered.
        self._skip_until = 0.0

    async def run(
        self,
        key: str,
        budget_s: float,
        call: Callable[[], Awaitable[Answer]],
        send: Callable[[Answer], Awaitable[None]],
    ) -> None:
        """Send ``call``'s answer, or the answer of the attempt that claimed ``key`` first.

        The answer is sent before it is stored: a reply waits for one KV round trip (the
        claim), not two.
        """
        kv = self._bucket()
        if kv is None or time.monotonic() < self._skip_until:
            await send(await call())
            return
        deadline = time.monotonic() + budget_s
        try:
            revision = await self._claim(kv, key, min(self._claim_wait_s, budget_s / 2))
        except KeyWrongLastSequenceError:
            waited = await self._wait(kv, key, deadline)
            if not isinstance(waited, int):
                await send(waited)
                return
            revision = waited
        if revision is None:  # JetStream is out for longer than an election: serve, unclaimed
            if time.monotonic() >= self._skip_until:
                log.warning(
                    "JetStream did not answer a claim in %s; calls run unclaimed for %g s",
                    *(ONCE_BUCKET, SKIP_S),
                )
            self._skip_until = time.monotonic() + SKIP_S
            await send(await call())
            return
        await self._lead(kv, key, revision, call, send)

    @staticmethod
    async def _claim(kv: KeyValue, key: str, within_s: float, join: str = "") -> int | None:
        """The claim's revision; ``None`` when JetStream did not answer within ``within_s``
        (tried again meanwhile: its servers may be electing leaders).

        Raises:
            KeyWrongLastSequenceError: another attempt holds the key.
        """
        until = time.monotonic() + within_s
        while True:
            try:
                async with asyncio.timeout(KV_TIMEOUT_S):
                    return await kv.create(key, _claim(join))
            except KeyWrongLastSequenceError:
                raise
            except (TimeoutError, NatsError):
                if time.monotonic() + POLL_S * 4 >= until:
                    return None
                await asyncio.sleep(POLL_S * 4)

    async def _lead(
        self,
        kv: KeyValue,
        key: str,
        revision: int,
        call: Callable[[], Awaitable[Answer]],
        send: Callable[[Answer], Awaitable[None]],
    ) -> None:
        renewing = asyncio.create_task(_renew(kv, key, revision))
        try:
            answer = await call()
        except BaseException:
            renewing.cancel()
            await asyncio.shield(self._release(kv, key))
            raise
        renewing.cancel()
        status, body, extra = answer
        try:
            await send(answer)
        finally:
            if _retryable(status):
                await self._release(kv, key)
            else:
                await self._store(kv, key, _Entry(status=status, body=body, headers=extra))

    async def _wait(self, kv: KeyValue, key: str, deadline: float) -> Answer | int:
        """The claiming call's answer (a 504 when the deadline passes first), or the revision
        of the claim this call took over (it runs)."""
        while True:
            taken: int | None = None
            try:
                async with asyncio.timeout(min(KV_TIMEOUT_S, max(deadline - time.monotonic(), 0))):
                    found = await kv.get(key)
            except KeyNotFoundError:  # released (deleted) or expired: claim it again
                taken = await self._take(kv, key, None)
            except (TimeoutError, NatsError):
                pass  # a leader is being elected: read again
            else:
                entry = _decode(found.value or b"")
                if entry.status:
                    extra = {**entry.headers, headers.REPLAYED: "1"}
                    return entry.status, entry.body, extra
                if entry.lease < time.time():  # its worker stopped renewing it
                    taken = await self._take(kv, key, found.revision)
            if taken is not None:
                return taken
            if time.monotonic() + POLL_S >= deadline:
                return _late(self._provider)
            await asyncio.sleep(POLL_S)

    @staticmethod
    async def _take(kv: KeyValue, key: str, revision: int | None, join: str = "") -> int | None:
        """The claim's new revision, if this call now holds it (another may be first)."""
        try:
            async with asyncio.timeout(KV_TIMEOUT_S):
                if revision is None:
                    return await kv.create(key, _claim(join))
                return await kv.update(key, _claim(join), last=revision)
        except (KeyWrongLastSequenceError, TimeoutError, NatsError):
            return None

    async def stream(self, key: str, budget_s: float, call: StreamCall) -> bool:
        """Run a streamed call, or hand its reply subject to the attempt that claimed ``key``
        first.

        Returns:
            ``True`` when this call's reply subject joined the claiming attempt's stream
            (that worker sends it every message and keepalive from now on).
        """
        kv = self._bucket()
        if kv is None or time.monotonic() < self._skip_until:
            await call.run()
            return False
        deadline = time.monotonic() + budget_s
        join = f"{subjects.ONCE_JOIN_PREFIX}.{self._provider}.{_nuid.next().decode()}"
        listening = await self._nc.subscribe(join, cb=call.on_join)
        try:
            try:
                revision = await self._claim(kv, key, min(self._claim_wait_s, budget_s / 2), join)
            except KeyWrongLastSequenceError:
                followed = await self._follow(kv, key, deadline, join, call)
                if followed == "joined":
                    return True
                if followed == "sent":
                    return False
                revision = None if followed == "unclaimed" else followed
            if revision is None:  # JetStream is out, or the claiming stream cannot be joined
                await call.run()
                return False
            await self._lead_stream(kv, key, revision, join, call)
            return False
        finally:
            with contextlib.suppress(NatsError):
                await listening.unsubscribe()

    async def _lead_stream(
        self,
        kv: KeyValue,
        key: str,
        revision: int,
        join: str,
        call: StreamCall,
    ) -> None:
        renewing = asyncio.create_task(_renew(kv, key, revision, join))
        try:
            status = await call.run()
        except BaseException:
            renewing.cancel()
            await asyncio.shield(self._release(kv, key))
            raise
        renewing.cancel()
        messages = call.fanout.log
        if _retryable(status) or messages is None:
            await self._release(kv, key)
        else:  # stored before the join subject closes: a late join finds the messages here
            await self._store(kv, key, _Entry(status=status, messages=messages))

    async def _follow(
        self,
        kv: KeyValue,
        key: str,
        deadline: float,
        join: str,
        call: StreamCall,
    ) -> Followed:
        """Join the stream that claimed ``key``, or send its stored messages (a 504 error
        message when the deadline passes first), or take the claim over."""
        fanout = call.fanout
        while True:
            taken: int | None = None
            try:
                async with asyncio.timeout(min(KV_TIMEOUT_S, max(deadline - time.monotonic(), 0))):
                    found = await kv.get(key)
            except KeyNotFoundError:
                taken = await self._take(kv, key, None, join)
            except (TimeoutError, NatsError):
                pass
            else:
                entry = _decode(found.value or b"")
                if entry.status:
                    for status, body, extra in entry.messages:
                        await fanout.send(status, body, {**extra, headers.REPLAYED: "1"})
                    return "sent"
                if entry.lease < time.time():
                    taken = await self._take(kv, key, found.revision, join)
                elif entry.join:
                    answer = await self._ask_to_join(entry.join, fanout.replies[0], call)
                    if answer is not None:
                        return answer
            if taken is not None:
                return taken
            if time.monotonic() + POLL_S >= deadline:
                status, body, extra = _late(self._provider)
                extra.update({headers.STREAM: "error", headers.SEQ: "0"})
                await fanout.send(status, body, extra)
                return "sent"
            await asyncio.sleep(POLL_S)

    async def _ask_to_join(
        self, subject: str, reply: str, call: StreamCall
    ) -> Literal["joined", "unclaimed"] | None:
        """Ask the claiming worker to send ``reply`` its stream; ``None``: it did not answer
        (it finished, or died: the key tells which)."""
        try:
            answer = await self._nc.request(
                subject, reply.encode(), timeout=KV_TIMEOUT_S, headers=call.join_headers
            )
        except (TimeoutError, NoRespondersError, NatsError):
            return None
        if answer.data == JOINED:
            return "joined"
        log.warning("a stream of %s could not be joined (too large); it runs again", subject)
        return "unclaimed"

    @staticmethod
    async def _release(kv: KeyValue, key: str) -> None:
        """Let the next attempt run (bounded: an expiring lease releases it too)."""
        with contextlib.suppress(TimeoutError, NatsError):
            async with asyncio.timeout(KV_TIMEOUT_S):
                await kv.delete(key)

    async def _store(self, kv: KeyValue, key: str, entry: _Entry) -> None:
        """Keep the answer for the attempts to come, trying for :data:`STORE_S`; an answer too
        large for a KV value releases the claim instead."""
        value = _encode(entry)
        if len(value) > self._nc.max_payload - 1024:
            await self._release(kv, key)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STORE_S):
                while True:
                    try:
                        await kv.put(key, value)
                    except NatsError:  # a leader is being elected: try again
                        await asyncio.sleep(POLL_S * 4)
                    else:
                        return
        log.warning("the answer of %s was not stored for retries", key)

    async def bind(self) -> KeyValue | None:
        """Look the bucket up now (a worker does before its first call)."""
        await self._lookup()
        return self._kv

    def _bucket(self) -> KeyValue | None:
        """The bucket for a call. While it is missing (not created yet, or a NATS user without
        the permission), it is looked up again in the background at most every
        :data:`REBIND_S`; no call waits for that."""
        stale = time.monotonic() - self._looked_at >= REBIND_S
        if self._kv is None and self._looking is None and stale:
            self._looking = asyncio.create_task(self._lookup())
        return self._kv

    async def _lookup(self) -> None:
        self._looked_at = time.monotonic()
        try:
            with contextlib.suppress(TimeoutError, NatsError):
                async with asyncio.timeout(KV_TIMEOUT_S):
                    kv = await self._nc.jetstream().key_value(ONCE_BUCKET)
                    config = (await kv.status()).stream_info.config
                    # one copy: no election brings it back, its server must come back
                    replicated = (config.num_replicas or 1) > 1
                    self._claim_wait_s = CLAIM_WAIT_S if replicated else SINGLE_CLAIM_WAIT_S
                    self._kv = kv
        finally:
            self._looking = None
