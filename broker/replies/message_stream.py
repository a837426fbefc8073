"""Anthropic streams and whole messages, each made from the other: the Messages API's
counterpart of :mod:`broker.replies.assemble`.

:class:`MessageAssembler` adds a stream's events up to the ``message`` they describe, as the
``anthropic`` SDK does (text, thinking and its signature, tool input JSON, citations, the
final stop reason and usage), and records where the stream cut each block's text;
:func:`replay_events` turns a stored message back into the events of a stream, cut at those
places when they fit. A stream with an event or a delta it does not know is relayed to its
caller whole but is not rebuilt (so never stored): what it adds up to is not known here.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from broker.replies.assemble import cut
from broker.request import Piece
from schemas import Usage
from schemas.usage import usage_from_anthropic

__all__ = ["MessageAssembler", "message_usage", "replay_events"]

JSON = dict[str, Any]
_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()

#: Deltas that add text to a field of their block: delta type -> (delta field, block field).
_TEXT_DELTAS = {
    "text_delta": ("text", "text"),
    "thinking_delta": ("thinking", "thinking"),
    "input_json_delta": ("partial_json", ""),  # kept apart: the block's input is parsed JSON
}
#: Events that change nothing in the message.
_QUIET = frozenset({"ping", "message_stop"})


def message_usage(usage: JSON | None) -> Usage | None:
    """An Anthropic ``usage`` in chat-completions terms: every input token is a prompt token
    (cache reads and writes included, and named in ``prompt_tokens_details``), output tokens
    are completion tokens."""
    if not isinstance(usage, dict):
        return None
    return usage_from_anthropic(usage)


class MessageAssembler:
    """Accumulates a stream's events; :meth:`message` gives the whole answer."""

    def __init__(self) -> None:
        self._message: JSON | None = None
        self._blocks: dict[int, JSON] = {}
        self._json: dict[int, list[str]] = {}
        self._splits: dict[int, list[int]] = {}
        #: every event was understood: the message is the whole answer
        self.complete = True

    def feed(self, piece: Piece) -> None:
        """Add one event (its data, named by ``piece.event``)."""
        try:
            data = _decoder.decode(piece.data)
            self._feed(str(data.get("type") or piece.event), data)
        except (msgspec.MsgspecError, KeyError, TypeError, ValueError, AttributeError):
            self.complete = False  # relayed as it is; what it adds up to is unknown

    def _feed(self, kind: str, data: JSON) -> None:
        if kind == "message_start":
            self._message = dict(data["message"])
            for index, block in enumerate(self._message.get("content") or ()):
                self._blocks[index] = dict(block)
        elif kind == "content_block_start":
            self._blocks[int(data["index"])] = dict(data["content_block"])
        elif kind == "content_block_delta":
            self._delta(int(data["index"]), data["delta"])
        elif kind == "content_block_stop":
            self._stop(int(data["index"]))
        elif kind == "message_delta" and self._message is not None:
            self._message.update(data.get("delta") or {})
            usage = self._message.setdefault("usage", {})
            usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
        elif kind not in _QUIET:
            self.complete = False

    def _delta(self, index: int, delta: JSON) -> None:
        block = self._blocks[index]
        kind = delta["type"]
        if kind in _TEXT_DELTAS:
            source, target = _TEXT_DELTAS[kind]
            text = str(delta[source])
            if target:
                block[target] = str(block.get(target) or "") + text
            else:
                self._json.setdefault(index, []).append(text)
            self._splits.setdefault(index, []).append(len(text))
        elif kind == "signature_delta":
            block["signature"] = delta["signature"]
        elif kind == "citations_delta":
            block["citations"] = [*(block.get("citations") or ()), delta["citation"]]
        else:
            self.complete = False

    def _stop(self, index: int) -> None:
        parts = self._json.pop(index, None)
        if parts is not None:
            text = "".join(parts)
            self._blocks[index]["input"] = json.loads(text) if text else {}

    @property
    def usage(self) -> Usage | None:
        """The usage so far, in chat-completions terms."""
        return message_usage(self._message.get("usage")) if self._message else None

    @property
    def service_tier(self) -> str | None:
        """The tier Anthropic named in the usage (``message_start``'s), as it named it."""
        usage = (self._message or {}).get("usage")
        tier = usage.get("service_tier") if isinstance(usage, dict) else None
        return tier if isinstance(tier, str) else None

    def message(self) -> JSON | None:
        """The ``message`` the events add up to, or ``None`` when they cannot be added up."""
        if self._message is None or not self.complete or self._json:
            return None
        return {**self._message, "content": [self._blocks[i] for i in sorted(self._blocks)]}

    def partial(self) -> JSON:
        """What is known of the answer when it cannot be rebuilt: its usage (for the meter)."""
        return {"usage": (self._message or {}).get("usage") or {}}

    def splits(self) -> list[list[int]]:
        """Per content block (in index order), the length of each streamed text piece."""
        return [self._splits.get(i, []) for i in sorted(self._blocks)]


def _event(kind: str, **fields: Any) -> Piece:
    return Piece(_encoder.encode({"type": kind, **fields}), kind)


def _block_events(index: int, block: JSON, lengths: list[int] | None) -> list[Piece]:
    """``content_block_start``, the deltas that fill the block, ``content_block_stop``."""
    kind = block.get("type")
    deltas: list[JSON] = []
    start = block
    if kind == "text" and isinstance(block.get("text"), str):
        start = {**block, "text": ""}
        start.pop("citations", None)
        pieces = cut(block["text"], lengths) or [block["text"]]
        deltas = [{"type": "text_delta", "text": piece} for piece in pieces if piece]
        deltas += [{"type": "citations_delta", "citation": c} for c in block.get("citations") or ()]
    elif kind == "thinking" and isinstance(block.get("thinking"), str):
        start = {**block, "thinking": "", "signature": ""}
        pieces = cut(block["thinking"], lengths) or [block["thinking"]]
        deltas = [{"type": "thinking_delta", "thinking": piece} for piece in pieces if piece]
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif "input" in block:  # tool_use, server_tool_use, mcp_tool_use: the input as JSON
        start = {**block, "input": {}}
        text = json.dumps(block["input"], separators=(",", ":"), ensure_ascii=False)
        pieces = cut(text, lengths) or [text]
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
    events = [_event("content_block_start", index=index, content_block=start)]
    events += [_event("content_block_delta", index=index, delta=delta) for delta in deltas]
    events.append(_event("content_block_stop", index=index))
    return events


def replay_events(body: bytes, splits: list[list[int]] | None = None) -> list[Piece]:
    """The events a stream of the stored ``message`` would have had (cut at ``splits``, the
    original stream's text boundaries, when they fit; else one delta per block).

    Raises:
        msgspec.MsgspecError: the body is not a JSON object.
    """
    message = _decoder.decode(body)
    content = message.get("content") or []
    usage = message.get("usage") or {}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    events = [_event("message_start", message=start)]
    for index, block in enumerate(content):
        lengths = splits[index] if splits is not None and index < len(splits) else None
        events += _block_events(index, block, lengths)
    delta = {key: message.get(key) for key in ("stop_reason", "stop_sequence")}
    events.append(_event("message_delta", delta=delta, usage=usage))
    events.append(_event("message_stop"))
    return events
