"""The AsyncAPI 3 document of the NATS API, built from the msgspec structs (pure: no I/O).

``scripts/asyncapi`` writes it to ``docs/asyncapi.json``; a test keeps that file current.
"""

from __future__ import annotations

from typing import Any

import msgspec

from schemas import headers, subjects
from schemas.anthropic import AnthropicRequest
from schemas.chat import ChatCompletion, ChatCompletionChunk, ChatRequest, StreamEnd
from schemas.errors import ErrorEnvelope

__all__ = ["asyncapi_document"]

_REQUEST_HEADERS = {
    headers.REQUEST_ID: "correlation id (generated when absent)",
    headers.TIMEOUT_MS: "time budget in milliseconds",
    headers.AUTHORIZATION: "Bearer <API key>",
    headers.CACHE_CONTROL: "no-cache | no-store | max-age=N",
    headers.CACHE_NAMESPACE: "cache namespace",
    headers.TRACEPARENT: "W3C trace context",
}
_REPLY_HEADERS = {
    headers.STATUS: "HTTP-like status",
    headers.CACHE: "HIT-L1 | HIT-L2 | MISS | BYPASS",
    headers.CACHE_KEY: "the cache entry",
    headers.PROVIDER: "provider that answered",
    headers.DEPLOYMENT: "deployment that answered",
    headers.ATTEMPTS: "attempts it took",
    headers.RETRY_AFTER: "seconds, on 429/503",
    headers.STREAM: "chunk | end | error (streams)",
    headers.SEQ: "position in a stream",
}


def _headers_schema(described: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {k: {"type": "string", "description": v} for k, v in described.items()},
    }


def asyncapi_document(version: str = "0.1.0") -> dict[str, Any]:
    """The document as a JSON-ready dict."""
    (request, completion, chunk, end, error, anthropic), components = (
        msgspec.json.schema_components(
            [
                ChatRequest,
                ChatCompletion,
                ChatCompletionChunk,
                StreamEnd,
                ErrorEnvelope,
                AnthropicRequest,
            ],
            ref_template="#/components/schemas/{name}",
        )
    )
    messages = {
        "MessagesRequest": {"payload": anthropic, "headers": _headers_schema(_REQUEST_HEADERS)},
        "ChatRequest": {"payload": request, "headers": _headers_schema(_REQUEST_HEADERS)},
        "ChatCompletion": {"payload": completion, "headers": _headers_schema(_REPLY_HEADERS)},
        "ChatCompletionChunk": {"payload": chunk, "headers": _headers_schema(_REPLY_HEADERS)},
        "StreamEnd": {"payload": end, "headers": _headers_schema(_REPLY_HEADERS)},
        "Error": {"payload": error, "headers": _headers_schema(_REPLY_HEADERS)},
        "CancelRequest": {
            "payload": {"type": "string", "description": "a request id"},
            "description": "Honoured only when published with the request's reply subject as "
            "its reply subject (only the request's caller knows it).",
        },
    }
    reply_refs = [
        {"$ref": f"#/components/messages/{name}"}
        for name in ("ChatCompletion", "ChatCompletionChunk", "StreamEnd", "Error")
    ]
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "LLM Edge Broker NATS API",
            "version": version,
            "description": "OpenAI chat completions over NATS request/reply; streams are "
            "sequences of messages on the reply subject.",
        },
        "channels": {
            "chat": {
                "address": subjects.CHAT,
                "messages": {"request": {"$ref": "#/components/messages/ChatRequest"}},
            },
            "tenantChat": {
                "address": subjects.tenant_subject("{tenant}"),
                "description": "The same request, bound to a tenant by the NATS server's "
                "permissions (brokers honour it with auth.nats_tenant_subjects = true).",
                "parameters": {"tenant": {"description": "a configured tenant name"}},
                "messages": {"request": {"$ref": "#/components/messages/ChatRequest"}},
            },
            "reply": {
                "address": None,
                "messages": dict(
                    zip(("completion", "chunk", "end", "error"), reply_refs, strict=True)
                ),
            },
            "messages": {
                "address": subjects.MESSAGES,
                "description": "The Anthropic Messages API: replies are Anthropic `message` "
                "objects, or one message per Anthropic stream event (`Llm-Event`), or "
                "Anthropic errors.",
                "messages": {"request": {"$ref": "#/components/messages/MessagesRequest"}},
            },
            "cancel": {
                "address": subjects.CANCEL,
                "messages": {"cancel": {"$ref": "#/components/messages/CancelRequest"}},
            },
        },
        "operations": {
            "chat": {
                "action": "receive",
                "channel": {"$ref": "#/channels/chat"},
                "reply": {"channel": {"$ref": "#/channels/reply"}},
            },
            "tenantChat": {
                "action": "receive",
                "channel": {"$ref": "#/channels/tenantChat"},
                "reply": {"channel": {"$ref": "#/channels/reply"}},
            },
            "messages": {"action": "receive", "channel": {"$ref": "#/channels/messages"}},
            "cancel": {"action": "receive", "channel": {"$ref": "#/channels/cancel"}},
        },
        "components": {"schemas": components, "messages": messages},
    }
