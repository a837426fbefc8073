"""The wire contract: msgspec structs, subject names and header names. No I/O here."""

from __future__ import annotations

from schemas import headers, subjects
from schemas.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    Message,
    ResponseMessage,
    StreamEnd,
    StreamOptions,
    Tool,
    ToolCall,
    ToolFunction,
    Usage,
)
from schemas.codec import (
    KNOWN_REQUEST_FIELDS,
    decode_chat_request,
    decode_closed_chat_request,
    request_extras,
)
from schemas.errors import ErrorDetail, ErrorEnvelope, error_body, status_type

__all__ = [
    "KNOWN_REQUEST_FIELDS",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatRequest",
    "Choice",
    "ChunkChoice",
    "Delta",
    "ErrorDetail",
    "ErrorEnvelope",
    "FunctionCall",
    "Message",
    "ResponseMessage",
    "StreamEnd",
    "StreamOptions",
    "Tool",
    "ToolCall",
    "ToolFunction",
    "Usage",
    "decode_chat_request",
    "decode_closed_chat_request",
    "error_body",
    "headers",
    "request_extras",
    "status_type",
    "subjects",
]
