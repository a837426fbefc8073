"""L2 on a NATS JetStream key-value bucket, for the embedded single-machine stack.

Per-entry TTL uses the ``Nats-TTL`` message header (nats-server >= 2.11; the bucket's stream
allows per-message TTL). Cache keys ``tenant:ns:hex`` become KV keys ``tenant.ns.hex``, so a
namespace purge is one stream purge filtered by subject.

The bucket is bounded in bytes as well as by the entries' TTL: with the TTL alone,
nats-server's RSS grew 26 % in an 8-minute soak of distinct requests. At the bound the
oldest entries are dropped (``DiscardPolicy.OLD``, unlike a plain KV bucket's ``NEW``): a
full cache keeps learning instead of refusing every write.

Reads are JetStream direct gets of the key's last message (``allow_direct``: any replica
answers, raw bytes, no JSON or base64 on either side); while a cluster re-forms after a server
loss and no replica answers, the stream leader is asked through the JetStream API. Writes are
plain publishes to the bucket's subject that do not wait for JetStream's acknowledgement: the
write-back happens after the caller has its answer, and a lost write only costs a later miss.
They leave in batches, at most :data:`WRITE_BATCH_S` late: one socket write for many answers.
Measured per miss at 64 connections, the read and the acknowledged write cost 10 % of
``llm-edge up``'s CPU. A key the bucket certainly does not hold is not read at all
(:mod:`broker.cache.presence`).
"""

from __future__ import annotations

import asyncio
import logging
import math

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.js import api
from nats.js.errors import APIError, NotFoundError

from broker.cache.l2 import L2Size
from broker.cache.presence import Presence
from broker.cache.settings import DEFAULT_L2_NATS_MAX_BYTES
from edge_runtime.jetstream import ensure_stream
from schemas.jetstream import CACHE_BUCKET, kv_key, kv_purge_subject

__all__ = ["WRITE_BATCH_S", "NatsKVL2"]

log = logging.getLogger("llm_edge.broker")

#: The longest a write-back waits to leave with the others of its batch.
WRITE_BATCH_S = 0.005
#: JetStream's duplicate window for the bucket (nats-py's default for KV buckets).
_DUPLICATE_WINDOW_S = 120.0


class NatsKVL2:
    """JetStream KV-backed L2. Build with :meth:`open`."""

    name = "nats-kv"
    queued_writes = True

    def __init__(self, nc: Client, bucket: str) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._bucket = bucket
        self._stream = f"KV_{bucket}"
        self._get_prefix = f"$JS.API.DIRECT.GET.{self._stream}.$KV.{bucket}."
        self._set_prefix = f"$KV.{bucket}."
        self.presence = Presence(self._js, self._stream, self._set_prefix)
        self._batch: list[tuple[str, bytes, dict[str, str]]] = []
        self._flushing: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(
        cls,
        nc: Client,
        bucket: str = CACHE_BUCKET,
        *,
        max_bytes: int = DEFAULT_L2_NATS_MAX_BYTES,
        replicas: int = 1,
    ) -> NatsKVL2:
        """Create the bucket, or bound an existing one (file storage, history 1).

        Args:
            nc: connected client with JetStream.
            bucket: the KV bucket's name.
            max_bytes: the bucket's byte bound; past it the oldest entries go.
            replicas: copies in a NATS cluster (an existing bucket's are only raised).
        """
        js = nc.jetstream()
        config = api.StreamConfig(
            name=f"KV_{bucket}",
            subjects=[f"$KV.{bucket}.>"],
            allow_direct=True,
            allow_rollup_hdrs=True,
            allow_msg_ttl=True,
            deny_delete=True,
            discard=api.DiscardPolicy.OLD,
            duplicate_window=_DUPLICATE_WINDOW_S,
            max_bytes=max_bytes,
            max_consumers=-1,
            max_msgs=-1,
            max_msgs_per_subject=1,
            num_replicas=replicas,
            storage=api.StorageType.FILE,
        )
        await ensure_stream(js, config)  # an existing bucket takes these limits (an older one's)
        l2 = cls(nc, bucket)
        await l2.presence.start()
        return l2

    def known_absent(self, key: str) -> bool:
        """Whether the bucket certainly does not hold ``key`` (no read needed)."""
        return self.presence.absent(kv_key(key))

    async def get(self, key: str) -> bytes | None:
        """The key's value: a direct get of its subject's last message.

        Raises:
            APIError: JetStream answered with an error other than "not found".
        """
        subject_key = kv_key(key)
        try:
            msg = await self._nc.request(self._get_prefix + subject_key, b"", timeout=5)
        except NoRespondersError:  # a cluster re-forming after a server loss: ask the leader
            return await self._get_from_leader(subject_key)
        status = (msg.headers or {}).get("Status")
        if status == "404":
            return None
        if status is not None:
            raise APIError.from_msg(msg)
        return _value(msg.headers, msg.data)

    async def _get_from_leader(self, subject_key: str) -> bytes | None:
        try:
            found = await self._js.get_last_msg(self._stream, self._set_prefix + subject_key)
        except NotFoundError:
            return None
        return _value(found.headers, found.data)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Publish the value with a ``Nats-TTL`` header (no acknowledgement awaited)."""
        ttl = str(max(1, math.ceil(ttl_s)))
        subject_key = kv_key(key)
        self.presence.add(subject_key)  # before the write: a later read must not skip it
        self._batch.append((self._set_prefix + subject_key, value, {"Nats-TTL": ttl}))
        if len(self._batch) == 1:
            asyncio.get_running_loop().call_later(WRITE_BATCH_S, self._send_batch)

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        """A direct get of each key, all at once."""
        return list(await asyncio.gather(*(self.get(key) for key in keys)))

    async def set_many(self, items: list[tuple[str, bytes]], ttl_s: float) -> None:
        """Queue every write (they leave in one batch)."""
        for key, value in items:
            await self.set(key, value, ttl_s)

    def _send_batch(self) -> None:
        task = asyncio.ensure_future(self._publish(self._batch))
        self._batch = []
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _publish(self, batch: list[tuple[str, bytes, dict[str, str]]]) -> None:
        try:
            for subject, value, hdrs in batch:
                await self._nc.publish(subject, value, headers=hdrs)
        except Exception as exc:  # a closed connection: those answers are not kept
            log.debug("L2 write-back of %d answers lost: %s", len(batch), exc)

    async def purge(self, prefix: str) -> int:
        """Purge the bucket's stream, filtered to the prefix's subjects."""
        await self._js.purge_stream(self._stream, subject=kv_purge_subject(self._bucket, prefix))
        return -1

    async def size(self) -> L2Size:
        """The bucket's stream state: one message per live key, and its bytes."""
        state = (await self._js.stream_info(self._stream)).state
        return L2Size(self.name, state.messages, state.bytes, "cache")

    async def aclose(self) -> None:
        """Send the pending write-backs and stop the presence filter's consumer (the
        connection belongs to the service)."""
        if self._batch:
            self._send_batch()
        if self._flushing:
            await asyncio.wait(self._flushing, timeout=1.0)
        await self.presence.stop()


def _value(hdrs: dict[str, str] | None, data: bytes | None) -> bytes | None:
    """A key's value, ``None`` for a delete or purge marker."""
    if (hdrs or {}).get("KV-Operation") in {"DEL", "PURGE"}:
        return None
    return data
