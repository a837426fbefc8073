"""Anthropic's Message Batches: ``POST /messages/batches``, ``GET /messages/batches/{id}``,
``POST /messages/batches/{id}/cancel`` and the JSONL at the batch's ``results_url``.

Line ``i`` goes up as ``custom_id`` ``<tag>-<i>`` (Anthropic takes ``[a-zA-Z0-9_-]{1,64}``
only), its chat body translated to a Messages request by the adapter's own translation; a
line it cannot carry is left out and runs on the normal path (which answers it with that 400).
``succeeded`` results come back as OpenAI chat completions; ``errored``, ``canceled`` and
``expired`` ones run on the normal path.

A Message Batch carries no metadata, so the sub-batch's tag rides in every ``custom_id``:
to find the batch a submit created, ``GET /messages/batches`` (newest first) lists the
batches created since the submit, and the first line of an ended one's results names its
tag. A batch created since then that is still running cannot be told apart yet: ``find``
then says so and is asked again later (the worker's receipt, read first, answers at once
unless the worker died between the provider's answer and the receipt's write).
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import msgspec

from schemas.offload import SUBMIT_SETTLE_S
from workers.anthropic_translate import completion_from_anthropic
from workers.batches import FIND_PAGES, BatchHttp, Result, Status, check_window, undecided
from workers.errors import ErrorKind, ProviderError

__all__ = ["AnthropicBatches", "line_of"]

_json = msgspec.json.Decoder(dict[str, Any])
_encode = msgspec.json.Encoder().encode


class _Line(msgspec.Struct):
    body: msgspec.Raw


_line = msgspec.json.Decoder(_Line)
#: The longest tag that leaves room for ``-<line>`` in a 64-character ``custom_id``.
MAX_TAG = 56


def line_of(custom_id: str) -> int | None:
    """Line ``i`` of ``<tag>-<i>`` (or of ``r<i>``, as batches submitted before tags read)."""
    tail = custom_id.rsplit("-", 1)[-1] if "-" in custom_id else custom_id.removeprefix("r")
    return int(tail) if tail.isdigit() else None


def _created(batch: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(batch["created_at"])).timestamp()


def _read(content: bytes, now: int) -> Iterator[Result]:
    """The results file's lines, one by one (succeeded ones as chat completions)."""
    for raw in io.BytesIO(content):
        if not raw.strip():
            continue
        line = _json.decode(raw)
        i = line_of(str(line.get("custom_id", "")))
        if i is None:
            continue
        result = line.get("result") or {}
        kind = str(result.get("type", "errored"))
        if kind != "succeeded":
            yield i, None, kind
            continue
        try:
            completion = completion_from_anthropic(result["message"], now)
        except (KeyError, TypeError, ValueError, msgspec.MsgspecError):
            yield i, None, "invalid_response"
            continue
        yield i, _encode(completion), ""


class AnthropicBatches:
    """The Message Batches API of one Anthropic provider.

    Args:
        http: the adapter's client, key and error mapping.
        translate: the adapter's chat-to-Messages translation (chat body, model) -> body.
    """

    def __init__(self, http: BatchHttp, translate: Callable[[bytes, str], bytes]) -> None:
        self._http = http
        self._translate = translate

    async def submit(self, lines: Iterable[bytes], model: str, tag: str, not_after: float) -> str:
        """Translate and submit the lines in one ``POST /messages/batches``."""
        if len(tag) > MAX_TAG:
            raise ProviderError("anthropic", ErrorKind.BAD_REQUEST, f"sub-batch tag {tag!r}")
        prefix = tag.encode()
        body = bytearray(b'{"requests":[')  # the call's body, each request written into it once
        for i, raw in enumerate(lines):
            try:
                params = self._translate(bytes(_line.decode(raw).body), model)
            except (ProviderError, msgspec.MsgspecError):
                continue  # the normal path answers it with the reason
            if len(body) > len(b'{"requests":['):
                body += b","
            body += b'{"custom_id":"%s-%d","params":%s}' % (prefix, i, params)
        body += b"]}"
        check_window("anthropic", not_after)
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

    async def results(self, batch_id: str) -> Iterator[Result]:
        """Every line at ``results_url``: succeeded ones as chat completions."""
        batch = _json.decode(await self._http.call("GET", f"/messages/batches/{batch_id}"))
        url = batch.get("results_url")
        content = await self._http.call("GET", str(url)) if url else b""
        return _read(content, int(time.time()))

    async def find(self, tag: str, since: float) -> str | None:
        """Page ``GET /messages/batches`` back to ``since``; an ended batch created in the
        submit's window is ours when its first result's ``custom_id`` carries ``tag``."""
        until = since + SUBMIT_SETTLE_S + 60.0
        running = 0
        after = ""
        for _ in range(FIND_PAGES):
            query = "/messages/batches?limit=100" + (f"&after_id={after}" if after else "")
            page = _json.decode(await self._http.call("GET", query))
            batches = page.get("data") or []
            for batch in batches:
                created = _created(batch)
                if created < since:
                    return self._none_or_wait(running)
                if created > until:
                    continue  # created after the submit's window: not ours
                if batch.get("processing_status") != "ended" or not batch.get("results_url"):
                    running += 1
                elif await self._tagged(str(batch["results_url"]), tag):
                    return str(batch["id"])
            if not page.get("has_more") or not batches:
                return self._none_or_wait(running)
            after = str(batches[-1]["id"])
        raise undecided("anthropic", f"more than {FIND_PAGES * 100} batches since the submit")

    async def _tagged(self, results_url: str, tag: str) -> bool:
        head = await self._http.first_line(results_url)
        found = re.search(rb'"custom_id"\s*:\s*"([A-Za-z0-9_-]+)"', head)
        return found is not None and found.group(1).startswith(tag.encode() + b"-")

    @staticmethod
    def _none_or_wait(running: int) -> None:
        if running:
            raise undecided(
                "anthropic",
                f"{running} batch(es) created since the submit still run: their custom_ids "
                "are readable once they end",
            )
