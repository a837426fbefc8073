"""A broker's claim on one step of a batch (validation, a provider batch step, finalization).

Any broker may do any step: each step claims the batch with a compare-and-set on its record
(a lease), so steps never run twice at once. The lease is short (``batch.lease_s``) and the
claimant renews it while the step runs: a step whose broker died is taken over by another
broker within ``lease_s``, and a step that failed (a JetStream error) releases its lease, so
any broker's next tick runs it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from nats.nuid import NUID

from broker.batch.settings import BatchSettings
from edge_runtime.batch_store import BatchStore
from schemas.batch import BatchRecord, BatchStatus

__all__ = ["Leases", "release"]

log = logging.getLogger("llm_edge.batch")


class Leases:
    """Claims, renews and releases the steps' leases on batch records.

    Args:
        store: the batch records.
        settings: ``lease_s``.
        clock: wall-clock seconds.
    """

    def __init__(
        self, store: BatchStore, settings: BatchSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._nuid = NUID()

    def _claim(
        self, token: str, *statuses: BatchStatus, to: BatchStatus | None = None
    ) -> Callable[[BatchRecord], BatchRecord | None]:
        now = self._clock()

        def change(record: BatchRecord) -> BatchRecord | None:
            if record.batch.status not in statuses or record.lease_until > now:
                return None
            record.lease_until = now + self._settings.lease_s
            record.lease_owner = token
            if to is not None:
                record.batch.status = to
                if to is BatchStatus.FINALIZING:
                    record.batch.finalizing_at = int(now)
            return record

        return change

    async def take(
        self, batch_id: str, *statuses: BatchStatus, to: BatchStatus | None = None
    ) -> tuple[BatchRecord, str] | None:
        """Claim a step: the record and the claim's token, or ``None`` when another broker
        holds the lease (or the batch is gone or past the step)."""
        token = self._nuid.next().decode()
        record = await self._store.update(batch_id, self._claim(token, *statuses, to=to))
        if record is None or record.lease_owner != token:
            return None
        return record, token

    @contextlib.asynccontextmanager
    async def holding(self, batch_id: str, token: str) -> AsyncIterator[None]:
        """Renew the lease while the step runs; release it at once if the step fails."""
        renewer = asyncio.create_task(self._renew(batch_id, token))
        try:
            yield
        except BaseException:
            renewer.cancel()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._settings.lease_s):
                    await self._store.update(batch_id, release(token))
            raise
        finally:
            renewer.cancel()

    async def _renew(self, batch_id: str, token: str) -> None:
        """Push the lease forward every third of ``lease_s`` while the claim holds it."""
        lease_s = self._settings.lease_s

        def renew(record: BatchRecord) -> BatchRecord | None:
            if record.lease_owner != token:
                return None
            record.lease_until = self._clock() + lease_s
            return record

        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                record = await self._store.update(batch_id, renew)
            except Exception:
                log.warning("batch %s: lease renewal failed; retrying", batch_id, exc_info=True)
                continue
            if record is None or record.lease_owner != token:
                return  # the step finished, or the lease was lost to another broker


def release(
    token: str, then: Callable[[BatchRecord], None] | None = None
) -> Callable[[BatchRecord], BatchRecord | None]:
    """A record change that gives the claim's lease up (when the claim still holds it),
    applying ``then`` to the record as it does."""

    def change(record: BatchRecord) -> BatchRecord | None:
        if record.lease_owner != token:
            return None
        record.lease_until, record.lease_owner = 0.0, ""
        if then is not None:
            then(record)
        return record

    return change
