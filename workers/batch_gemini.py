"""The Gemini API's batch mode (Google AI Studio): ``POST models/{model}:batchGenerateContent``,
``GET batches/{id}``, ``POST batches/{id}:cancel`` and ``GET batches`` (to find the batch a
submit created: it carries the sub-batch's tag as its ``displayName``).

Each line's chat body is translated to a ``GenerateContentRequest`` by the adapter's own
translation (a line it cannot carry is left out and runs on the normal path). Requests that
take at most ``batch_inline_bytes`` (20 MB, the API's cap) go inline in the create call, each
with ``metadata.key`` ``r<i>``; a larger sub-batch goes up first as a JSONL file through the
Files API's resumable upload (``upload/v1beta/files``; lines ``{"key": "r<i>", "request"}``,
up to 2 GB) and the batch names that file. A batch's results come back inline
(``response.inlinedResponses``) or as a JSONL file (``responsesFile``, read from
``download/v1beta/{file}:download?alt=media``), translated back to chat completions; a line
the provider answered with an ``error`` runs on the normal path, and so does every line of a
batch that failed, expired or was cancelled before it answered.
"""

from __future__ import annotations

import io
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec

from workers.batches import FIND_PAGES, BatchHttp, Result, Status, check_window, undecided
from workers.errors import ErrorKind, ProviderError
from workers.gemini_translate import completion_from_gemini

__all__ = ["FILE_MAX_BYTES", "GEMINI_ENDED", "GeminiBatches"]

#: The Files API's cap on one file: a larger sub-batch is refused (it runs on the normal path).
FILE_MAX_BYTES = 2 * 1024**3
#: The states after which a batch changes no more.
GEMINI_ENDED = frozenset(
    {
        "BATCH_STATE_SUCCEEDED",
        "BATCH_STATE_FAILED",
        "BATCH_STATE_CANCELLED",
        "BATCH_STATE_EXPIRED",
    }
)
_json = msgspec.json.Decoder(dict[str, Any])
_encode = msgspec.json.Encoder().encode
_JSON = {"content-type": "application/json"}


class _Line(msgspec.Struct):
    body: msgspec.Raw


_line = msgspec.json.Decoder(_Line)


def _index(key: object) -> int | None:
    text = str(key or "")
    return int(text[1:]) if text.startswith("r") and text[1:].isdigit() else None


def _batch(operation: dict[str, Any]) -> dict[str, Any]:
    """The ``GenerateContentBatch`` an operation's ``metadata`` holds."""
    found = operation.get("metadata")
    return found if isinstance(found, dict) else {}


def _output(operation: dict[str, Any]) -> dict[str, Any]:
    """A finished batch's output: the operation's ``response``, else the batch's ``output``."""
    for found in (operation.get("response"), _batch(operation).get("output")):
        if isinstance(found, dict) and ("inlinedResponses" in found or "responsesFile" in found):
            return found
    return {}


class GeminiBatches:
    """The batch mode of one Gemini API provider.

    Args:
        http: the adapter's client, key and error mapping (``base_url`` ``.../v1beta``).
        translate: the adapter's chat-to-Gemini translation (chat body) -> request body.
        inline_bytes: the most a batch's requests may take to go inline.
        name: the provider's name (its errors).
    """

    def __init__(
        self, http: BatchHttp, translate: Callable[[bytes], bytes], inline_bytes: int, name: str
    ) -> None:
        self._http = http
        self._translate = translate
        self._inline_bytes = inline_bytes
        self._name = name
        root, _, version = http.base_url.rstrip("/").rpartition("/")
        self._upload_url = f"{root}/upload/{version}/files"
        self._download_root = f"{root}/download/{version}"

    def _requests(self, lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
        for i, raw in enumerate(lines):
            try:
                yield i, self._translate(bytes(_line.decode(raw).body))
            except (ProviderError, msgspec.MsgspecError, ValueError):
                continue  # the normal path answers it with the reason

    async def submit(self, lines: Iterable[bytes], model: str, tag: str, not_after: float) -> str:
        """Create the batch: its requests inline when they fit, else in an uploaded file."""
        requests = list(self._requests(lines))
        size = sum(len(body) + 40 for _, body in requests)
        source = bytearray()  # the requests, each written into it once
        if size <= self._inline_bytes:
            source += b'{"requests":{"requests":['
            for n, (i, body) in enumerate(requests):
                source += b'%s{"request":%s,"metadata":{"key":"r%d"}}' % (b"," * bool(n), body, i)
            source += b"]}}"
        else:
            if size > FILE_MAX_BYTES:
                raise ProviderError(self._name, ErrorKind.BAD_REQUEST, f"{size} bytes a batch")
            data = bytearray()
            for i, body in requests:
                data += b'{"key":"r%d","request":%s}\n' % (i, body)
            del requests
            source += _encode({"fileName": await self._upload(data, tag)})
        model_path = urllib.parse.quote(model.removeprefix("models/"), safe="")
        body = b'{"batch":{"displayName":%s,"inputConfig":%s}}' % (_encode(tag), source)
        check_window(self._name, not_after)
        path = f"/models/{model_path}:batchGenerateContent"
        operation = _json.decode(await self._http.call("POST", path, body, _JSON))
        return str(operation["name"])

    async def _upload(self, data: bytearray, tag: str) -> str:
        """Upload a JSONL file (resumable: start, then one ``upload, finalize``); its name."""
        start = {
            "x-goog-upload-protocol": "resumable",
            "x-goog-upload-command": "start",
            "x-goog-upload-header-content-length": str(len(data)),
            "x-goog-upload-header-content-type": "application/jsonl",
            **_JSON,
        }
        meta = _encode({"file": {"displayName": tag}})
        began = await self._http.exchange("POST", self._upload_url, meta, start)
        url = began.headers.get("x-goog-upload-url")
        if not url:
            raise ProviderError(self._name, ErrorKind.INVALID_RESPONSE, "no upload URL")
        finish = {"x-goog-upload-command": "upload, finalize", "x-goog-upload-offset": "0"}
        done = await self._http.exchange("POST", url, data, finish)
        return str(_json.decode(done.body)["file"]["name"])

    async def status(self, batch_id: str) -> Status:
        """``GET batches/{id}``."""
        operation = _json.decode(await self._http.call("GET", f"/{batch_id}"))
        state = str(_batch(operation).get("state") or "BATCH_STATE_UNSPECIFIED")
        return Status(state in GEMINI_ENDED or bool(operation.get("done")), state)

    async def cancel(self, batch_id: str) -> Status:
        """``POST batches/{id}:cancel`` (it answers nothing), then the batch's state."""
        await self._http.call("POST", f"/{batch_id}:cancel", b"{}", _JSON)
        return await self.status(batch_id)

    async def results(self, batch_id: str) -> Iterator[Result]:
        """Every response the batch holds, inline or in its responses file."""
        operation = _json.decode(await self._http.call("GET", f"/{batch_id}"))
        output = _output(operation)
        model = str(_batch(operation).get("model") or "").removeprefix("models/")
        keyed: Iterable[tuple[object, dict[str, Any]]]
        if "responsesFile" in output:
            url = f"{self._download_root}/{output['responsesFile']}:download?alt=media"
            content = await self._http.call("GET", url)
            rows = (_json.decode(raw) for raw in io.BytesIO(content) if raw.strip())
            keyed = ((row.get("key"), row) for row in rows)
        else:
            inline = (output.get("inlinedResponses") or {}).get("inlinedResponses") or []
            keyed = ((dict(row.get("metadata") or {}).get("key"), row) for row in inline)
        return _results(keyed, model, int(time.time()))

    async def find(self, tag: str, since: float) -> str | None:
        """Page ``GET batches`` for the batch whose ``displayName`` is ``tag`` (the list's
        order is not documented, so every page is read; ``since`` cannot shorten it)."""
        del since
        token = ""
        for _ in range(FIND_PAGES):
            query = "/batches?pageSize=100"
            if token:
                query += f"&pageToken={urllib.parse.quote(token, safe='')}"
            page = _json.decode(await self._http.call("GET", query))
            for operation in page.get("operations") or []:
                if _batch(operation).get("displayName") == tag:
                    return str(operation["name"])
            token = str(page.get("nextPageToken") or "")
            if not token:
                return None
        raise undecided(self._name, f"more than {FIND_PAGES * 100} batches listed")


def _results(
    keyed: Iterable[tuple[object, dict[str, Any]]], model: str, now: int
) -> Iterator[Result]:
    for key, row in keyed:
        i = _index(key)
        if i is not None:
            yield (i, *_result(row, model, now))


def _result(row: dict[str, Any], model: str, now: int) -> tuple[bytes | None, str]:
    """One response as a chat completion, or why there is none."""
    response = row.get("response")
    if not isinstance(response, dict):
        error = row.get("error")
        status = error.get("status") if isinstance(error, dict) else None
        return None, str(status or "failed")
    try:
        return _encode(completion_from_gemini(response, model, now)), ""
    except (KeyError, TypeError, ValueError, AttributeError, msgspec.MsgspecError):
        return None, "invalid_response"
