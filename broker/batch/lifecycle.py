"""A batch's life after creation: validate, queue, watch, finalize; progress events.

Any broker may do any step, each under the batch's lease (:mod:`broker.batch.lease`); the
steps of its provider batches are the offloader's (:mod:`broker.batch.offload`).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.js.errors import NotFoundError as JsNotFound

from broker.batch.lease import Leases
from broker.batch.offload import Offloader
from broker.batch.offload_plan import OffloadPlan, Planner, objects, summary
from broker.batch.settings import BatchSettings
from broker.batch.validate import Validation, iter_lines, validate_file
from edge_runtime.batch_store import PUBLISH_WINDOW, BatchStore
from schemas.batch import (
    BatchErrors,
    BatchRecord,
    BatchStatus,
    FileObject,
    RequestCounts,
)
from schemas.offload import SubBatch
from schemas.subjects import batch_events

__all__ = ["Lifecycle"]

#: How long stop() waits for the loop and the steps to end (the loop sleeps poll_s at most).
STOP_WAIT_S = 5.0
log = logging.getLogger("llm_edge.batch")

#: While interactive requests are arriving, lines are queued in windows of YIELD_WINDOW with
#: a pause of QUEUE_PAUSE_S between them (about 1,600 lines/s): measured on 2 cores, bursts
#: of 256 stores in nats-server took interactive p99 from 2 ms to 8 ms; these keep it at 2 ms.
QUEUE_PAUSE_S = 0.01
YIELD_WINDOW = 16
_encoder = msgspec.json.Encoder()
_result_decoder = msgspec.json.Decoder(dict[str, object])


class Lifecycle:
    """Validation, finalization and progress for every active batch.

    Args:
        nc: NATS connection (events).
        store: the batch resources.
        settings: poll interval.
        progress: per-batch outcome counters of this broker's runner, flushed here.
        clock: wall-clock seconds.
    """

    def __init__(
        self,
        nc: Client,
        store: BatchStore,
        settings: BatchSettings,
        progress: dict[str, Counter[str]],
        clock: Callable[[], float] = time.time,
        *,
        interactive: Callable[[], bool] = lambda: False,
    ) -> None:
        self._nc = nc
        self._planner: Planner | None = None
        self._offloader: Offloader | None = None
        self._interactive = interactive
        self._store = store
        self._settings = settings
        self._progress = progress
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._leases = Leases(store, settings, clock)
        self._stopping = False

    def use_offload(self, planner: Planner, offloader: Offloader) -> None:
        """Send lines that may go to the providers' own Batch APIs there (``planner``
        decides which; ``offloader`` runs those sub-batches)."""
        self._planner, self._offloader = planner, offloader

    def start(self) -> None:
        """Start the watch loop."""
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="batch-lifecycle")

    async def stop(self) -> None:
        """Stop watching (claimed steps are taken over by others when their lease ends).

        The loop also checks a flag: on Python 3.11 a cancel that arrives together with a
        NATS reply can be swallowed inside nats-py's ``wait_for``, and a loop that stops only
        by cancellation would then run on and hold up the broker's shutdown.
        """
        self._stopping = True
        tasks = [t for t in [self._task, *self._jobs] if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT_S)

    async def publish_event(self, record: BatchRecord) -> None:
        """The batch object on ``llm.batch.events.<tenant>.<id>`` (only its tenant's producers
        may subscribe there under the shipped NATS permissions)."""
        subject = batch_events(record.tenant, record.batch.id)
        await self._nc.publish(subject, _encoder.encode(record.batch))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a step in the background, tracked for shutdown."""
        task = asyncio.ensure_future(coro)
        self._jobs.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "batch step failed; its lease is released and the next tick runs it again",
                exc_info=task.exception(),
            )

    async def _loop(self) -> None:
        task = asyncio.current_task()
        # A cancellation some nats-py JetStream calls turn into their own error (or swallow)
        # must still end the loop, or stop() waits for it forever: the task still says so.
        while not self._stopping and (task is None or not task.cancelling()):
            try:
                await self._flush_progress()
                for batch_id in await self._store.active():
                    await self._watch(batch_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("batch lifecycle tick failed", exc_info=True)
            await asyncio.sleep(self._settings.poll_s)
        raise asyncio.CancelledError

    async def _watch(self, batch_id: str) -> None:
        record = await self._store.get(batch_id)
        if record is None:
            await self._store.deactivate(batch_id)
            return
        status = record.batch.status
        now = self._clock()
        lease_over = record.lease_until <= now
        if status is BatchStatus.VALIDATING and lease_over:
            self.spawn(self.validate(batch_id))
        elif record.offloading:  # finalized once every provider batch is merged back
            active = status in {BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING}
            due = active and lease_over and now >= record.offload_next
            if due and self._offloader is not None:
                self.spawn(self._offloader.run(self._leases, batch_id))
        elif (
            status in {BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING}
            or (status is BatchStatus.FINALIZING and lease_over)
        ) and await self._store.remaining(batch_id) == 0:
            self.spawn(self.finalize(batch_id))

    async def _flush_progress(self) -> None:
        """Add this broker's counted outcomes to the records and publish progress."""
        pending = {b: c for b, c in self._progress.items() if c}
        self._progress.clear()
        for batch_id, counts in pending.items():

            def add(record: BatchRecord, counts: Counter[str] = counts) -> BatchRecord | None:
                if record.batch.status is not BatchStatus.IN_PROGRESS:
                    return None
                rc = record.batch.request_counts
                rc.completed += counts["completed"]
                rc.failed += counts["failed"] + counts["expired"]
                return record

            record = await self._store.update(batch_id, add)
            if record is not None:
                await self.publish_event(record)

    async def validate(self, batch_id: str) -> None:
        """Validate the input file and queue its lines (or fail the batch)."""
        claimed = await self._leases.take(batch_id, BatchStatus.VALIDATING)
        if claimed is None:
            return
        record, token = claimed
        async with self._leases.holding(batch_id, token):
            outcome, subs = await self._validate_input(record)
        now = int(self._clock())

        def done(record: BatchRecord) -> BatchRecord | None:
            if record.batch.status is not BatchStatus.VALIDATING:
                return None  # cancelled meanwhile
            record.lease_until, record.lease_owner = 0.0, ""
            if outcome.errors:
                record.batch.status = BatchStatus.FAILED
                record.batch.failed_at = now
                record.batch.errors = BatchErrors(data=outcome.errors)
            else:
                record.batch.status = BatchStatus.IN_PROGRESS
                record.batch.in_progress_at = now
                record.batch.request_counts = RequestCounts(total=outcome.total)
                if subs:
                    record.offload, record.batch.offload = subs, summary(subs)
            return record

        final = await self._store.update(batch_id, done)
        if subs and (final is None or not final.offload):  # cancelled while validating
            await self._drop_offload(batch_id, subs)
        if final is not None:
            if final.batch.status is BatchStatus.FAILED:
                await self._store.deactivate(batch_id)
            await self.publish_event(final)

    async def _validate_input(self, record: BatchRecord) -> tuple[Validation, list[SubBatch]]:
        """Read, check and queue the input file (queueing is idempotent: a step taken over
        republishes lines JetStream already has, and they are dropped as duplicates); lines
        offloaded to a provider's Batch API are stored as sub-batches instead."""
        batch = record.batch
        with tempfile.TemporaryDirectory(prefix="llm-edge-batch-") as tmp:
            path = Path(tmp) / "input.jsonl"
            with path.open("wb") as handle:
                try:
                    await self._store.read_file(batch.input_file_id, handle)
                except JsNotFound:  # deleted since the batch was created: retrying cannot help
                    missing = Validation()
                    missing.add("file_not_found", f"input file {batch.input_file_id} is gone")
                    return missing, []
            outcome = await validate_file(path, batch.endpoint)
            if outcome.errors:
                return outcome, []
            lines = iter_lines(path)
            plan = OffloadPlan(Path(tmp), self._settings)
            if self._planner is not None and self._offloader is not None:
                lines = self._planner.split(record, lines, plan)
            await self._store.publish_lines(
                batch.id, lines, self._give_way, tenant=record.tenant, priority=record.priority
            )
            plan.close()
            if self._offloader is not None and plan.subs:
                await self._offloader.upload(batch.id, plan.subs)
        return outcome, [sub for sub, _ in plan.subs]

    async def _give_way(self) -> int:
        """Between windows of queued lines: while interactive requests are arriving, pause and
        queue small windows (a burst of stores in nats-server delays everyone's messages)."""
        if not self._interactive():
            return PUBLISH_WINDOW
        await asyncio.sleep(QUEUE_PAUSE_S)
        return YIELD_WINDOW

    async def finalize(self, batch_id: str) -> None:
        """Write the output and error files from the stored results; close the batch."""
        claimed = await self._leases.take(
            batch_id,
            BatchStatus.IN_PROGRESS,
            BatchStatus.CANCELLING,
            BatchStatus.FINALIZING,
            to=BatchStatus.FINALIZING,
        )
        if claimed is None:
            return
        record, token = claimed
        async with self._leases.holding(batch_id, token):
            counts, output_id, error_id = await self._write_files(record)
            await self._drop_offload(batch_id, record.offload)
        await self._close(batch_id, counts, output_id, error_id)

    async def _drop_offload(self, batch_id: str, subs: list[SubBatch]) -> None:
        """Drop the objects of a batch's sub-batches (each merge drops its own; these are
        those of a broker killed between a merge and its drop, or of a batch cancelled
        while it was validated). A failure leaves them, logged: the batch is done."""
        try:
            for sub in subs:
                await self._store.drop_objects(objects(batch_id, sub.index))
        except Exception:
            log.warning("batch %s: offload objects not dropped", batch_id, exc_info=True)

    async def _write_files(
        self, record: BatchRecord
    ) -> tuple[Counter[str], str | None, str | None]:
        """The output and error files of a batch: outcome counts and the two file ids."""
        counts: Counter[str] = Counter()
        with tempfile.TemporaryDirectory(prefix="llm-edge-batch-") as tmp:
            out_path, err_path = Path(tmp) / "output.jsonl", Path(tmp) / "errors.jsonl"
            with out_path.open("wb") as out, err_path.open("wb") as err:
                total = record.batch.request_counts.total
                async for line in self._store.results(record.batch.id, total):
                    kind = _outcome(line)
                    counts[kind] += 1
                    (out if kind == "completed" else err).write(line + b"\n")
            output_id = (
                await self._save(record, out_path, "output") if counts["completed"] else None
            )
            failed = counts["failed"] + counts["expired"]
            error_id = await self._save(record, err_path, "errors") if failed else None
        return counts, output_id, error_id

    async def _save(self, record: BatchRecord, path: Path, kind: str) -> str:
        file_id = f"file-{record.batch.id}-{kind}"
        file = FileObject(
            id=file_id,
            bytes=path.stat().st_size,  # noqa: ASYNC240  (a local temp file)
            created_at=int(self._clock()),
            filename=f"{record.batch.id}_{kind}.jsonl",
            purpose="batch_output",
        )
        with path.open("rb") as handle:
            await self._store.put_file(file, handle, owner=record.tenant)
        return file_id

    async def _close(
        self, batch_id: str, counts: Counter[str], output_id: str | None, error_id: str | None
    ) -> None:
        now = int(self._clock())

        def close(record: BatchRecord) -> BatchRecord | None:
            if record.batch.status is not BatchStatus.FINALIZING:
                return None
            batch = record.batch
            batch.output_file_id, batch.error_file_id = output_id, error_id
            batch.request_counts.completed = counts["completed"]
            batch.request_counts.failed = counts["failed"] + counts["expired"]
            if batch.cancelling_at is not None:
                batch.status, batch.cancelled_at = BatchStatus.CANCELLED, now
            elif counts["expired"]:
                batch.status, batch.expired_at = BatchStatus.EXPIRED, now
            else:
                batch.status, batch.completed_at = BatchStatus.COMPLETED, now
            record.lease_until, record.lease_owner = 0.0, ""
            return record

        record = await self._store.update(batch_id, close)
        await self._store.deactivate(batch_id)
        if record is not None:
            await self.publish_event(record)


def _outcome(line: bytes) -> str:
    """``completed``, ``failed`` or ``expired`` for a stored result line."""
    parsed = _result_decoder.decode(line)
    error = parsed.get("error")
    if isinstance(error, dict):
        return "expired" if error.get("code") == "batch_expired" else "failed"
    response = parsed.get("response")
    ok = isinstance(response, dict) and response.get("status_code") == 200
    return "completed" if ok else "failed"
