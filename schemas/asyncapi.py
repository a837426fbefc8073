"""The AsyncAPI 3 document of the NATS API, built from the msgspec structs (pure: no I/O).

``scripts/asyncapi`` writes it to ``docs/asyncapi.json``; a test keeps that file current.
"""

from __future__ import annotations

from typing import Any

import msgspec

from schemas import headers, subjects
from schemas.admission import MeshReport
from schemas.anthropic import MessagesRequest
from schemas.batch import BatchObject, BatchSubmit, FileObject, FileRequest
from schemas.chat import ChatCompletion, ChatCompletionChunk, ChatRequest, ModelList, StreamEnd
from schemas.embeddings import EmbeddingList, EmbeddingsRequest
from schemas.errors import (
    CLIENT_CODES,
    CLIENT_ERROR_BY_STATUS,
    CLIENT_ERROR_FROM_500,
    CLIENT_ERROR_OTHERWISE,
    CLIENT_ERRORS,
    ErrorEnvelope,
)
from schemas.offload import OffloadAnswer, OffloadCall
from schemas.responses import ResponsesRequest, UpstreamResponseCall

__all__ = ["asyncapi_document"]

_REQUEST_HEADERS = {
    headers.REQUEST_ID: "correlation id (generated when absent)",
    headers.TIMEOUT_MS: "time budget in milliseconds",
    headers.AUTHORIZATION: "Bearer <API key>",
    headers.CACHE_CONTROL: "no-cache | no-store | max-age=N",
    headers.CACHE_NAMESPACE: "cache namespace",
    headers.TRACEPARENT: "W3C trace context",
    headers.IDEMPOTENT: "1: attempts under this request id share one upstream call",
    headers.PRIORITY: (
        "interactive | default | background (chat: the class it waits in when capacity is "
        "short, capped by the tenant's max_priority); high | normal | low (batches)"
    ),
    headers.KEEPALIVE_MS: (
        "ask for an empty Llm-Stream: keepalive message on the reply subject at this interval "
        "(ms) until the answer begins: silence then means lost, not slow"
    ),
    headers.ANTHROPIC_VERSION: "Anthropic API version, passed to the upstream",
    headers.ANTHROPIC_BETA: "Anthropic beta features, passed to the upstream (and keyed)",
}
_REPLY_HEADERS = {
    headers.STATUS: "HTTP-like status",
    headers.CACHE: "HIT-L1 | HIT-L2 | HIT-SEMANTIC | MISS | BYPASS",
    headers.SEMANTIC_SIMILARITY: "cosine of the earlier question that answered (HIT-SEMANTIC)",
    headers.CACHE_KEY: "the cache entry",
    headers.CACHED_INPUTS: "embeddings: how many inputs were answered from the cache",
    headers.PROVIDER: "provider that answered",
    headers.DEPLOYMENT: "deployment that answered",
    headers.ATTEMPTS: "attempts it took",
    headers.MODEL: "the configured model that answered (the one asked for, or its fallback)",
    headers.FALLBACK: (
        "context_window | content_policy: why another model than the one asked for answered"
    ),
    headers.RETRY_AFTER: "seconds, on 429/503",
    headers.STREAM: "chunk | end | error (streams); keepalive (empty, before the answer)",
    headers.SEQ: "position in a stream",
    headers.EVENT: "the stream event's name (llm.messages and llm.responses streams)",
    headers.COALESCED: "1: shared with an identical request in flight",
    headers.REPLAYED: "1: the answer of an earlier attempt with this request id",
    headers.RETRYABLE: "1: another attempt may succeed",
    headers.ERROR_CODE: "a worker's error reply: the failure's code, whatever API it speaks",
    headers.COST: "what the answer cost (USD)",
    headers.COST_SAVED: "what a cache hit saved (USD)",
    headers.SERVICE_TIER: "the service tier that served the answer (priced at its rates)",
    headers.QUEUE_MS: "milliseconds the request waited for capacity before its answer began",
    headers.FILE_SIZE: "llm.batch.file.content: the whole file's size in bytes",
    headers.FILE_OFFSET: "llm.batch.file.content: where this piece begins in the file",
    headers.FILE_DIGEST: "llm.batch.file.content: the whole file's digest, SHA-256=<base64url>",
    headers.TOKEN_COUNT: "upstream | estimate (llm.messages.count_tokens replies)",
    **dict.fromkeys(headers.RATELIMIT, "OpenAI rate-limit header (tenant 429s)"),
}


#: Each header's name in schemas/headers.py (``x-constant``: the clients' generated constants).
_CONSTANTS = {
    value: name
    for name in headers.__all__
    if isinstance(value := getattr(headers, name), str) and name.isupper()
}


def _headers_schema(described: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            k: {"type": "string", "description": v, "x-constant": _CONSTANTS[k]}
            for k, v in described.items()
        },
    }


def _client_errors() -> dict[str, Any]:
    """The producer clients' error tree and its status table (schemas/errors.py)."""
    return {
        "description": "The error classes every producer client raises, by Llm-Status: "
        "byStatus, else fromStatus500 for 500 and up, else otherwise. inferredCodes: the "
        "codes (and statuses) of errors a client infers without a reply.",
        "classes": {
            name: {"parent": parent, "description": description}
            for name, (parent, description) in CLIENT_ERRORS.items()
        },
        "byStatus": {str(status): name for status, name in CLIENT_ERROR_BY_STATUS.items()},
        "fromStatus500": CLIENT_ERROR_FROM_500,
        "otherwise": CLIENT_ERROR_OTHERWISE,
        "inferredCodes": dict(CLIENT_CODES),
    }


#: Payloads described by a JSON schema written here (admin commands are small JSON objects).
_OBJECT = {"type": "object"}
_ADMIN = {
    subjects.ADMIN_STATUS: "every broker's live state (scatter-gather: no queue group)",
    subjects.ADMIN_REQUESTS: "recent request log records, filtered by tenant, model, status",
    subjects.ADMIN_AUTHORIZE: "whether an Authorization header carries an admin key",
    subjects.ADMIN_KEYS: "tenants and run-time keys: {action: list|create|revoke, ...}",
    subjects.ADMIN_KEYS_RELOAD: "every broker re-reads the run-time keys, then replies",
    subjects.ADMIN_SPEND: "spend per tenant and model against budgets and limits",
    subjects.ADMIN_BATCH_CANCEL: "cancel any tenant's batch: {id}",
    subjects.ADMIN_CACHE_SIZE: "the shared L2's entries and bytes (one broker)",
    subjects.CACHE_PURGE: "every broker purges its L1 and the shared L2",
    subjects.BREAKER_ADMIN: "circuit breaker status and overrides (every broker)",
    subjects.BROKER_PING: "liveness probe: any broker answers",
    subjects.ADMIN_AUDIT_REPORT: "the bridge reports a console request it refused, for the "
    "audit trail (one broker; no reply)",
}
#: Channels whose messages get no reply.
_NO_REPLY = {
    "cancel",
    "responsesJob",
    "responsesHalt",
    "batchEvents",
    "admissionStats",
    subjects.ADMIN_AUDIT_REPORT.replace(".", "_"),
}
_BATCH_OPS = {
    "create": ("BatchCreate", "BatchObject"),
    "submit": ("BatchSubmit", "BatchObject"),
    "get": ("BatchId", "BatchObject"),
    "cancel": ("BatchId", "BatchObject"),
    "list": ("BatchListQuery", "Json"),
    "whoami": ("Empty", "Json"),
    "file.get": ("FileRequest", "FileObject"),
    "file.content": ("FileRequest", "FilePiece"),
}


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _channels() -> dict[str, dict[str, Any]]:
    """Every subject, with the messages it carries (request first)."""
    tenant = {"tenant": {"description": "a configured tenant name"}}
    channels: dict[str, dict[str, Any]] = {
        "chat": {
            "address": subjects.CHAT,
            "messages": {"request": _ref("messages", "ChatRequest")},
        },
        "tenantChat": {
            "address": subjects.tenant_subject("{tenant}"),
            "description": "The same request, bound to a tenant by the NATS server's "
            "permissions (brokers honour it with auth.nats_tenant_subjects = true).",
            "parameters": tenant,
            "messages": {"request": _ref("messages", "ChatRequest")},
        },
        "messages": {
            "address": subjects.MESSAGES,
            "description": "The Anthropic Messages API: replies are Anthropic `message` "
            "objects, or one message per Anthropic stream event (`Llm-Event`), or "
            "Anthropic errors.",
            "messages": {"request": _ref("messages", "MessagesRequest")},
        },
        "tenantMessages": {
            "address": subjects.tenant_subject("{tenant}", "messages"),
            "parameters": tenant,
            "messages": {"request": _ref("messages", "MessagesRequest")},
        },
        "countTokens": {
            "address": subjects.COUNT_TOKENS,
            "description": 'Anthropic\'s token count (`{"input_tokens": n}`): counted by an '
            "Anthropic deployment, estimated for others (`Llm-Token-Count` says which).",
            "messages": {"request": _ref("messages", "MessagesRequest")},
        },
        "tenantCountTokens": {
            "address": subjects.tenant_subject("{tenant}", "messages.count_tokens"),
            "parameters": tenant,
            "messages": {"request": _ref("messages", "MessagesRequest")},
        },
        "embeddings": {
            "address": subjects.EMBEDDINGS,
            "description": "OpenAI embeddings: one vector per input, each input cached on its "
            "own (only inputs the cache lacks go upstream).",
            "messages": {"request": _ref("messages", "EmbeddingsRequest")},
        },
        "tenantEmbeddings": {
            "address": subjects.tenant_subject("{tenant}", "embeddings"),
            "parameters": tenant,
            "messages": {"request": _ref("messages", "EmbeddingsRequest")},
        },
        "responses": {
            "address": subjects.RESPONSES,
            "description": "The OpenAI Responses API: replies are `response` objects, or "
            "one message per Responses stream event (`Llm-Event`), or OpenAI errors. With "
            "`background: true` the reply is the queued response at once; with `store` "
            "(the default) the response is kept for llm.responses.get.",
            "messages": {"request": _ref("messages", "ResponsesRequest")},
        },
        "responseEvents": {
            "address": f"{subjects.RESPONSES_EVENTS}.{{response_id}}",
            "description": "Internal: the kept events of a streamed background response "
            "(one message per Responses stream event, on a JetStream stream bounded like "
            "the stored responses), replayed to a caller that follows it again "
            "(llm.responses.get with stream and starting_after).",
            "parameters": {"response_id": {"description": "the response's id"}},
            "messages": {"event": _ref("messages", "ResponseStreamEvent")},
        },
        "tenantResponses": {
            "address": subjects.tenant_subject("{tenant}", "responses"),
            "parameters": tenant,
            "messages": {"request": _ref("messages", "ResponsesRequest")},
        },
        **{
            f"responses_{op}": {
                "address": subject,
                "description": description,
                "messages": {"request": _ref("messages", "ResponseQuery")},
            }
            for op, subject, description in (
                ("get", subjects.RESPONSES_GET, "a stored response, for its own tenant"),
                ("delete", subjects.RESPONSES_DELETE, "delete a stored response"),
                ("cancel", subjects.RESPONSES_CANCEL, "cancel a background response"),
                (
                    "input_items",
                    subjects.RESPONSES_INPUT_ITEMS,
                    "a stored response's input items (an OpenAI list: after, limit, order)",
                ),
            )
        },
        "responsesJob": {
            "address": subjects.RESPONSES_JOB,
            "description": "Internal: background responses, a JetStream work queue the "
            "brokers consume with a durable consumer (acknowledged once the result is stored).",
            "messages": {"job": _ref("messages", "Json")},
        },
        "responsesHalt": {
            "address": subjects.RESPONSES_HALT,
            "description": "Internal: a background response was cancelled (body: its id); "
            "every broker listens and stops its call if it runs it.",
            "messages": {"halt": _ref("messages", "Json")},
        },
        "reply": {
            "address": None,
            "description": "The caller's reply subject: one whole reply, or a stream of "
            "messages numbered by Llm-Seq and kinded by Llm-Stream.",
            "messages": {
                n: _ref("messages", m)
                for n, m in (
                    ("completion", "ChatCompletion"),
                    ("chunk", "ChatCompletionChunk"),
                    ("end", "StreamEnd"),
                    ("error", "Error"),
                    ("json", "JsonReply"),
                    ("embeddings", "EmbeddingList"),
                    ("filePiece", "FilePiece"),
                )
            },
        },
        "cancel": {
            "address": subjects.CANCEL,
            "messages": {"cancel": _ref("messages", "CancelRequest")},
        },
        "models": {
            "address": subjects.MODELS,
            "messages": {"request": _ref("messages", "Empty")},
        },
        "batchEvents": {
            "address": subjects.batch_events("{tenant}", "{batch_id}"),
            "description": "The batch object, published at every change of a batch, under "
            "the tenant that owns it: NATS permissions give each tenant's producers "
            "llm.batch.events.<tenant>.> and no other tenant's events.",
            "parameters": {
                "tenant": {"description": "the tenant that owns the batch"},
                "batch_id": {"description": "the batch's id"},
            },
            "messages": {"event": _ref("messages", "BatchObject")},
        },
        "provider": {
            "address": f"{subjects.PROVIDER_PREFIX}.{{provider}}",
            "description": "Internal: brokers forward cache misses to a provider's workers, in "
            "the API their caller spoke (Llm-Api: messages or count_tokens; absent: chat).",
            "parameters": {"provider": {"description": "a configured provider name"}},
            "messages": {"request": _ref("messages", "ChatRequest")},
        },
        "providerEmbeddings": {
            "address": f"{subjects.PROVIDER_PREFIX}.{{provider}}.embeddings",
            "description": "Internal: brokers send the inputs the cache lacks to a provider's "
            "workers (those whose adapter computes embeddings), with Llm-Api: embeddings.",
            "parameters": {"provider": {"description": "a configured provider name"}},
            "messages": {"request": _ref("messages", "EmbeddingsRequest")},
        },
        "providerBatch": {
            "address": f"{subjects.PROVIDER_PREFIX}.{{provider}}.batch",
            "description": "Internal: brokers run a sub-batch on the provider's own Batch API "
            "through its workers (those whose adapter has one): submit, status, results, "
            "cancel. The lines and the results travel through the files bucket's objects.",
            "parameters": {"provider": {"description": "a configured provider name"}},
            "messages": {
                "request": _ref("messages", "OffloadCall"),
                "reply": _ref("messages", "OffloadAnswer"),
            },
        },
        "providerResponses": {
            "address": f"{subjects.PROVIDER_PREFIX}.{{provider}}.responses",
            "description": "Internal: brokers read and cancel the background responses an "
            "upstream runs itself (OpenAI's background: true) through its workers, by the "
            "upstream's own id. The reply is the upstream's response object, or an error "
            "envelope (its status in Llm-Status).",
            "parameters": {"provider": {"description": "a configured provider name"}},
            "messages": {"request": _ref("messages", "UpstreamResponseCall")},
        },
        "streamJoin": {
            "address": f"{subjects.ONCE_JOIN_PREFIX}.{{provider}}.{{unique}}",
            "description": "Internal: a worker streaming the first attempt of an idempotent "
            "request takes later attempts in (body: the joining attempt's reply subject; "
            "answer: joined or full). The subject is named in the request's claim.",
            "parameters": {
                "provider": {"description": "the claiming worker's provider"},
                "unique": {"description": "a unique token of the claiming call"},
            },
            "messages": {"request": _ref("messages", "StreamJoin")},
        },
        "admissionStats": {
            "address": subjects.ADMISSION_STATS,
            "description": "Internal: every broker publishes its deployments' statistics "
            "once a second and every broker listens (latency, load, errors, pauses and "
            "limits the providers named).",
            "messages": {"report": _ref("messages", "MeshReport")},
        },
    }
    for op, (request, _) in _BATCH_OPS.items():
        channels[f"batch_{op.replace('.', '_')}"] = {
            "address": f"{subjects.BATCH_PREFIX}.{op}",
            "messages": {"request": _ref("messages", request)},
        }
    for subject, description in _ADMIN.items():
        channels[subject.replace(".", "_")] = {
            "address": subject,
            "description": description,
            "messages": {"request": _ref("messages", "Json")},
        }
    return channels


def _operations(channels: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Brokers receive every request subject and answer on the reply subject; batch events
    are sent by brokers."""
    operations: dict[str, Any] = {}
    for name in channels:
        if name == "reply":
            continue
        action = "send" if name in {"batchEvents", "admissionStats"} else "receive"
        operation: dict[str, Any] = {"action": action, "channel": _ref_channel(name)}
        if name not in _NO_REPLY:
            operation["reply"] = {"channel": _ref_channel("reply")}
        operations[name] = operation
    return operations


def _ref_channel(name: str) -> dict[str, str]:
    return {"$ref": f"#/channels/{name}"}


def asyncapi_document(version: str = "0.2.0") -> dict[str, Any]:
    """The document as a JSON-ready dict."""
    structs = [
        ChatRequest,
        ChatCompletion,
        ChatCompletionChunk,
        StreamEnd,
        ErrorEnvelope,
        MessagesRequest,
        ModelList,
        BatchObject,
        BatchSubmit,
        MeshReport,
        OffloadCall,
        OffloadAnswer,
        EmbeddingsRequest,
        EmbeddingList,
        FileObject,
        FileRequest,
        ResponsesRequest,
        UpstreamResponseCall,
    ]
    payloads, components = msgspec.json.schema_components(
        structs, ref_template="#/components/schemas/{name}"
    )
    request_headers = _headers_schema(_REQUEST_HEADERS)
    reply_headers = _headers_schema(_REPLY_HEADERS)
    by_name = dict(zip([s.__name__ for s in structs], payloads, strict=True))
    messages: dict[str, Any] = {
        "ChatRequest": {"payload": by_name["ChatRequest"], "headers": request_headers},
        "MessagesRequest": {"payload": by_name["MessagesRequest"], "headers": request_headers},
        "ResponsesRequest": {"payload": by_name["ResponsesRequest"], "headers": request_headers},
        "ResponseQuery": {
            "payload": {
                "type": "object",
                "required": ["id"],
                "properties": {
                    "id": {"type": "string"},
                    "after": {"type": "string"},
                    "limit": {"type": "integer"},
                    "order": {"type": "string", "enum": ["asc", "desc"]},
                },
            },
            "headers": request_headers,
        },
        "ChatCompletion": {"payload": by_name["ChatCompletion"], "headers": reply_headers},
        "ChatCompletionChunk": {
            "payload": by_name["ChatCompletionChunk"],
            "headers": reply_headers,
        },
        "StreamEnd": {"payload": by_name["StreamEnd"], "headers": reply_headers},
        "Error": {"payload": by_name["ErrorEnvelope"], "headers": reply_headers},
        "EmbeddingsRequest": {"payload": by_name["EmbeddingsRequest"], "headers": request_headers},
        "EmbeddingList": {"payload": by_name["EmbeddingList"], "headers": reply_headers},
        "ModelList": {"payload": by_name["ModelList"], "headers": reply_headers},
        "BatchObject": {"payload": by_name["BatchObject"], "headers": reply_headers},
        "BatchSubmit": {"payload": by_name["BatchSubmit"], "headers": request_headers},
        "MeshReport": {"payload": by_name["MeshReport"]},
        "UpstreamResponseCall": {"payload": by_name["UpstreamResponseCall"]},
        "ResponseStreamEvent": {
            "payload": {
                "type": "object",
                "required": ["type", "sequence_number"],
                "properties": {
                    "type": {"type": "string"},
                    "sequence_number": {"type": "integer"},
                },
                "description": "one Responses stream event as OpenAI defines it "
                "(response.created ... response.completed)",
            },
        },
        "OffloadCall": {"payload": by_name["OffloadCall"]},
        "OffloadAnswer": {"payload": by_name["OffloadAnswer"]},
        "FileRequest": {"payload": by_name["FileRequest"], "headers": request_headers},
        "FileObject": {"payload": by_name["FileObject"], "headers": reply_headers},
        "FilePiece": {
            "payload": {
                "type": "string",
                "format": "binary",
                "description": "the file's bytes from Llm-File-Offset on, as they are (empty "
                "at the end of the file)",
            },
            "headers": reply_headers,
            "description": "A piece of a file (llm.batch.file.content): ask again from "
            "Llm-File-Offset plus its length until Llm-File-Size bytes are read, then check "
            "Llm-File-Digest.",
        },
        "BatchCreate": {
            "payload": {
                "type": "object",
                "required": ["input_file_id", "endpoint"],
                "properties": {
                    "input_file_id": {"type": "string"},
                    "endpoint": {"type": "string"},
                    "completion_window": {"type": "string"},
                    "metadata": {"type": "object"},
                },
            },
            "headers": request_headers,
        },
        "BatchId": {
            "payload": {"type": "object", "properties": {"id": {"type": "string"}}},
            "headers": request_headers,
        },
        "BatchListQuery": {
            "payload": {
                "type": "object",
                "properties": {"limit": {"type": "integer"}, "after": {"type": "string"}},
            },
            "headers": request_headers,
        },
        "Empty": {"payload": {"type": "string", "maxLength": 0}, "headers": request_headers},
        "Json": {"payload": _OBJECT, "headers": request_headers},
        "JsonReply": {"payload": _OBJECT, "headers": reply_headers},
        "StreamJoin": {
            "payload": {"type": "string", "description": "the joining attempt's reply subject"},
            "headers": request_headers,
        },
        "CancelRequest": {
            "payload": {"type": "string", "description": "a request id"},
            "description": "Honoured only when published with the request's reply subject as "
            "its reply subject (only the request's caller knows it).",
        },
    }
    channels = _channels()
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "LLM Edge Broker NATS API",
            "version": version,
            "description": "OpenAI chat completions, embeddings and responses, the Anthropic "
            "Messages API, "
            "batches and admin commands over NATS request/reply; streams are sequences of "
            "messages on the reply subject.",
        },
        "channels": channels,
        "operations": _operations(channels),
        "x-client-errors": _client_errors(),
        # bytes of a server's max_payload a client leaves for headers: a body over the rest is
        # refused (413) before it is published
        "x-header-room": headers.HEADER_ROOM,
        "components": {"schemas": components, "messages": messages},
    }
