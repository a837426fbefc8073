"""L2 on a NATS JetStream key-value bucket, for the embedded single-machine stack.

Per-entry TTL uses the ``Nats-TTL`` message header (nats-server >= 2.11; the bucket's stream
allows per-message TTL). Cache keys ``tenant:ns:hex`` become KV keys ``tenant.ns.hex``, so a
namespace purge is one stream purge filtered by subject.

The bucket is bounded in bytes as well as by the entries' TTL: with the TTL alone,
nats-server's RSS grew 26 % in an 8-minute soak of distinct requests. At the bound the
oldest entries are dropped (``DiscardPolicy.OLD``, unlike a plain KV bucket's ``NEW``): a
full cache keeps learning instead of refusing every write.
"""

from __future__ import annotations

import math

from nats.aio.client import Client
from nats.js import api
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from broker.cache.l2 import L2Size
from edge_client.streams import ensure_stream

__all__ = ["DEFAULT_BUCKET", "DEFAULT_L2_NATS_MAX_BYTES", "NatsKVL2"]

DEFAULT_BUCKET = "llm_edge_cache"
#: Bytes the bucket may hold before its oldest entries are dropped.
DEFAULT_L2_NATS_MAX_BYTES = 256 * 1024 * 1024
#: JetStream's duplicate window for the bucket (nats-py's default for KV buckets).
_DUPLICATE_WINDOW_S = 120.0


class NatsKVL2:
    """JetStream KV-backed L2. Build with :meth:`open`."""

    name = "nats-kv"

    def __init__(self, nc: Client, kv: KeyValue, bucket: str) -> None:
        self._js = nc.jetstream()
        self._kv = kv
        self._bucket = bucket
        self._stream = f"KV_{bucket}"

    @classmethod
    async def open(
        cls,
        nc: Client,
        bucket: str = DEFAULT_BUCKET,
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
        return cls(nc, await js.key_value(bucket), bucket)

    @staticmethod
    def _subject_key(key: str) -> str:
        return key.replace(":", ".")

    async def get(self, key: str) -> bytes | None:
        """Direct/last-message get of the key."""
        try:
            entry = await self._kv.get(self._subject_key(key))
        except KeyNotFoundError:
            return None
        return entry.value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Publish the value with a ``Nats-TTL`` header."""
        subject = f"$KV.{self._bucket}.{self._subject_key(key)}"
        await self._js.publish(subject, value, msg_ttl=max(1, math.ceil(ttl_s)))

    async def purge(self, prefix: str) -> int:
        """Purge the bucket's stream, filtered to the prefix's subjects."""
        subject = f"$KV.{self._bucket}.{self._subject_key(prefix)}"
        subject = subject + ">" if prefix.endswith(":") or not prefix else subject
        await self._js.purge_stream(self._stream, subject=subject)
        return -1

    async def size(self) -> L2Size:
        """The bucket's stream state: one message per live key, and its bytes."""
        state = (await self._js.stream_info(self._stream)).state
        return L2Size(self.name, state.messages, state.bytes, "cache")

    async def aclose(self) -> None:
        """The connection belongs to the service."""
