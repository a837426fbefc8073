"""Anthropic Messages API request contract (``POST /v1/messages``, ``llm.messages``).

Only what the translation to chat-completions reads is typed, with Anthropic's own limits, so
a malformed request is refused with the path of the field at fault (``tool_choice``,
``messages[0].content[1].type`` ...) instead of failing somewhere inside the translation.
Unknown fields and unknown content block types are accepted and ignored, as before.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from schemas.chat import MAX_OUTPUT_TOKENS, MAX_STOP_SEQUENCES
from schemas.codec import decode_json

__all__ = [
    "AnthropicRequest",
    "ContentBlock",
    "MessageParam",
    "Metadata",
    "Source",
    "ToolChoice",
    "ToolParam",
    "decode_messages_request",
]

JSONObject = dict[str, Any]


class Source(msgspec.Struct, omit_defaults=True):
    """An image's ``source``: ``base64`` (``media_type`` + ``data``) or ``url``."""

    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class ContentBlock(msgspec.Struct, omit_defaults=True):
    """One content block (``text``, ``image``, ``tool_use``, ``tool_result`` ...)."""

    type: str
    text: str | None = None
    source: Source | None = None
    id: str | None = None
    name: str | None = None
    input: JSONObject | None = None
    tool_use_id: str | None = None
    content: str | list[ContentBlock] | None = None
    is_error: bool | None = None


class MessageParam(msgspec.Struct, omit_defaults=True):
    """One turn: ``user`` or ``assistant``, a string or a list of blocks."""

    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolParam(msgspec.Struct, omit_defaults=True):
    """A tool offered to the model."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    description: str | None = None
    input_schema: JSONObject | None = None
    type: str | None = None


class ToolChoice(msgspec.Struct, omit_defaults=True):
    """``{"type": "auto" | "any" | "none"}`` or ``{"type": "tool", "name": ...}``."""

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(msgspec.Struct, omit_defaults=True):
    """``metadata``: only ``user_id`` is defined."""

    user_id: str | None = None


class AnthropicRequest(msgspec.Struct, omit_defaults=True):
    """``POST /v1/messages`` body, the payload of ``llm.messages``.

    ``stop_sequences`` is capped at the chat-completions limit the request is translated to.
    """

    model: Annotated[str, msgspec.Meta(min_length=1)]
    messages: Annotated[list[MessageParam], msgspec.Meta(min_length=1)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_OUTPUT_TOKENS)]
    system: str | list[ContentBlock] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, msgspec.Meta(ge=0)] | None = None
    stop_sequences: Annotated[list[str], msgspec.Meta(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: bool | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None


_decoder = msgspec.json.Decoder(AnthropicRequest)


def decode_messages_request(body: bytes) -> AnthropicRequest:
    """Decode and validate a Messages API body.

    Raises:
        msgspec.DecodeError: not JSON (or nested too deeply).
        msgspec.ValidationError: breaks the contract; the message names the path.
    """
    request = decode_json(_decoder, body)
    choice = request.tool_choice
    if choice is not None and choice.type == "tool" and not choice.name:
        raise msgspec.ValidationError(
            'tool_choice of type "tool" needs a `name` - at `$.tool_choice.name`'
        )
    return request
