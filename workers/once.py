"""One upstream call per idempotent request, whichever broker and worker its attempts reach.

A producer whose client retries (``edge_client``) marks its whole requests
``Llm-Idempotent: 1``; the broker then forwards each call with ``Llm-Once-Key``, a digest of
(tenant, request id, body). A worker handed such a call claims the key in the NATS KV
bucket :data:`BUCKET` before it calls the upstream (a KV create: one claim wins):

- the claim is won: the upstream is called and the answer stored under the key; a failure a
  later attempt could fix (5xx, 429) or a cancelled call deletes the claim instead;
- the key holds an answer: that answer is the reply (``Llm-Replayed: 1``), no upstream call;
- the key holds another call's claim: this call waits (polling the key) for its answer, until
  its own deadline; a claim that was deleted, or whose lease passed (its worker died), is
  taken over (compare-and-set) and this call runs.

So a retry that lands on another broker, and a broker's own failover to another worker after
a reply was lost, are answered by the first call. Bounds: each KV call has a timeout
(:data:`KV_TIMEOUT_S`), a claim's lease is its call's time budget plus :data:`LEASE_MARGIN_S`,
entries expire after :data:`TTL_S`. Without the bucket (the brokers create it; a server
without JetStream has none) calls run unclaimed. When JetStream does not answer a claim (its
servers are electing leaders), the call is refused 503 with ``Retry-After`` instead of run
unclaimed: the upstream was not called, and the producer's retry comes back later. Streams
are not claimed (a stream is not retried once a chunk was delivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from schemas import error_body, headers

__all__ = ["BUCKET", "TTL_S", "Answer", "OnceClaims", "once_key"]

log = logging.getLogger("llm_edge.worker")

#: The KV bucket of claims and answers.
BUCKET = "llm_edge_once"
#: How long an answer is kept for a retry: longer than a producer's retries last.
TTL_S = 300.0
#: The longest one KV call may take.
KV_TIMEOUT_S = 2.0
#: A claim outlives its call's time budget by this much before another call takes it over.
LEASE_MARGIN_S = 2.0
#: How often a waiting call reads the key.
POLL_S = 0.05
#: How long storing an answer is tried (JetStream may be electing a leader).
STORE_S = 5.0
#: How long a worker waits before looking for a bucket it did not find.
REBIND_S = 10.0

#: (status, body, extra reply headers) of one call.
Answer = tuple[int, bytes, dict[str, str]]


class _Entry(msgspec.Struct, omit_defaults=True):
    """A key's value: a running claim (``lease`` in epoch seconds) or a stored answer."""

    lease: float = 0.0
    status: int = 0
    body: bytes = b""
    headers: dict[str, str] = {}


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Entry).decode


def once_key(tenant: str, request_id: str, body: bytes) -> str:
    """The claim key of a request: the same for every attempt of it, and only for those."""
    digest = hashlib.blake2b(digest_size=20)
    for part in (tenant.encode(), request_id.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _retryable(status: int) -> bool:
    return status >= 500 or status == 429


def _unavailable(provider: str) -> Answer:
    message = "the idempotency store is electing a leader; retry shortly"
    extra = {headers.RETRY_AFTER: "1", headers.RETRYABLE: "1", headers.PROVIDER: provider}
    return 503, error_body(503, "idempotency_unavailable", message), extra


def _late(provider: str) -> Answer:
    message = "the first attempt of this request did not answer within the deadline"
    return 504, error_body(504, "deadline_exceeded", message), {headers.PROVIDER: provider}


class OnceClaims:
    """A worker's claims in :data:`BUCKET`."""

    def __init__(self, nc: Client, provider: str) -> None:
        self._nc, self._provider = nc, provider
        self._kv: KeyValue | None = None
        self._looked_at = -REBIND_S

    async def run(self, key: str, budget_s: float, call: Callable[[], Awaitable[Answer]]) -> Answer:
        """``call``'s answer, or the answer of the attempt that claimed ``key`` first."""
        kv = await self._bucket()
        if kv is None:
            return await call()
        deadline = time.monotonic() + budget_s
        claim = _encode(_Entry(lease=time.time() + budget_s + LEASE_MARGIN_S))
        try:
            async with asyncio.timeout(KV_TIMEOUT_S):
                await kv.create(key, claim)
        except KeyWrongLastSequenceError:
            waited = await self._wait(kv, key, claim, deadline)
            if waited is not None:
                return waited
        except (TimeoutError, NatsError):
            return _unavailable(self._provider)
        return await self._lead(kv, key, call)

    async def _lead(self, kv: KeyValue, key: str, call: Callable[[], Awaitable[Answer]]) -> Answer:
        try:
            answer = await call()
        except BaseException:
            await asyncio.shield(self._release(kv, key))
            raise
        status, body, extra = answer
        if _retryable(status):
            await self._release(kv, key)
        else:
            await self._store(kv, key, _Entry(status=status, body=body, headers=extra))
        return answer

    async def _wait(self, kv: KeyValue, key: str, claim: bytes, deadline: float) -> Answer | None:
        """The claiming call's answer (a 504 when the deadline passes first); ``None`` once
        this call holds the claim (it runs)."""
        while True:
            try:
                async with asyncio.timeout(KV_TIMEOUT_S):
                    found = await kv.get(key)
            except KeyNotFoundError:  # released (deleted) or expired: claim it again
                if await self._take(kv, key, claim, None):
                    return None
            except (TimeoutError, NatsError):
                pass  # a leader is being elected: read again
            else:
                entry = _decode(found.value or b"")
                if entry.status:
                    extra = {**entry.headers, headers.REPLAYED: "1"}
                    return entry.status, entry.body, extra
                if entry.lease < time.time() and await self._take(kv, key, claim, found.revision):
                    return None
            if time.monotonic() + POLL_S >= deadline:
                return _late(self._provider)
            await asyncio.sleep(POLL_S)

    @staticmethod
    async def _take(kv: KeyValue, key: str, claim: bytes, revision: int | None) -> bool:
        """Whether this call now holds the claim (another may have taken it first)."""
        try:
            async with asyncio.timeout(KV_TIMEOUT_S):
                if revision is None:
                    await kv.create(key, claim)
                else:
                    await kv.update(key, claim, last=revision)
        except (KeyWrongLastSequenceError, TimeoutError, NatsError):
            return False
        return True

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

    async def _bucket(self) -> KeyValue | None:
        if self._kv is not None:
            return self._kv
        now = time.monotonic()
        if now - self._looked_at < REBIND_S:
            return None
        self._looked_at = now
        with contextlib.suppress(TimeoutError, NatsError):
            async with asyncio.timeout(KV_TIMEOUT_S):
                self._kv = await self._nc.jetstream().key_value(BUCKET)
        return self._kv
