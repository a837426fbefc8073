"""Anthropic's Message Batches: ``POST /messages/batches``, ``GET /messages/batches/{id}``,
``POST /messages/batches/{id}/cancel`` and the JSONL at the batch's ``results_url``.

Line ``i`` goes up as ``custom_id`` ``r<i>`` (Anthropic takes ``[a-zA-Z0-9_-]{1,64}`` only),
its chat body translated to a Messages request by the adapter's own translation; a line it
cannot carry is left out and runs on the normal path (which answers it with that 400).
``succeeded`` results come back as OpenAI chat completions; ``errored``, ``canceled`` and
``expired`` ones run on the normal path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from workers.anthropic_translate import completion_from_anthropic
from workers.batches import BatchHttp, Status
from workers.errors import ProviderError

__all__ = ["AnthropicBatches"]

_json = msgspec.json.Decoder(dict[str, Any])
_encode = msgspec.json.Encoder().encode


class _Line(msgspec.Struct):
    body: msgspec.Raw


_line = msgspec.json.Decoder(_Line)


class AnthropicBatches:
    """The Message Batches API of one Anthropic provider.

    Args:
        http: the adapter's client, key and error mapping.
        translate: the adapter's chat-to-Messages translation (chat body, model) -> body.
    """

    def __init__(self, http: BatchHttp, translate: Callable[[bytes, str], bytes]) -> None:
        self._http = http
        self._translate = translate

    async def submit(self, lines: list[bytes], model: str, tag: str) -> str:
        """Translate and submit the lines in one ``POST /messages/batches``."""
        requests = []
        for i, raw in enumerate(lines):
            try:
                params = self._translate(bytes(_line.decode(raw).body), model)
            except (ProviderError, msgspec.MsgspecError):
                continue  # the normal path answers it with the reason
            requests.append(b'{"custom_id":"r%d","params":%s}' % (i, params))
        body = b'{"requests":[' + b",".join(requests) + b"]}"
        batch = _json.decode(await self._http.call("POST", "/messages/batches", body))
        return str(batch["id"])

    async def status(self, batch_id: str) -> Status:
        """``GET /messages/batches/{id}``."""
        batch = _json.decode(await self._http.call("GET", f"/messages/batches/{batch_id}"))
        status = str(batch["processing_status"])
        return Status(status == "ended", status)

    async def cancel(self, batch_id: str) -> Status:
        """``POST /messages/batches/{id}/cancel`` (``canceling``, then ``ended``)."""
        path = f"/messages/batches/{batch_id}/cancel"
        batch = _json.decode(await self._http.call("POST", path))
        status = str(batch["processing_status"])
        return Status(status == "ended", status)

    async def results(self, batch_id: str) -> list[tuple[int, bytes | None, str]]:
        """Every line at ``results_url``: succeeded ones as chat completions."""
        batch = _json.decode(await self._http.call("GET", f"/messages/batches/{batch_id}"))
        url = batch.get("results_url")
        if not url:
            return []
        found: list[tuple[int, bytes | None, str]] = []
        now = int(time.time())
        for raw in (await self._http.call("GET", str(url))).splitlines():
            if not raw.strip():
                continue
            line = _json.decode(raw)
            custom_id = str(line.get("custom_id", ""))
            if not (custom_id.startswith("r") and custom_id[1:].isdigit()):
                continue
            result = line.get("result") or {}
            kind = str(result.get("type", "errored"))
            if kind == "succeeded":
                try:
                    completion = completion_from_anthropic(result["message"], now)
                except (KeyError, TypeError, ValueError, msgspec.MsgspecError):
                    found.append((int(custom_id[1:]), None, "invalid_response"))
                    continue
                found.append((int(custom_id[1:]), _encode(completion), ""))
            else:
                found.append((int(custom_id[1:]), None, kind))
        return found
