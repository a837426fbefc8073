"""JetStream assets every role agrees on: names of streams, KV buckets, object stores and
consumers, and the subjects and keys built inside them. No I/O here.

| asset                       | kind         | holds                                            |
|-----------------------------|--------------|--------------------------------------------------|
| :data:`CACHE_BUCKET`        | KV           | L2 answers by cache key (the NATS L2)            |
| :data:`SEMANTIC_BUCKET`     | KV           | the semantic tier's questions by context         |
| :data:`ONCE_BUCKET`         | KV           | one upstream call per idempotent request         |
| :data:`ADMISSION_BUCKET`    | KV           | each limited deployment's shares, by broker      |
| :data:`FILES_BUCKET`        | object store | batch input files, output and error files        |
| :data:`BATCHES_BUCKET`      | KV           | ``batch.<id>``: a batch's record; ``active.<id>``|
| :data:`RESULTS_BUCKET`      | KV           | ``<batch>.<hash(custom_id)>``: one line's result |
| :data:`LINES_STREAM`        | work queue   | ``llm.batch.line.<tenant>.<prio>.<batch>``       |
| :data:`AUDIT_STREAM`        | stream       | the audit trail, one record a message (limits)   |
| :data:`RESPONSES_BUCKET`    | KV           | ``<response id>``: a stored response (TTL)       |
| :data:`RESPONSE_JOBS_STREAM`| work queue   | ``llm.responses.job``: background responses      |
| :data:`RESPONSE_EVENTS_STREAM`| limits (TTL) | ``llm.responses.events.<id>``: a background     |
|                             |              | stream's events, for its callers to follow       |
"""

from __future__ import annotations

import hashlib

from schemas import subjects

__all__ = [
    "ADMISSION_BUCKET",
    "AUDIT_STREAM",
    "AUDIT_SUBJECT",
    "BATCHES_BUCKET",
    "BATCH_CONSUMER",
    "CACHE_BUCKET",
    "FILES_BUCKET",
    "LEGACY_CONSUMER",
    "LINES_STREAM",
    "LINE_SUBJECT",
    "ONCE_BUCKET",
    "ONCE_TTL_S",
    "RESPONSES_BUCKET",
    "RESPONSE_CONSUMER",
    "RESPONSE_EVENTS_STREAM",
    "RESPONSE_JOBS_STREAM",
    "RESULTS_BUCKET",
    "SEMANTIC_BUCKET",
    "admission_key",
    "batch_consumer",
    "kv_key",
    "kv_purge_subject",
    "line_subject",
    "queue_of",
    "result_key",
]

#: The NATS L2: whole answers by cache key.
CACHE_BUCKET = "llm_edge_cache"
#: The semantic tier's entries (question embeddings by context).
SEMANTIC_BUCKET = "llm_edge_semantic"
#: Claims and answers of idempotent calls: one upstream call per request id.
ONCE_BUCKET = "llm_edge_once"
#: How long an idempotent call's answer is kept for a retry: longer than a producer's
#: retries last.
ONCE_TTL_S = 300.0
#: Each limited deployment's capacity shared out among brokers (``alloc.<deployment>``).
ADMISSION_BUCKET = "llm_edge_admission"
#: Batch input, output and error files.
FILES_BUCKET = "llm_edge_files"
#: Batch records (``batch.<id>``) and the set of active batches (``active.<id>``).
BATCHES_BUCKET = "llm_edge_batches"
#: One result per batch line, by its ``custom_id``.
RESULTS_BUCKET = "llm_edge_batch_results"
#: The work queue of batch lines.
LINES_STREAM = "LLM_EDGE_BATCH_LINES"
#: The subject prefix of batch lines in :data:`LINES_STREAM`.
LINE_SUBJECT = f"{subjects.BATCH_PREFIX}.line"
#: Prefix of the durable consumers of :data:`LINES_STREAM`, one per tenant and priority.
BATCH_CONSUMER = "llm-edge-batch"
#: The one durable consumer of the old layout (``llm.batch.line.<batch>``), kept only to move
#: lines still queued under it.
LEGACY_CONSUMER = "llm-edge-batch-runner"
#: Stored responses (the Responses API's ``store``), by response id, kept for a TTL.
RESPONSES_BUCKET = "llm_edge_responses"
#: The work queue of background responses (one message per response: its id).
RESPONSE_JOBS_STREAM = "LLM_EDGE_RESPONSE_JOBS"
#: A streamed background response's events (``llm.responses.events.<id>``), kept as long as
#: stored responses, so its caller can follow it again (``starting_after``).
RESPONSE_EVENTS_STREAM = "LLM_EDGE_RESPONSE_EVENTS"
#: The brokers' one durable consumer of :data:`RESPONSE_JOBS_STREAM`.
RESPONSE_CONSUMER = "llm-edge-responses"
#: The audit trail (:mod:`schemas.audit`): kept by age and size, deletes and purges refused.
AUDIT_STREAM = "LLM_EDGE_AUDIT"
#: The one subject of :data:`AUDIT_STREAM`: a single chain, in the stream's order.
AUDIT_SUBJECT = "llm.audit.record"


def line_subject(tenant: str, priority: str, batch_id: str) -> str:
    """The work-queue subject of a batch's lines: ``llm.batch.line.<tenant>.<prio>.<batch>``."""
    return f"{LINE_SUBJECT}.{tenant}.{priority}.{batch_id}"


def queue_of(subject: str) -> tuple[str, str, str] | None:
    """``(tenant, priority, batch)`` of a line subject; ``None`` for the old layout."""
    parts = subject.split(".")
    if len(parts) != 6:
        return None
    return parts[3], parts[4], parts[5]


def batch_consumer(tenant: str, priority: str) -> str:
    """The durable consumer of one tenant's lines of one priority."""
    return f"{BATCH_CONSUMER}-{tenant}-{priority}"


def result_key(batch_id: str, custom_id: str) -> str:
    """The results-bucket key of one line: stable for a ``custom_id``, safe for any text."""
    return f"{batch_id}.{hashlib.sha256(custom_id.encode()).hexdigest()[:40]}"


def admission_key(deployment: str) -> str:
    """The :data:`ADMISSION_BUCKET` key of a deployment's shares: ``alloc.<name>.<digest>``,
    its name with what a KV key may not hold replaced, and a digest of the whole name so two
    names never share a key."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in deployment)
    digest = hashlib.blake2s(deployment.encode(), digest_size=4).hexdigest()
    return f"alloc.{safe[:64]}.{digest}"


def kv_key(key: str) -> str:
    """A cache key as a KV key: ``tenant:namespace:digest`` becomes ``tenant.namespace.digest``
    (KV keys are subject tokens; ``:`` is not allowed, ``.`` separates)."""
    return key.replace(":", ".")


def kv_purge_subject(bucket: str, prefix: str) -> str:
    """A bucket's subjects under a cache-key ``prefix``: all for ``""``, a namespace's for a
    prefix ending in ``:``, else the one key's."""
    subject = f"$KV.{bucket}.{kv_key(prefix)}"
    return subject + ">" if prefix.endswith(":") or not prefix else subject
