"""The Gemini API's batch mode for :class:`~tests.support.fake_provider_batches.FakeBatches`
(under ``/v1beta``, ``/upload/v1beta`` and ``/download/v1beta``), as its REST reference
shapes it: ``POST /v1beta/models/{m}:batchGenerateContent`` (inline ``requests`` or a
``fileName``) answering an operation (``name``, ``metadata``: the batch, ``done``,
``response``: its output), ``GET /v1beta/batches/{id}``, ``POST /v1beta/batches/{id}:cancel``
(an empty object), ``GET /v1beta/batches?pageSize=&pageToken=`` (``operations``,
``nextPageToken``), the Files API's resumable upload (``start``, then ``upload, finalize`` on
the ``x-goog-upload-url`` it gave) and ``GET /download/v1beta/files/{id}:download?alt=media``;
``POST /v1beta/models/{m}:generateContent`` for the lines that fall back to the normal path.

A batch is ``BATCH_STATE_PENDING`` at its first look, ``BATCH_STATE_RUNNING`` until it has
been looked at ``polls`` times, then ``SUCCEEDED`` (``EXPIRED`` when its id is in ``expire``:
no line answered; ``CANCELLED`` once cancelled). A request whose last turn holds ``FAIL``
gets an ``error`` in the batch (and succeeds on ``generateContent``). Every call must carry
the key in ``x-goog-api-key``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.fake_provider_batches import FakeBatch, FakeBatches

__all__ = ["GEMINI_KEY", "GeminiRoutes", "gemini_response"]

GEMINI_KEY = "AIza-batch-test"
_JS = b"application/json"
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta."
#: (status, body, content type, extra headers)
Answer = tuple[int, bytes, bytes, dict[str, str]]


def gemini_response(text: str) -> dict[str, Any]:
    """A ``GenerateContentResponse`` echoing ``text`` (10 prompt, 5 candidate tokens)."""
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": f"echo {text}"}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
        "modelVersion": "gemini-x",
    }


def _text(request: dict[str, Any]) -> str:
    return " ".join(p.get("text", "") for p in request["contents"][-1]["parts"])


@dataclass
class _Upload:
    length: int
    data: bytes = b""
    done: bool = False


class GeminiRoutes:
    """The Gemini API's routes of one fake server (its batches are of kind ``gemini``)."""

    def __init__(self, server: FakeBatches) -> None:
        self._server = server
        self.uploads: dict[str, _Upload] = {}
        self.inline: dict[str, bool] = {}  # batch id -> whether its requests came inline
        self.refused: list[str] = []

    @property
    def _root(self) -> str:
        return self._server.base_url.removesuffix("/v1")

    def route(
        self, method: str, path: str, query: dict[str, str], raw: bytes, hdrs: dict[str, str]
    ) -> Answer | None:
        """The answer to a Gemini call, or ``None`` when ``path`` is not one."""
        if not path.startswith(("/v1beta/", "/upload/v1beta/", "/download/v1beta/")):
            return None
        if hdrs.get("x-goog-api-key") != GEMINI_KEY:
            self.refused.append(path)
            error = {"error": {"code": 401, "message": "no key", "status": "UNAUTHENTICATED"}}
            return 401, json.dumps(error).encode(), _JS, {}
        if path.startswith("/upload/"):
            return self._upload(query, raw, hdrs)
        if path.startswith("/download/"):
            name = path.removeprefix("/download/v1beta/").removesuffix(":download")
            assert query.get("alt") == "media"
            return 200, self._server.files[name], b"application/jsonl", {}
        return self._api(method, path.removeprefix("/v1beta/"), query, raw)

    def _api(self, method: str, path: str, query: dict[str, str], raw: bytes) -> Answer:
        if path.startswith("models/") and path.endswith(":generateContent"):
            self._server.sync_calls["gemini"] += 1
            answer = gemini_response(_text(json.loads(raw)))
            return 200, json.dumps(answer).encode(), _JS, {}
        if path.startswith("models/") and path.endswith(":batchGenerateContent"):
            model = path.removesuffix(":batchGenerateContent")
            return 200, json.dumps(self._create(model, json.loads(raw)["batch"])).encode(), _JS, {}
        if path == "batches" and method == "GET":
            return 200, json.dumps(self._list(query)).encode(), _JS, {}
        name, _, verb = path.partition(":")
        batch = self._batch(name)
        if verb == "cancel" and self._server.cancel_refused(batch):
            error = {"code": 400, "message": "batch ended", "status": "FAILED_PRECONDITION"}
            return 400, json.dumps({"error": error}).encode(), _JS, {}
        batch.polls += 1
        if verb == "cancel":
            batch.cancelled = True
            return 200, b"{}", _JS, {}
        return 200, json.dumps(self._operation(batch)).encode(), _JS, {}

    def _batch(self, name: str) -> FakeBatch:
        return self._server.batches[name]

    def _upload(self, query: dict[str, str], raw: bytes, hdrs: dict[str, str]) -> Answer:
        command = hdrs.get("x-goog-upload-command", "")
        if command == "start":
            assert hdrs["x-goog-upload-protocol"] == "resumable"
            upload_id = f"u{len(self.uploads) + 1}"
            length = int(hdrs["x-goog-upload-header-content-length"])
            self.uploads[upload_id] = _Upload(length)
            url = f"{self._root}/upload/v1beta/files?upload_id={upload_id}"
            headers = {"x-goog-upload-url": url, "x-goog-upload-status": "active"}
            return 200, b"", b"text/plain", headers
        upload = self.uploads[query["upload_id"]]
        assert command == "upload, finalize"
        assert hdrs["x-goog-upload-offset"] == "0"
        assert len(raw) == upload.length, "the declared length"
        name = f"files/{query['upload_id']}"
        self._server.files[name] = raw
        upload.done = True
        file = {"name": name, "mimeType": "application/jsonl", "sizeBytes": str(len(raw))}
        return 200, json.dumps({"file": file}).encode(), _JS, {"x-goog-upload-status": "final"}

    def _create(self, model: str, batch: dict[str, Any]) -> dict[str, Any]:
        source = batch["inputConfig"]
        if "fileName" in source:
            lines = self._server.files[source["fileName"]].splitlines()
            rows = [json.loads(line) for line in lines]
        else:
            rows = [
                {"key": r["metadata"]["key"], "request": r["request"]}
                for r in source["requests"]["requests"]
            ]
        created = self._server.new("gemini", rows)
        created.metadata = {"displayName": batch["displayName"], "model": model}
        self.inline[created.id] = "fileName" not in source
        return self._operation(created)

    def _state(self, batch: FakeBatch) -> str:
        if batch.cancelled:
            return "BATCH_STATE_CANCELLED"
        if batch.polls <= 1:
            return "BATCH_STATE_PENDING"
        if batch.polls <= self._server.polls:
            return "BATCH_STATE_RUNNING"
        return "BATCH_STATE_EXPIRED" if batch.id in self._server.expire else "BATCH_STATE_SUCCEEDED"

    def _operation(self, batch: FakeBatch) -> dict[str, Any]:
        state = self._state(batch)
        created = datetime.fromtimestamp(batch.created_at, UTC).isoformat()
        meta: dict[str, Any] = {
            "@type": f"{_TYPE}GenerateContentBatch",
            "name": batch.id,
            "model": batch.metadata["model"],
            "displayName": batch.metadata["displayName"],
            "createTime": created.replace("+00:00", "Z"),
            "state": state,
        }
        operation: dict[str, Any] = {"name": batch.id, "metadata": meta}
        if state in {"BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"}:
            return operation
        operation["done"] = True
        if state == "BATCH_STATE_SUCCEEDED":
            output = self._output(batch)
            meta["output"] = output
            operation["response"] = {"@type": f"{_TYPE}GenerateContentBatchOutput", **output}
        return operation

    def _output(self, batch: FakeBatch) -> dict[str, Any]:
        answers = []
        for row in batch.rows:
            text = _text(row["request"])
            if "FAIL" in text:
                answer: dict[str, Any] = {
                    "error": {"code": 400, "message": "bad line", "status": "INVALID_ARGUMENT"}
                }
            else:
                answer = {"response": gemini_response(text)}
            answers.append((row["key"], answer))
        if self.inline[batch.id]:
            inline = [{"metadata": {"key": key}, **answer} for key, answer in answers]
            return {"inlinedResponses": {"inlinedResponses": inline}}
        name = batch.files.setdefault("responses", f"files/{batch.id.split('/')[-1]}-responses")
        self._server.files[name] = b"".join(
            json.dumps({"key": key, **answer}).encode() + b"\n" for key, answer in answers
        )
        return {"responsesFile": name}

    def _list(self, query: dict[str, str]) -> dict[str, Any]:
        self._server.list_calls["gemini"] += 1
        newest = list(reversed(self._server.created("gemini")))
        start = int(query.get("pageToken") or 0)
        size = int(query.get("pageSize", "50"))
        page = newest[start : start + size]
        for batch in page:  # a batch's time passes with each look at it, a list's too
            batch.polls += 1
        listed: dict[str, Any] = {"operations": [self._operation(b) for b in page]}
        if start + size < len(newest):
            listed["nextPageToken"] = str(start + size)
        return listed
