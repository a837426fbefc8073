"""L2 on a NATS JetStream key-value bucket, for the embedded single-machine stack.

Per-entry TTL uses the ``Nats-TTL`` message header (nats-server >= 2.11; the bucket's stream
allows per-message TTL). Cache keys ``tenant:ns:hex`` become KV keys ``tenant.ns.hex``, so a
namespace purge is one stream purge filtered by subject.
"""

from __future__ import annotations

import math

from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

__all__ = ["DEFAULT_BUCKET", "NatsKVL2"]

DEFAULT_BUCKET = "llm_edge_cache"


class NatsKVL2:
    """JetStream KV-backed L2. Build with :meth:`open`."""

    name = "nats-kv"

    def __init__(self, nc: Client, kv: KeyValue, bucket: str) -> None:
        self._js = nc.jetstream()
        self._kv = kv
        self._bucket = bucket
        self._stream = f"KV_{bucket}"

    @classmethod
    async def open(cls, nc: Client, bucket: str = DEFAULT_BUCKET) -> NatsKVL2:
        """Create the bucket if needed (memory-light: file storage, history 1)."""
        js = nc.jetstream()
        kv = await js.create_key_value(bucket=bucket, history=1)
        return cls(nc, kv, bucket)

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

    async def aclose(self) -> None:
        """The connection belongs to the service."""
