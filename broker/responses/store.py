"""Stored responses: one JetStream KV entry per response id (:data:`RESPONSES_BUCKET`), kept
for ``[responses] ttl_s`` within ``max_bytes`` (the oldest dropped first).

An entry is a :class:`~schemas.responses.StoredResponse` (msgpack): the tenant that owns it,
the response object, its input items and the earlier turns of its conversation. A read for
another tenant finds nothing (the caller gets a 404, as for an id that never existed).
Updates of a background response's status are compare-and-set on the entry's revision, so a
cancel and a finishing run never overwrite each other. Every KV call is bounded
(:data:`KV_TIMEOUT_S`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError
from nats.js import api
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from edge_runtime.jetstream import ensure_key_value
from schemas.jetstream import RESPONSES_BUCKET
from schemas.responses import StoredResponse

__all__ = ["KV_TIMEOUT_S", "EntryTooLarge", "ResponseStore", "StoreUnavailable", "valid_id"]

log = logging.getLogger("llm_edge.responses")

#: The longest one KV call may take.
KV_TIMEOUT_S = 5.0
#: How many times a compare-and-set update is tried against concurrent writers.
CAS_TRIES = 5
#: What a response id may look like (a KV key is a subject token).
_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(StoredResponse).decode


def valid_id(response_id: str) -> bool:
    """Whether ``response_id`` can name a stored response."""
    return bool(_ID.match(response_id))


class StoreUnavailable(Exception):
    """JetStream did not answer (a 503 for the caller)."""


class EntryTooLarge(Exception):
    """An entry over the server's ``max_payload``: storing it again cannot succeed."""


class ResponseStore:
    """The stored responses.

    Args:
        kv: the bucket.
    """

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(
        cls, nc: Client, *, ttl_s: float, max_bytes: int, replicas: int
    ) -> ResponseStore:
        """Create the bucket (or bind to it)."""
        config = api.KeyValueConfig(
            bucket=RESPONSES_BUCKET,
            history=1,
            ttl=ttl_s,
            max_bytes=max_bytes,
            replicas=replicas,
        )
        async with asyncio.timeout(KV_TIMEOUT_S * 2):
            kv = await ensure_key_value(nc.jetstream(), config)
        return cls(kv)

    async def read(self, response_id: str, tenant: str) -> tuple[StoredResponse, int] | None:
        """The entry and its revision, when ``tenant`` owns it.

        Raises:
            StoreUnavailable: JetStream did not answer.
        """
        if not valid_id(response_id):
            return None
        try:
            async with asyncio.timeout(KV_TIMEOUT_S):
                entry = await self._kv.get(response_id)
        except KeyNotFoundError:
            return None
        except (TimeoutError, NatsError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        if not entry.value:
            return None
        try:
            stored = _decode(entry.value)
        except msgspec.MsgspecError:
            log.warning("stored response %s is unreadable", response_id)
            return None
        if stored.tenant != tenant:
            return None
        return stored, entry.revision or 0

    async def put(self, response_id: str, stored: StoredResponse) -> None:
        """Store (or replace) a response.

        Raises:
            EntryTooLarge: the entry is over the server's ``max_payload``.
            StoreUnavailable: JetStream did not answer.
        """
        entry = _encode(stored)
        try:
            async with asyncio.timeout(KV_TIMEOUT_S):
                await self._kv.put(response_id, entry)
        except MaxPayloadError as exc:
            raise EntryTooLarge(f"the stored response is {len(entry)} bytes") from exc
        except (TimeoutError, NatsError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def update(
        self,
        response_id: str,
        tenant: str,
        change: Callable[[StoredResponse], StoredResponse | None],
    ) -> StoredResponse | None:
        """Apply ``change`` to the entry (compare-and-set, tried again when another writer
        came first); ``change`` returns ``None`` to leave it as it is. The entry as it is
        now, or ``None`` when there is none.

        Raises:
            StoreUnavailable: JetStream did not answer.
        """
        found = await self.apply(response_id, tenant, change)
        return None if found is None else found[0]

    async def apply(
        self,
        response_id: str,
        tenant: str,
        change: Callable[[StoredResponse], StoredResponse | None],
    ) -> tuple[StoredResponse, bool] | None:
        """:meth:`update`, also saying whether this call's change is the one written (what
        a step that must happen once, such as charging, is conditioned on).

        Raises:
            EntryTooLarge: the changed entry is over the server's ``max_payload``.
            StoreUnavailable: JetStream did not answer.
        """
        for _ in range(CAS_TRIES):
            found = await self.read(response_id, tenant)
            if found is None:
                return None
            stored, revision = found
            changed = change(stored)
            if changed is None:
                return stored, False
            entry = _encode(changed)
            try:
                async with asyncio.timeout(KV_TIMEOUT_S):
                    await self._kv.update(response_id, entry, last=revision)
            except KeyWrongLastSequenceError:
                continue
            except MaxPayloadError as exc:
                raise EntryTooLarge(f"the stored response is {len(entry)} bytes") from exc
            except (TimeoutError, NatsError) as exc:
                raise StoreUnavailable(str(exc)) from exc
            return changed, True
        raise StoreUnavailable(f"{response_id}: too many concurrent updates")

    async def delete(self, response_id: str, tenant: str) -> bool:
        """Delete the tenant's response; whether there was one.

        Raises:
            StoreUnavailable: JetStream did not answer.
        """
        if await self.read(response_id, tenant) is None:
            return False
        try:
            async with asyncio.timeout(KV_TIMEOUT_S):
                await self._kv.purge(response_id)
        except (TimeoutError, NatsError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        return True
