"""A fake upstream speaking OpenAI's Batch API, Anthropic's Message Batches and the Gemini
API's batch mode (:mod:`tests.support.fake_gemini_batches`), and their synchronous chat
endpoints, for the lines that fall back to the normal path.

OpenAI: ``POST /v1/files`` (multipart, purpose ``batch``), ``POST /v1/batches``,
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``, ``GET /v1/files/{id}/content``,
``GET /v1/batches?limit=&after=`` (newest first, with ``metadata``).
Anthropic: ``POST /v1/messages/batches``, ``GET /v1/messages/batches/{id}``,
``POST /v1/messages/batches/{id}/cancel``, ``GET /v1/messages/batches/{id}/results``,
``GET /v1/messages/batches?limit=&after_id=`` (newest first).

A batch reports in progress for ``polls`` looks at it (status reads, list pages), then ends.
A line whose last message holds ``FAIL`` fails in a batch (a 400 in OpenAI's error file,
``errored`` at Anthropic) but succeeds on the synchronous endpoints. A batch whose id is in
``expire`` (``batch_openai<n>``, ``msgbatch_anthropic<n>``: the n-th created of its kind)
expires: its first half of lines succeed, the rest expire (a Gemini batch in it,
``batches/gemini<n>``, expires whole). With ``refuse_ended_cancel`` set, a cancel of a batch
that has ended is refused (OpenAI 409, Anthropic 409, Gemini 400 ``FAILED_PRECONDITION``): only
a batch in progress can be cancelled. With ``list_status`` set, the list endpoints answer
that error status. ``throttle[kind]`` create calls of that kind (OpenAI's ``POST /batches``,
Anthropic's ``POST /messages/batches``) are answered 429 first, with ``Retry-After:
throttle_retry_after`` when that is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import uvicorn

from tests.support.fake_gemini_batches import GeminiRoutes

__all__ = ["FakeBatch", "FakeBatches", "running_batches"]

ENDED_OPENAI = json.dumps(
    {
        "error": {
            "message": "Cannot cancel a batch with status 'completed'.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
).encode()
ENDED_ANTHROPIC = json.dumps(
    {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "Batch has already ended."},
    }
).encode()
USAGE_OPENAI = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"echo {text}"},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE_OPENAI,
    }


def _message(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": f"echo {text}"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }


def _text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else json.dumps(content)


@dataclass
class FakeBatch:
    """One provider batch the fake holds."""

    id: str
    kind: str  # openai | anthropic | gemini
    number: int
    rows: list[dict[str, Any]]
    polls: int = 0
    cancelled: bool = False
    files: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)


class FakeBatches:
    """The server. ``await start()``; base URL in :attr:`base_url`."""

    def __init__(self, polls: int = 3, expire: frozenset[str] = frozenset()) -> None:
        self.polls = polls
        self.expire = expire
        self.refuse_ended_cancel = False
        self.list_status = 200  # another answers every list call with that error status
        self.throttle: Counter[str] = Counter()  # create calls of a kind to answer 429
        self.throttle_retry_after = ""
        self.throttled: Counter[str] = Counter()
        self.refused_cancels = 0
        self.batches: dict[str, FakeBatch] = {}
        self.files: dict[str, bytes] = {}
        self.sync_calls: Counter[str] = Counter()
        self.status_reads = 0
        self.list_calls: Counter[str] = Counter()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        self._server = uvicorn.Server(
            uvicorn.Config(
                self,
                lifespan="off",
                access_log=False,
                log_level="warning",
                timeout_graceful_shutdown=2,
            )
        )
        self._task: Any = None
        self.gemini = GeminiRoutes(self)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server._serve(sockets=[self._sock]))
        while not self._server.started:  # noqa: ASYNC110  (uvicorn has no started event)
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task

    def created(self, kind: str) -> list[FakeBatch]:
        """The batches of ``kind`` (``openai``, ``anthropic``, ``gemini``) in creation order."""
        return [b for b in self.batches.values() if b.kind == kind]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        hdrs = {k.decode(): v.decode() for k, v in scope["headers"]}
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        extra: dict[str, str] = {}
        gemini = self.gemini.route(scope["method"], scope["path"], query, raw, hdrs)
        if gemini is not None:
            status, body, ctype, extra = gemini
        elif (kind := self._creates(scope["method"], scope["path"])) and self.throttle[kind]:
            self.throttle[kind] -= 1
            self.throttled[kind] += 1
            status, body, ctype = (
                429,
                b'{"error": {"message": "rate limited"}}',
                b"application/json",
            )
            if self.throttle_retry_after:
                extra = {"retry-after": self.throttle_retry_after}
        elif scope["method"] == "GET" and scope["path"] in {"/v1/batches", "/v1/messages/batches"}:
            status, body, ctype = 200, self._list(scope["path"], query), b"application/json"
            if self.list_status != 200:
                status, body = self.list_status, b'{"error": {"message": "list refused"}}'
        else:
            status, body, ctype = self._route(scope["method"], scope["path"], raw, hdrs)
        headers = [(b"content-type", ctype), *((k.encode(), v.encode()) for k, v in extra.items())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _creates(method: str, path: str) -> str:
        """The kind of batch a call creates (``""``: it creates none)."""
        if method != "POST":
            return ""
        return {"/v1/batches": "openai", "/v1/messages/batches": "anthropic"}.get(path, "")

    def _route(  # noqa: PLR0911  (one answer per endpoint of two APIs)
        self, method: str, path: str, raw: bytes, hdrs: dict[str, str]
    ) -> tuple[int, bytes, bytes]:
        parts = path.strip("/").split("/")[1:]  # without "v1"
        js = b"application/json"
        if parts == ["chat", "completions"]:
            body = json.loads(raw)
            self.sync_calls["openai"] += 1
            return 200, json.dumps(_completion(body["model"], _text(body))).encode(), js
        if parts == ["messages"]:
            body = json.loads(raw)
            self.sync_calls["anthropic"] += 1
            return 200, json.dumps(_message(body["model"], _text(body))).encode(), js
        if parts == ["files"] and method == "POST":
            return 200, json.dumps(self._upload(raw, hdrs["content-type"])).encode(), js
        if len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
            return 200, self.files[parts[1]], b"application/jsonl"
        if parts == ["batches"] and method == "POST":
            body = json.loads(raw)
            rows = [json.loads(line) for line in self.files[body["input_file_id"]].splitlines()]
            batch = self.new("openai", rows)
            batch.metadata = body.get("metadata") or {}
            return 200, json.dumps(self._openai(batch)).encode(), js
        if parts[:1] == ["batches"]:
            batch = self.batches[parts[1]]
            if parts[2:] == ["cancel"] and self.cancel_refused(batch):
                return 409, ENDED_OPENAI, js
            self._read(batch, cancel=parts[2:] == ["cancel"])
            return 200, json.dumps(self._openai(batch)).encode(), js
        if parts == ["messages", "batches"] and method == "POST":
            batch = self.new("anthropic", json.loads(raw)["requests"])
            return 200, json.dumps(self._anthropic(batch)).encode(), js
        if parts[:2] == ["messages", "batches"] and parts[3:] == ["results"]:
            return 200, self._anthropic_results(self.batches[parts[2]]), b"application/x-jsonl"
        if parts[:2] == ["messages", "batches"]:
            batch = self.batches[parts[2]]
            if parts[3:] == ["cancel"] and self.cancel_refused(batch):
                return 409, ENDED_ANTHROPIC, js
            self._read(batch, cancel=parts[3:] == ["cancel"])
            return 200, json.dumps(self._anthropic(batch)).encode(), js
        return 404, b'{"error": {"message": "not found"}}', js

    def _list(self, path: str, query: dict[str, str]) -> bytes:
        """One page of a list endpoint, newest first, after the cursor."""
        kind = "openai" if path == "/v1/batches" else "anthropic"
        self.list_calls[kind] += 1
        newest = list(reversed(self.created(kind)))
        cursor = query.get("after" if kind == "openai" else "after_id")
        if cursor:
            newest = newest[[b.id for b in newest].index(cursor) + 1 :]
        limit = int(query.get("limit", "20"))
        page = newest[:limit]
        for batch in page:  # a batch's time passes with each look at it, a list's too
            batch.polls += 1
        show = self._openai_listed if kind == "openai" else self._anthropic
        return json.dumps(
            {
                "object": "list",
                "data": [show(b) for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(newest) > limit,
            }
        ).encode()

    def _openai_listed(self, batch: FakeBatch) -> dict[str, Any]:
        """A batch as the list shows it (a list read is no status read: it ends nothing)."""
        status = "completed" if self._ended(batch) else "in_progress"
        return {**self._openai_object(batch, status), "metadata": batch.metadata}

    def _upload(self, raw: bytes, content_type: str) -> dict[str, Any]:
        boundary = content_type.split("boundary=", 1)[1].encode()
        fields = {}
        for part in raw.split(b"--" + boundary)[1:-1]:
            head, _, data = part.partition(b"\r\n\r\n")
            name = head.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
            fields[name] = data[: -len(b"\r\n")]
        assert fields["purpose"] == b"batch"
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = fields["file"]
        return {"id": file_id, "object": "file", "bytes": len(fields["file"]), "purpose": "batch"}

    def new(self, kind: str, rows: list[dict[str, Any]]) -> FakeBatch:
        """A new batch: ``batch_openai<n>``, ``msgbatch_anthropic<n>``, ``batches/gemini<n>``."""
        number = len(self.created(kind)) + 1
        prefix = {"openai": "batch_", "anthropic": "msgbatch_", "gemini": "batches/"}[kind]
        batch = FakeBatch(f"{prefix}{kind}{number}", kind, number, rows)
        self.batches[batch.id] = batch
        return batch

    def _read(self, batch: FakeBatch, *, cancel: bool) -> None:
        self.status_reads += 1
        batch.polls += 1
        batch.cancelled = batch.cancelled or cancel

    def cancel_refused(self, batch: FakeBatch) -> bool:
        """Whether a cancel of ``batch`` is refused (it ended, and ended ones are refused)."""
        refused = self.refuse_ended_cancel and self._ended(batch)
        self.refused_cancels += refused
        return refused

    def _ended(self, batch: FakeBatch) -> bool:
        return batch.cancelled or batch.polls > self.polls

    def _outcome(self, batch: FakeBatch, i: int, body: dict[str, Any]) -> str:
        if batch.cancelled:
            return "canceled"
        if batch.id in self.expire and i >= len(batch.rows) // 2:
            return "expired"
        return "errored" if "FAIL" in _text(body) else "succeeded"

    def _openai(self, batch: FakeBatch) -> dict[str, Any]:
        ended = self._ended(batch)
        status = "in_progress"
        if ended:
            status = "cancelled" if batch.cancelled else "completed"
            if batch.id in self.expire:
                status = "expired"
            self._openai_files(batch)
        return self._openai_object(batch, status)

    def _openai_object(self, batch: FakeBatch, status: str) -> dict[str, Any]:
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": "file-x",
            "completion_window": "24h",
            "status": status,
            "created_at": int(batch.created_at),
            "metadata": batch.metadata,
            "output_file_id": batch.files.get("output"),
            "error_file_id": batch.files.get("error"),
            "request_counts": {"total": len(batch.rows), "completed": 0, "failed": 0},
        }

    def _openai_files(self, batch: FakeBatch) -> None:
        if batch.files:
            return
        out, err = [], []
        for i, row in enumerate(batch.rows):
            outcome = self._outcome(batch, i, row["body"])
            base = {"id": f"batch_req_{i}", "custom_id": row["custom_id"]}
            if outcome == "succeeded":
                answer = _completion(row["body"]["model"], _text(row["body"]))
                response = {"status_code": 200, "request_id": f"req_{i}", "body": answer}
                out.append({**base, "response": response, "error": None})
            elif outcome == "errored":
                failed = {"error": {"message": "bad line", "type": "invalid_request_error"}}
                response = {"status_code": 400, "request_id": f"req_{i}", "body": failed}
                err.append({**base, "response": response, "error": None})
            elif outcome == "expired":
                error = {"code": "batch_expired", "message": "expired"}
                err.append({**base, "response": None, "error": error})
        for name, rows in (("output", out), ("error", err)):
            if rows:
                file_id = f"file-{batch.id}-{name}"
                self.files[file_id] = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
                batch.files[name] = file_id

    def _anthropic(self, batch: FakeBatch) -> dict[str, Any]:
        ended = self._ended(batch)
        status = "ended" if ended else ("canceling" if batch.cancelled else "in_progress")
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": {
                "processing": 0 if ended else len(batch.rows),
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": datetime.fromtimestamp(batch.created_at, UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            "expires_at": "2024-01-02T00:00:00Z",
            "ended_at": "2024-01-01T01:00:00Z" if ended else None,
            "cancel_initiated_at": None,
            "archived_at": None,
            "results_url": f"{self.base_url}/messages/batches/{batch.id}/results"
            if ended
            else None,
        }

    def _anthropic_results(self, batch: FakeBatch) -> bytes:
        lines = []
        for i, row in enumerate(batch.rows):
            outcome = self._outcome(batch, i, row["params"])
            result: dict[str, Any] = {"type": outcome}
            if outcome == "succeeded":
                result["message"] = _message(row["params"]["model"], _text(row["params"]))
            elif outcome == "errored":
                result["error"] = {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "bad line"},
                }
            lines.append(json.dumps({"custom_id": row["custom_id"], "result": result}).encode())
        return b"\n".join(lines) + b"\n"


@contextlib.asynccontextmanager
async def running_batches(
    polls: int = 3, expire: frozenset[str] = frozenset()
) -> AsyncIterator[FakeBatches]:
    """A fake Batch API upstream, started and always stopped."""
    server = FakeBatches(polls, expire)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
