"""Repeated request ids: a retry is answered from its first attempt, never sent upstream twice.

A producer that lost a reply (a NATS server died, its attempt timed out) sends the same
request again under the same ``X-Request-Id``. :class:`Repeats` remembers, per broker
process, the whole answers of recent requests by (tenant, request id, body digest):

- the first attempt still running: the retry waits for it and gets its answer;
- the first attempt finished: the retry gets the remembered answer (``Llm-Replayed: 1``);
- the first attempt failed retryably (5xx, 429) or its caller cancelled it: the retry runs.

A different body under the same id is a different request (it runs). Memory is bounded by
:data:`DEFAULT_MAX_BYTES` (bodies and their bookkeeping) and time by
:data:`DEFAULT_TTL_S`, oldest dropped first. Streams are not remembered here: an idempotent
one is shared by its attempts at the workers (``workers/fanout.py``), another runs again (the
cache answers it when the first one was cacheable).

Across broker processes: brokers share ``llm.chat`` in a queue group, so a retry may land on
another broker, which does not know the first attempt. A request marked
``Llm-Idempotent: 1`` (the producer client marks its requests so) is deduplicated there by
the workers: the broker forwards its claim key and the first worker call to claim it in the
NATS KV bucket :func:`create_once_bucket` creates answers every attempt
(``workers/once.py``). An unmarked request is deduplicated across brokers only through the
shared L2 cache, when it is cacheable and the first answer was written back in time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import api

from broker.cache.front import Outcome
from broker.request import Call, Reply
from edge_runtime.jetstream import ensure_key_value
from schemas import headers
from schemas.jetstream import ONCE_BUCKET, ONCE_TTL_S

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_TTL_S", "Repeats", "create_once_bucket", "once_key"]

log = logging.getLogger("llm_edge.broker")

#: How long an answer is remembered: longer than a producer's retries last (the client's
#: default policy gives up after 4 tries of at most 30 s each).
DEFAULT_TTL_S = 300.0
#: The most memory remembered answers take (a chat answer is 0.3-10 KB: thousands fit; at
#: 2,000 misses a second, the last few seconds of them, at 100 a second the last minute).
#: A retry later than that is answered once across brokers by the workers' claims when the
#: producer marks it idempotent (``workers/once.py``).
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
#: What one remembered answer costs beside its body (key, reply and its headers, the outcome,
#: the ordered dict's node): about 950 bytes, measured with tracemalloc in ``llm-edge up``
#: under load. Counted, so the bound holds for memory and not for bodies alone (32 MiB of
#: bodies alone took about 90 MiB).
ENTRY_OVERHEAD = 1024

#: The longest creating the claims bucket may take (JetStream may be electing a leader).
CREATE_TIMEOUT_S = 10.0

Key = tuple[str, str, bytes]


def once_key(tenant: str, request_id: str, body_digest: bytes) -> str:
    """The claim key of a request: the same for every attempt of it, and only for those
    (``body_digest``: :meth:`Prepared.digest <broker.request.Prepared.digest>`).

    The broker forwards it (``Llm-Once-Key``) with an idempotent call; workers claim it in
    :data:`~schemas.jetstream.ONCE_BUCKET` before calling the upstream.
    """
    digest = hashlib.blake2b(digest_size=20)
    for part in (tenant.encode(), request_id.encode(), body_digest):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


async def create_once_bucket(nc: Client, replicas: int) -> None:
    """Create the workers' claim bucket (or raise its replicas); without JetStream, or when
    JetStream does not answer in time, idempotent requests go undeduplicated across brokers."""
    config = api.KeyValueConfig(bucket=ONCE_BUCKET, history=1, ttl=ONCE_TTL_S, replicas=replicas)
    try:
        async with asyncio.timeout(CREATE_TIMEOUT_S):
            await ensure_key_value(nc.jetstream(), config)
    except (TimeoutError, NatsError) as exc:
        log.warning("no %s bucket (%s): retries are deduplicated per broker only", ONCE_BUCKET, exc)


def _reusable(reply: Reply) -> bool:
    """An answer a retry may share: not a failure that another attempt could fix."""
    return reply.status < 500 and reply.status != 429


class Repeats:
    """The recent whole answers of this broker, by request id.

    Args:
        clock: the clock of ``Call.deadline`` (a joining retry waits until its own).
        ttl_s: how long an answer is remembered.
        max_bytes: the most answer bytes remembered.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._clock, self._ttl_s, self._max_bytes = clock, ttl_s, max_bytes
        self._done: OrderedDict[Key, tuple[float, Outcome]] = OrderedDict()
        self._bytes = 0
        self._running: dict[Key, asyncio.Future[Outcome]] = {}

    def __len__(self) -> int:
        return len(self._done)

    async def once(self, prepared: Call, run: Callable[[], Awaitable[Outcome]]) -> Outcome:
        """The request's answer: remembered, joined, or ``run`` (and then remembered)."""
        key = (prepared.tenant.name, prepared.request_id, prepared.digest())
        self._expire()
        done = self._done.get(key)
        if done is not None:
            return _replayed(done[1])
        running = self._running.get(key)
        if running is not None:
            joined = await self._join(prepared, running)
            if joined is not None:
                return joined
        # no-store: attempts in flight share the call, but no answer is kept for later ones
        return await self._lead(key, run, remember=not prepared.directives.no_store)

    async def _join(self, prepared: Call, first: asyncio.Future[Outcome]) -> Outcome | None:
        """The first attempt's answer, or ``None`` when this one must run itself."""
        try:
            async with asyncio.timeout(max(prepared.deadline - self._clock(), 0.0)):
                outcome = await asyncio.shield(first)
        except TimeoutError:
            return None  # the caller's own deadline decides what to answer
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if first.cancelled() and task is not None and not task.cancelling():
                return None
            raise
        except Exception:
            return None
        return _replayed(outcome) if _reusable(outcome.reply) else None

    async def _lead(
        self, key: Key, run: Callable[[], Awaitable[Outcome]], *, remember: bool
    ) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        leading = key not in self._running
        if leading:
            self._running[key] = future
        try:
            outcome = await run()
        except BaseException as exc:
            if leading:
                del self._running[key]
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
                    future.exception()  # retrieved: joiners run rather than re-raise it
            raise
        if leading:
            del self._running[key]
            future.set_result(outcome)
        if _reusable(outcome.reply) and remember:
            self._remember(key, outcome)
        return outcome

    def _remember(self, key: Key, outcome: Outcome) -> None:
        size = _cost(outcome)
        if size > self._max_bytes:
            return
        old = self._done.pop(key, None)
        if old is not None:
            self._bytes -= _cost(old[1])
        self._done[key] = (self._clock() + self._ttl_s, outcome)
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, (_, dropped) = self._done.popitem(last=False)
            self._bytes -= _cost(dropped)

    def _expire(self) -> None:
        now = self._clock()
        while self._done:
            key, (expires, outcome) = next(iter(self._done.items()))
            if expires > now:
                return
            del self._done[key]
            self._bytes -= _cost(outcome)


def _cost(outcome: Outcome) -> int:
    return len(outcome.reply.body) + ENTRY_OVERHEAD


def _replayed(outcome: Outcome) -> Outcome:
    """The first attempt's answer for a repeat: marked, and not to be charged again."""
    reply = outcome.reply
    copy = Reply(reply.status, reply.body, {**reply.headers, headers.REPLAYED: "1"})
    return Outcome(copy, outcome.cache, fresh=False)
