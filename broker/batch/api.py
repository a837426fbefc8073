"""The Batch API on NATS (the HTTP bridge forwards ``/v1/batches`` here).

| subject             | body                                                            |
|---------------------|-----------------------------------------------------------------|
| ``llm.batch.create``| ``{input_file_id, endpoint, completion_window, metadata}``       |
| ``llm.batch.submit``| the same, or ``lines: [...]`` inline instead of a file            |
| ``llm.batch.get``   | ``{id}``                                                         |
| ``llm.batch.list``  | ``{limit, after}``                                               |
| ``llm.batch.cancel``| ``{id}``                                                         |
| ``llm.batch.whoami``| (empty): ``{tenant}``, the tenant the request's key belongs to   |
| ``llm.batch.file.get``     | ``{id}``: the file object (:mod:`broker.batch.files`)     |
| ``llm.batch.file.content`` | ``{id, offset, length}``: a piece of the file's bytes     |

Every request carries the caller's key (``Authorization`` header) when keys are configured,
as on ``llm.chat``. A batch and its files belong to the tenant that created them: other
tenants neither see nor touch them, and the batch's lines run as that tenant (its limits,
budget, PII mode and cache namespace). Replies carry ``Llm-Status``; failures are OpenAI
error envelopes. Progress goes to ``llm.batch.events.<tenant>.<batch_id>``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.nuid import NUID

from broker.batch.errors import ApiError
from broker.batch.files import FileApi, RawReply
from broker.batch.lifecycle import Lifecycle
from broker.errors import BrokerError
from broker.tenancy.tenants import ANONYMOUS, Caller, KeyRing, TenantConfig
from edge_runtime.batch_store import BatchStore
from edge_runtime.jetstream import JETSTREAM_UNAVAILABLE, UNAVAILABLE_RETRY_AFTER_S
from edge_runtime.process import STOP_STEP_S, InFlight, settle
from schemas import error_body, headers, subjects
from schemas.batch import (
    FINAL_STATUSES,
    MAX_FILE_BYTES,
    BatchObject,
    BatchRecord,
    BatchStatus,
    FileObject,
    parse_window,
)
from schemas.codec import decode_json

__all__ = ["ENDPOINTS", "ApiError", "BatchApi"]

#: Endpoints a batch may target.
ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/embeddings"})
_encoder = msgspec.json.Encoder()
_json = msgspec.json.Decoder(dict[str, Any])
log = logging.getLogger("llm_edge.batch")


_UNAVAILABLE = "the batch store (JetStream) is unavailable; retry after Retry-After seconds"


#: ``limit`` of a batch list: OpenAI's default and bounds.
DEFAULT_LIMIT, MAX_LIMIT = 20, 100


def _limit(raw: object) -> int:
    """A list's ``limit`` (a string from the HTTP query, a number over NATS), clamped."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    refusal = ApiError(
        400, "invalid_value", f"limit must be an integer from 1 to {MAX_LIMIT}", "limit"
    )
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise refusal
    try:
        value = int(raw)
    except ValueError:
        raise refusal from None
    return max(1, min(value, MAX_LIMIT))


def _may_create(caller: Caller) -> None:
    """Refuse a batch from a key with its own model list or limits: the batch's lines run
    as its tenant, so the key's narrower governance would not hold for them."""
    if caller.grant is not None:
        raise ApiError(
            403,
            "key_not_allowed",
            "a key with its own model list or limits cannot create batches; use a key without them",
        )


class BatchApi:
    """Serves the batch subjects.

    Args:
        nc: NATS connection.
        store: batch resources.
        lifecycle: starts validation right away.
        keys: who the callers are (``None``: everyone is the default tenant).
        clock: wall-clock seconds.
    """

    def __init__(
        self,
        nc: Client,
        store: BatchStore,
        lifecycle: Lifecycle,
        keys: KeyRing | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._keys = keys
        self._store = store
        self._lifecycle = lifecycle
        self._clock = clock
        self._nuid = NUID()
        self._inflight = InFlight(256)
        self._subs: list[Subscription] = []
        files = FileApi(store, lambda: nc.max_payload)
        self._routes: dict[str, Callable[[dict[str, Any], str], Any]] = {
            "create": self.create,
            "submit": self.submit,
            "get": self.get,
            "list": self.list,
            "cancel": self.cancel,
            "whoami": self.whoami,
            "file.get": files.get,
            "file.content": files.content,
        }

    async def start(self) -> None:
        """Subscribe every operation in the brokers' queue group."""
        for op in self._routes:
            self._subs.append(
                await self._nc.subscribe(
                    f"{subjects.BATCH_PREFIX}.{op}", queue=subjects.BROKER_QUEUE, cb=self._on_msg
                )
            )

    async def stop(self) -> None:
        """Unsubscribe and finish requests in flight (on a connection the server closed too:
        stopping must never raise)."""
        for sub in self._subs:
            await settle(sub.unsubscribe(), STOP_STEP_S)
        await self._inflight.drain(5)

    async def _on_msg(self, msg: Msg) -> None:
        await self._inflight.spawn(self._serve(msg))

    async def _serve(self, msg: Msg) -> None:
        if not msg.reply:
            return
        op = msg.subject.removeprefix(f"{subjects.BATCH_PREFIX}.")
        reply_headers: dict[str, str] = {}
        try:
            caller = await self._caller(msg.headers or {})
            tenant = caller.tenant
            if op in {"create", "submit"}:
                _may_create(caller)
            body = decode_json(_json, msg.data) if msg.data else {}
            if op in {"create", "submit"} and headers.PRIORITY in (msg.headers or {}):
                body["priority"] = tenant.priority((msg.headers or {})[headers.PRIORITY])
            status, result = 200, await self._routes[op](body, tenant.name)
            if isinstance(result, RawReply):
                data = result.data
                reply_headers.update(result.headers)
            else:
                data = _encoder.encode(result)
        except BrokerError as exc:  # 401 from the key check
            status, data = exc.status, exc.envelope()
        except ApiError as exc:
            status, data = exc.status, error_body(exc.status, exc.code, exc.message, exc.param)
        except (msgspec.MsgspecError, TypeError, ValueError) as exc:
            status, data = 400, error_body(400, "invalid_request", str(exc))
        except JETSTREAM_UNAVAILABLE as exc:  # a server lost, quorum regained soon
            log.warning("llm.batch.%s: JetStream unavailable (%r); answered 503", op, exc)
            status, data = 503, error_body(503, "jetstream_unavailable", _UNAVAILABLE)
            reply_headers[headers.RETRY_AFTER] = str(UNAVAILABLE_RETRY_AFTER_S)
        except Exception:  # a bug: still one answer, never the caller's timeout
            log.exception("llm.batch.%s failed", op)
            status, data = 500, error_body(500, "internal_error", "the batch request failed")
        reply_headers[headers.STATUS] = str(status)
        await self._nc.publish(msg.reply, data, headers=reply_headers)

    async def _caller(self, hdrs: dict[str, str]) -> Caller:
        """The caller, from its key or token; 401 when keys are required and it has none."""
        if self._keys is None:
            return Caller(ANONYMOUS)
        return await self._keys.identify_fetching(hdrs.get(headers.AUTHORIZATION))

    def _tenant_named(self, name: str) -> TenantConfig:
        return ANONYMOUS if self._keys is None else self._keys.named(name)

    async def whoami(self, body: dict[str, Any], tenant: str) -> dict[str, str]:
        """The caller's tenant (the bridge asks before it touches files)."""
        return {"tenant": tenant}

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{self._nuid.next().decode()}"

    async def create(self, body: dict[str, Any], tenant: str) -> BatchObject:
        """Create a batch from an uploaded file; validation starts at once."""
        endpoint = str(body.get("endpoint", ""))
        if endpoint not in ENDPOINTS:
            raise ApiError(
                400, "invalid_value", f"endpoint must be one of {sorted(ENDPOINTS)}", "endpoint"
            )
        window = str(body.get("completion_window", "24h"))
        try:
            seconds = parse_window(window)
        except ValueError as exc:
            raise ApiError(400, "invalid_value", str(exc), "completion_window") from None
        file_id = str(body.get("input_file_id", ""))
        if await self._store.get_file(file_id, owner=tenant) is None:
            raise ApiError(404, "file_not_found", f"no file {file_id!r}", "input_file_id")
        now = int(self._clock())
        metadata = body.get("metadata")
        batch = BatchObject(
            id=self._new_id("batch"),
            endpoint=endpoint,
            input_file_id=file_id,
            completion_window=window,
            status=BatchStatus.VALIDATING,
            created_at=now,
            expires_at=now + seconds,
            metadata={str(k): str(v) for k, v in metadata.items()} if metadata else None,
        )
        priority = self._tenant_named(tenant).priority(body.get("priority"))
        await self._store.create(BatchRecord(batch=batch, tenant=tenant, priority=priority))
        self._lifecycle.spawn(self._lifecycle.validate(batch.id))
        return batch

    async def submit(self, body: dict[str, Any], tenant: str) -> BatchObject:
        """Like create; ``lines`` (inline request lines) stand in for a file."""
        lines = body.pop("lines", None)
        if lines is not None:
            if not isinstance(lines, list) or not lines:
                raise ApiError(400, "invalid_value", "lines must be a non-empty list", "lines")
            data = b"\n".join(_encoder.encode(line) for line in lines) + b"\n"
            if len(data) > MAX_FILE_BYTES:
                raise ApiError(413, "request_too_large", "inline lines are too large")
            file = FileObject(
                id=self._new_id("file"),
                bytes=len(data),
                created_at=int(self._clock()),
                filename="inline.jsonl",
                purpose="batch",
            )
            await self._store.put_file(file, data, owner=tenant)
            body["input_file_id"] = file.id
        return await self.create(body, tenant)

    async def _record(self, body: dict[str, Any], tenant: str) -> BatchRecord:
        batch_id = str(body.get("id", ""))
        record = await self._store.get(batch_id)
        if record is None or record.tenant != tenant:  # another tenant's batch is not there
            raise ApiError(404, "batch_not_found", f"no batch {batch_id!r}", "id")
        return record

    async def get(self, body: dict[str, Any], tenant: str) -> BatchObject:
        """One batch."""
        return (await self._record(body, tenant)).batch

    async def list(self, body: dict[str, Any], tenant: str) -> dict[str, Any]:
        """The tenant's batches, newest first, paged by ``after`` (an id) and ``limit``."""
        limit = _limit(body.get("limit"))
        batches = [
            r.batch
            for i in await self._store.all_ids()
            if (r := await self._store.get(i)) is not None and r.tenant == tenant
        ]
        batches.sort(key=lambda b: (b.created_at, b.id), reverse=True)
        after = body.get("after")
        if after:
            ids = [b.id for b in batches]
            batches = batches[ids.index(after) + 1 :] if after in ids else []
        page = batches[:limit]
        return {
            "object": "list",
            "data": page,
            "has_more": len(batches) > limit,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }

    async def cancel(self, body: dict[str, Any], tenant: str) -> BatchObject:
        """Stop queueing lines now; lines in flight finish; the batch ends ``cancelled``."""
        record = await self._record(body, tenant)
        now = int(self._clock())

        def cancel(record: BatchRecord) -> BatchRecord | None:
            if record.batch.status in FINAL_STATUSES or record.batch.cancelling_at is not None:
                return None
            record.batch.status = BatchStatus.CANCELLING
            record.batch.cancelling_at = now
            return record

        updated = await self._store.update(record.batch.id, cancel)
        if updated is None:
            raise ApiError(404, "batch_not_found", f"no batch {record.batch.id!r}", "id")
        if updated.batch.status in FINAL_STATUSES:
            raise ApiError(
                409,
                "invalid_state",
                f"batch is {updated.batch.status.value}; it cannot be cancelled",
            )
        await self._store.purge_lines(record.batch.id)
        await self._lifecycle.publish_event(updated)
        return updated.batch
