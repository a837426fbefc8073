"""OpenAI's Batch API: ``POST /files`` (purpose ``batch``), ``POST /batches``,
``GET /batches/{id}``, ``POST /batches/{id}/cancel``, ``GET /files/{id}/content``, and
``GET /batches`` (newest first) to find the batch a submit created: it carries the
sub-batch's tag as ``metadata.llm_edge_sub_batch``.

Line ``i`` of a sub-batch goes up as ``custom_id`` ``r<i>`` (ours may be any string; the
broker maps them back), its body with the provider's model name. Output lines whose
``response.status_code`` is 200 are results; error-file lines (failed or ``batch_expired``)
and lines missing from both files are not: they run on the normal path.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from workers.batches import FIND_PAGES, BatchHttp, Result, Status, check_window, undecided

__all__ = ["OPENAI_ENDED", "TAG_KEY", "OpenAIBatches"]

#: The batch metadata key holding our sub-batch's tag.
TAG_KEY = "llm_edge_sub_batch"

#: The statuses after which a batch changes no more.
OPENAI_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
_json = msgspec.json.Decoder(dict[str, Any])
_encode = msgspec.json.Encoder().encode


class _Line(msgspec.Struct):
    body: dict[str, msgspec.Raw]


class _Response(msgspec.Struct):
    status_code: int
    body: msgspec.Raw


class _Output(msgspec.Struct):
    custom_id: str
    response: _Response | None = None


_line = msgspec.json.Decoder(_Line)
_output = msgspec.json.Decoder(_Output)


def _index(custom_id: str) -> int | None:
    if custom_id.startswith("r") and custom_id[1:].isdigit():
        return int(custom_id[1:])
    return None


def _error_code(raw: bytes, response: _Response | None) -> str:
    """``batch_expired``, the error's code, or the status a failed line got."""
    error = _json.decode(raw).get("error")
    if isinstance(error, dict) and error.get("code"):
        return str(error["code"])
    return f"status_{response.status_code}" if response is not None else "failed"


def _read(content: bytes) -> Iterator[Result]:
    """The results of an output or error file, line by line."""
    for raw in io.BytesIO(content):
        if not raw.strip():
            continue
        line = _output.decode(raw)
        i = _index(line.custom_id)
        if i is None:
            continue
        response = line.response
        if response is not None and response.status_code == 200:
            yield i, bytes(response.body), ""
        else:
            yield i, None, _error_code(raw, response)


class OpenAIBatches:
    """The Batch API of one OpenAI provider (its adapter's client, key and error mapping)."""

    def __init__(self, http: BatchHttp) -> None:
        self._http = http

    async def submit(self, lines: Iterable[bytes], model: str, tag: str, not_after: float) -> str:
        """Upload the lines as a ``batch`` file, then create the batch on it (24h)."""
        boundary = uuid.uuid4().hex
        form = bytearray()  # the upload's body, each row written into it once
        form += f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'.encode()
        form += b"batch\r\n"
        form += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '.encode()
        form += f'filename="{tag}.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n'.encode()
        name = _encode(model)
        for i, raw in enumerate(lines):
            body = dict(_line.decode(raw).body)
            body["model"] = msgspec.Raw(name)
            body.pop("stream", None)
            body.pop("stream_options", None)
            row = {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": body,
            }
            form += _encode(row)
            form += b"\n"
        form += f"\r\n--{boundary}--\r\n".encode()
        content_type = {"content-type": f"multipart/form-data; boundary={boundary}"}
        uploaded = _json.decode(await self._http.call("POST", "/files", form, content_type))
        check_window("openai", not_after)
        create = {
            "input_file_id": uploaded["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {TAG_KEY: tag},
        }
        batch = _json.decode(await self._http.call("POST", "/batches", _encode(create)))
        return str(batch["id"])

    async def status(self, batch_id: str) -> Status:
        """``GET /batches/{id}``."""
        batch = _json.decode(await self._http.call("GET", f"/batches/{batch_id}"))
        return Status(batch["status"] in OPENAI_ENDED, str(batch["status"]))

    async def cancel(self, batch_id: str) -> Status:
        """``POST /batches/{id}/cancel`` (the batch goes ``cancelling``, then ``cancelled``)."""
        batch = _json.decode(await self._http.call("POST", f"/batches/{batch_id}/cancel"))
        return Status(batch["status"] in OPENAI_ENDED, str(batch["status"]))

    async def results(self, batch_id: str) -> Iterator[Result]:
        """The output file's lines that succeeded, and the error file's lines as failures."""
        batch = _json.decode(await self._http.call("GET", f"/batches/{batch_id}"))
        files = [await self._file(batch.get(key)) for key in ("output_file_id", "error_file_id")]
        return (found for content in files for found in _read(content))

    async def _file(self, file_id: object) -> bytes:
        return await self._http.call("GET", f"/files/{file_id}/content") if file_id else b""

    async def find(self, tag: str, since: float) -> str | None:
        """Page ``GET /batches`` (newest first) back to ``since`` for the batch tagged ``tag``."""
        after = ""
        for _ in range(FIND_PAGES):
            query = f"/batches?limit=100&after={after}" if after else "/batches?limit=100"
            page = _json.decode(await self._http.call("GET", query))
            batches = page.get("data") or []
            for batch in batches:
                if (batch.get("metadata") or {}).get(TAG_KEY) == tag:
                    return str(batch["id"])
                if float(batch.get("created_at") or 0) < since:
                    return None  # older than the submit: so is every later page
            if not page.get("has_more") or not batches:
                return None
            after = str(batches[-1]["id"])
        raise undecided("openai", f"more than {FIND_PAGES * 100} batches since the submit")
