"""Context windows: how many tokens a request needs, counted before any call.

No provider's tokenizer is kept here (``tiktoken`` fetches its BPE files on first use;
Anthropic's and Gemini's are not public), so the prompt is estimated from the UTF-8 bytes of
the request's text (every string of its messages, system prompt and tools, or of a Responses
request's input, instructions and tools and the earlier turns of a conversation it continues
with ``previous_response_id``, which the upstream reads too: a picture, clip or file, inline
as base64 or linked by a URL or file id, counts as :data:`ATTACHMENT_TOKENS`, not as text),
in two bounds:

* upper, :data:`BYTES_PER_TOKEN` (3) bytes a token plus :data:`PER_PART_TOKENS` a message or
  part: deployments whose window it does not fit are skipped (and the ``context_fallback``
  taken);
* sure, :data:`SURE_BYTES_PER_TOKEN` (12) bytes a token: a request over every window by this
  bound, with no fallback that takes it, is refused with ``context_length_exceeded`` before
  any call.

Measured with OpenAI's ``cl100k_base`` / ``o200k_base`` (UTF-8 bytes a token): English prose
3.8 / 3.8, Markdown 3.7 / 3.7, Python 4.2 / 4.2, JSON 4.5 / 4.5, German 3.1 / 4.7, Chinese
3.2 / 4.5, Japanese 3.3 / 4.3, Russian 4.9 / 9.1. So the upper bound over-counts ordinary text
by 3 % to 200 % (a prompt near a small window goes to the bigger model a little early), and
under-counts only runs of digits (2.2) and random base64 (1.4): such a prompt is refused by
the upstream, and that refusal is retried once on the fallback (:mod:`broker.upstream.fallback`).
The sure bound is over every text measured (whitespace-only text, 40 bytes a token, is the one
known exception: it goes upstream, which answers for itself).

The requested answer length is the request's own cap (``max_tokens``,
``max_completion_tokens``, ``max_output_tokens``), read by
:meth:`~broker.request.Prepared.estimate`, the estimate the token limits use.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from broker.request import Prepared
from schemas.responses import HISTORY_FIELD, ResponsesRequest

__all__ = [
    "ATTACHMENT_TOKENS",
    "BYTES_PER_TOKEN",
    "PER_PART_TOKENS",
    "SURE_BYTES_PER_TOKEN",
    "Need",
    "need_of",
]

#: Upper estimate: UTF-8 bytes of text a token (no measured text has fewer but digit runs and
#: random base64).
BYTES_PER_TOKEN = 3
#: Lower estimate, for refusing: every measured text has fewer bytes a token than this.
SURE_BYTES_PER_TOKEN = 12
#: Tokens a message, content part or tool adds around its text (OpenAI counts 3 to 4).
PER_PART_TOKENS = 4
#: Tokens a picture, audio clip or document counts in the upper bound: the most one picture
#: costs Claude (about 1,600) and more than a high-detail tile set at OpenAI (1,105 for
#: 2048x768). Nothing in the sure bound (a small picture may cost 85).
ATTACHMENT_TOKENS = 1600
#: A string at least this long under one of these keys, or a ``data:`` URL, is an attachment.
_ATTACHMENT_KEYS = frozenset({"data", "url", "file_data", "image_url"})
_ATTACHMENT_MIN = 256
#: Parts (by ``type``) that are a picture, a clip or a file however they are given: inline or
#: linked by a URL or a file id, each is one attachment (a linked picture costs the upstream
#: as much as the same picture inline; its 40-byte URL would count 14 tokens). Chat's
#: ``image_url``, ``input_audio`` and ``file``; Anthropic's ``image`` and a ``url`` source;
#: the Responses API's ``input_image`` and ``input_file``.
_ATTACHMENT_PARTS = frozenset(
    {"image_url", "input_audio", "file", "image", "url", "input_image", "input_file"}
)
#: The request fields that are prompt (not the model name, sampling knobs ...): chat's and
#: Messages', then the Responses API's (``input``, ``instructions``, its ``text`` format).
_PROMPT_FIELDS = (
    "messages",
    "system",
    "tools",
    "tool_choice",
    "response_format",
    "functions",
    "input",
    "instructions",
    "text",
)


@dataclass(frozen=True, slots=True)
class Need:
    """What a request needs of a context window.

    Attributes:
        prompt: the prompt's tokens, upper estimate.
        sure: the prompt's tokens, lower estimate (it needs at least this many).
        max_tokens: the answer length it asks for (0: it sets no cap).
    """

    prompt: int
    sure: int
    max_tokens: int

    @property
    def total(self) -> int:
        """Prompt and answer, upper estimate."""
        return self.prompt + self.max_tokens


@dataclass(slots=True)
class _Tally:
    text_bytes: int = 0
    parts: int = 0
    attachments: int = 0

    def add(self, value: object, key: str = "") -> None:
        if isinstance(value, str):
            size = len(value) if value.isascii() else len(value.encode())
            if size >= _ATTACHMENT_MIN and (key in _ATTACHMENT_KEYS or value.startswith("data:")):
                self.attachments += 1
            else:
                self.text_bytes += size
        elif isinstance(value, dict):
            self.parts += 1
            if value.get("type") in _ATTACHMENT_PARTS:
                self.attachments += 1
                return
            for name, item in value.items():
                self.text_bytes += len(name)
                self.add(item, name)
        elif isinstance(value, list):
            for item in value:
                self.add(item, key)


class _Carried(msgspec.Struct):
    """The earlier turns the broker added to a continued Responses request."""

    history: msgspec.Raw = msgspec.field(name=HISTORY_FIELD, default_factory=msgspec.Raw)


class _Items(msgspec.Struct):
    items: list[object] = []


_carried = msgspec.json.Decoder(_Carried)
_items = msgspec.json.Decoder(_Items)


def need_of(prepared: Prepared) -> Need:
    """The request's tokens, upper and sure, and the answer length it asks for."""
    fields = msgspec.to_builtins(prepared.request)
    tally = _Tally()
    for name in _PROMPT_FIELDS:
        if name in fields:
            tally.add(fields[name], name)
    if isinstance(prepared.request, ResponsesRequest) and prepared.request.previous_response_id:
        history = _carried.decode(prepared.data).history
        if history:
            tally.add(_items.decode(history).items, "input")
    upper = (
        -(-tally.text_bytes // BYTES_PER_TOKEN)
        + tally.parts * PER_PART_TOKENS
        + tally.attachments * ATTACHMENT_TOKENS
    )
    return Need(upper, tally.text_bytes // SURE_BYTES_PER_TOKEN, prepared.estimate()[1])
