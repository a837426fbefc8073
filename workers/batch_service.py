"""Serves ``llm.provider.<provider>.batch``: the broker's calls to run a sub-batch on the
provider's own Batch API (submit, status, results, cancel; :mod:`schemas.offload`).

Only workers whose adapter has a Batch API subscribe, so a broker that finds no responder
there runs the lines on the normal path. The lines and the results travel through the
batch files' object store: a sub-batch of 50,000 lines is far over a message's size.

After the provider accepted a submit, the worker writes a receipt (``<input>-receipt``, the
provider's batch id) before it answers: a broker that never got the answer (it died, or its
call timed out) asks ``find``, which reads the receipt, and only when there is none (the
worker died in between, or the create call failed on our side only) pages the provider's
list of batches.
"""

from __future__ import annotations

import io
import logging

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import ObjectDeletedError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from schemas import subjects
from schemas.jetstream import FILES_BUCKET
from schemas.offload import (
    CLOCK_SKEW_S,
    OffloadAnswer,
    OffloadCall,
    OffloadOp,
    OffloadResult,
    receipt_object,
)
from workers.batches import ProviderBatches
from workers.errors import ProviderError
from workers.queue_service import QueueService

__all__ = ["BatchService"]

log = logging.getLogger("llm_edge.worker")
_call = msgspec.json.Decoder(OffloadCall)
_encode = msgspec.json.Encoder().encode
#: Batch calls in flight per worker process (each is a few upstream calls at most).
MAX_BATCH_CALLS = 16


class BatchService(QueueService):
    """One provider's Batch API on NATS.

    Args:
        nc: connected NATS client (with JetStream: the files bucket).
        provider: the provider's name.
        batches: its Batch API.
    """

    def __init__(self, nc: Client, provider: str, batches: ProviderBatches) -> None:
        super().__init__(nc, subjects.provider_batch_subject(provider), MAX_BATCH_CALLS)
        self._batches = batches
        self._files: ObjectStore | None = None

    async def _answer(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            answer = await self._run(_call.decode(msg.data))
        except ProviderError as exc:
            answer = OffloadAnswer(
                error=exc.message, status=exc.status, retry_after=exc.retry_after or 0.0
            )
        except msgspec.MsgspecError as exc:
            answer = OffloadAnswer(error=f"invalid batch call: {exc}", status=400)
        except Exception as exc:  # a JetStream failure: the broker asks again
            log.warning("batch call failed", exc_info=True)
            answer = OffloadAnswer(error=f"{type(exc).__name__}: {exc}"[:300], status=503)
        await self._nc.publish(msg.reply, _encode(answer))

    async def _store(self) -> ObjectStore:
        if self._files is None:
            self._files = await self._nc.jetstream().object_store(FILES_BUCKET)
        return self._files

    async def _find(self, call: OffloadCall) -> str:
        """The receipt's batch id, else the provider's (empty: surely none)."""
        try:
            receipt = await (await self._store()).get(receipt_object(call.input))
        except (ObjectNotFoundError, ObjectDeletedError):
            pass
        else:
            if receipt.data:
                return receipt.data.decode()
        found = await self._batches.find(call.input, call.since - CLOCK_SKEW_S)
        return found or ""

    async def _run(self, call: OffloadCall) -> OffloadAnswer:
        batches = self._batches
        if call.op is OffloadOp.SUBMIT:
            files = await self._store()
            found = await files.get(call.input)
            lines = (line for line in io.BytesIO(found.data or b"") if line.strip())
            del found  # (the lines' buffer is the object's data, read once)
            batch_id = await batches.submit(lines, call.upstream_model, call.input, call.not_after)
            await files.put(receipt_object(call.input), batch_id.encode())
            return OffloadAnswer(provider_batch=batch_id, provider_status="submitted")
        if call.op is OffloadOp.FIND:
            return OffloadAnswer(provider_batch=await self._find(call))
        if call.op is OffloadOp.RESULTS:
            out, succeeded = io.BytesIO(), 0  # each result written once, as it is read
            for i, body, error in await batches.results(call.provider_batch):
                out.write(
                    _encode(OffloadResult(i, body is not None, msgspec.Raw(body or b"null"), error))
                )
                out.write(b"\n")
                succeeded += body is not None
            out.seek(0)
            await (await self._store()).put(call.results, out)
            return OffloadAnswer(provider_batch=call.provider_batch, succeeded=succeeded)
        status = await (
            batches.cancel(call.provider_batch)
            if call.op is OffloadOp.CANCEL
            else batches.status(call.provider_batch)
        )
        return OffloadAnswer(
            provider_batch=call.provider_batch,
            ended=status.ended,
            provider_status=status.provider_status,
        )
