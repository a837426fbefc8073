"""PII screening of a request body: block it, or redact its texts, before anything else reads
it (the cache key, the providers), so entries and upstream calls hold no PII.

The texts screened are what a person writes: a chat request's message texts (string content
and text parts); an Anthropic request's message texts (string content, text blocks, the
texts of tool results) and its ``system`` prompt; a Responses request's ``instructions`` and
its input's texts (messages' and tool outputs').
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from broker.errors import PiiBlocked
from broker.tenancy.pii import PiiMode, Redactor, detect
from schemas.api import Api
from schemas.codec import decode_json

__all__ = ["screen"]

JSON = dict[str, Any]
#: A text inside the body: (the object holding it, its key, where it is for a person).
_Text = tuple[JSON, str, str]

_generic = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


def _block_texts(blocks: list[Any], where: str) -> Iterator[_Text]:
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            yield block, "text", where
        inner = block.get("content")  # an Anthropic tool result's own text
        if isinstance(inner, str):
            yield block, "content", where
        elif isinstance(inner, list):
            yield from _block_texts(inner, where)


def _response_texts(body: JSON) -> Iterator[_Text]:
    """A Responses request's texts: its instructions, then its input's."""
    if isinstance(body.get("instructions"), str):
        yield body, "instructions", "instructions"
    given = body.get("input")
    if isinstance(given, str):
        yield body, "input", "input"
        return
    for i, item in enumerate(given or ()):
        if not isinstance(item, dict):
            continue
        where = f"input[{i}]"
        for key in ("content", "output"):  # a message's content, a tool output's
            value = item.get(key)
            if isinstance(value, str):
                yield item, key, where
            elif isinstance(value, list):
                yield from _block_texts(value, where)


def _texts(body: JSON, api: Api) -> Iterator[_Text]:
    """The texts in the order the model reads them (an Anthropic ``system`` first)."""
    if api is Api.RESPONSES:
        yield from _response_texts(body)
        return
    if api is not Api.CHAT:
        system = body.get("system")
        if isinstance(system, str):
            yield body, "system", "system"
        elif isinstance(system, list):
            yield from _block_texts(system, "system")
    for i, message in enumerate(body.get("messages") or ()):
        where = f"messages[{i}]"
        content = message.get("content")
        if isinstance(content, str):
            yield message, "content", where
        elif isinstance(content, list):
            yield from _block_texts(content, where)


def screen(data: bytes, mode: PiiMode, api: Api) -> tuple[bytes, dict[str, str]] | None:
    """Block a body with PII, or redact it.

    Args:
        data: the request body (already validated against its contract).
        mode: the tenant's PII mode (not ``off``).
        api: what the body speaks.

    Returns:
        ``None`` when nothing was redacted (the body is unchanged), else the redacted body
        and what was redacted (value -> placeholder).

    Raises:
        PiiBlocked: ``mode`` is ``block`` and a text holds PII (naming where).
    """
    body = decode_json(_generic, data)
    redactor = Redactor()
    changed = False
    for holder, key, where in _texts(body, api):
        text = holder[key]
        if mode is PiiMode.BLOCK:
            found = detect(text)
            if found:
                kinds = ", ".join(sorted({f.kind for f in found}))
                raise PiiBlocked(
                    f"{where} contains {kinds}; this key may not send personal data or secrets",
                    param=f"{where}.content" if where != "system" else where,
                )
            continue
        redacted = redactor.redact(text)
        if redacted != text:
            holder[key] = redacted
            changed = True
    if not changed:
        return None
    return _encoder.encode(body), redactor.placeholders
