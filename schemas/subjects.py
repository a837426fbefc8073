"""NATS subject names: the public surface every producer and service agrees on."""

from __future__ import annotations

__all__ = [
    "ADMIN_AUDIT_REPORT",
    "ADMIN_AUTHORIZE",
    "ADMIN_BATCH_CANCEL",
    "ADMIN_CACHE_SIZE",
    "ADMIN_KEYS",
    "ADMIN_KEYS_RELOAD",
    "ADMIN_PREFIX",
    "ADMIN_REQUESTS",
    "ADMIN_SPEND",
    "ADMIN_STATUS",
    "ADMISSION_STATS",
    "BATCH_EVENTS",
    "BATCH_FILE_CONTENT",
    "BATCH_FILE_GET",
    "BATCH_PREFIX",
    "BREAKER_ADMIN",
    "BROKER_PING",
    "BROKER_QUEUE",
    "CACHE_PURGE",
    "CANCEL",
    "CHAT",
    "COUNT_TOKENS",
    "DEFAULT_TENANT",
    "EMBEDDINGS",
    "MESSAGES",
    "MODELS",
    "ONCE_JOIN_PREFIX",
    "PROVIDER_PREFIX",
    "RESPONSES",
    "RESPONSES_CANCEL",
    "RESPONSES_DELETE",
    "RESPONSES_EVENTS",
    "RESPONSES_GET",
    "RESPONSES_HALT",
    "RESPONSES_INPUT_ITEMS",
    "RESPONSES_JOB",
    "TENANT_CHAT",
    "TENANT_COUNT_TOKENS",
    "TENANT_EMBEDDINGS",
    "TENANT_MESSAGES",
    "TENANT_PREFIX",
    "TENANT_RESPONSES",
    "WORKER_QUEUE",
    "batch_events",
    "provider_batch_subject",
    "provider_embeddings_subject",
    "provider_responses_subject",
    "provider_subject",
    "response_events",
    "tenant_of",
    "tenant_subject",
]

#: The tenant of a caller without a key when keys are optional (the tenant name owns files,
#: batches and cache entries).
DEFAULT_TENANT = "default"
#: Producers publish OpenAI chat-completions requests here (request/reply).
CHAT = "llm.chat"
#: The Anthropic Messages API over NATS (request/reply, same pipeline as ``llm.chat``).
MESSAGES = "llm.messages"
#: Anthropic's token counting (``POST /v1/messages/count_tokens``) over NATS (request/reply).
COUNT_TOKENS = "llm.messages.count_tokens"
#: OpenAI embeddings requests (request/reply; never streamed).
EMBEDDINGS = "llm.embeddings"
#: OpenAI Responses requests (request/reply; streamed as named events, or whole). A request
#: with ``background: true`` is answered at once with the queued response.
RESPONSES = "llm.responses"
#: A stored response, for the tenant that owns it: ``{"id"}`` (request/reply).
RESPONSES_GET = "llm.responses.get"
#: Delete a stored response: ``{"id"}`` (request/reply).
RESPONSES_DELETE = "llm.responses.delete"
#: Cancel a background response: ``{"id"}`` (request/reply).
RESPONSES_CANCEL = "llm.responses.cancel"
#: A stored response's input items, a page at a time: ``{"id", "after", "limit", "order"}``
#: (request/reply).
RESPONSES_INPUT_ITEMS = "llm.responses.input_items"
#: The work queue of background responses (JetStream; brokers consume it durably).
RESPONSES_JOB = "llm.responses.job"
#: A streamed background response's events: ``llm.responses.events.<id>`` (JetStream, written
#: by the broker that runs it; its callers follow them through ``llm.responses[.get]``).
RESPONSES_EVENTS = "llm.responses.events"
#: A background response was cancelled: body its id. Every broker listens (no queue group)
#: and stops its call if it runs it.
RESPONSES_HALT = "llm.responses.halt"
#: Tenant-bound entry points: ``llm.tenant.<tenant>.chat``, ``.messages`` (and its
#: ``.messages.count_tokens``), ``.embeddings`` and ``.responses``.
#: The NATS server's permissions decide who may publish under a tenant's prefix, so the subject
#: itself names the tenant (no API key needed); brokers honour it only when
#: ``auth.nats_tenant_subjects`` is on.
TENANT_PREFIX = "llm.tenant"
TENANT_CHAT = f"{TENANT_PREFIX}.*.chat"
TENANT_MESSAGES = f"{TENANT_PREFIX}.*.messages"
TENANT_COUNT_TOKENS = f"{TENANT_PREFIX}.*.messages.count_tokens"
TENANT_EMBEDDINGS = f"{TENANT_PREFIX}.*.embeddings"
TENANT_RESPONSES = f"{TENANT_PREFIX}.*.responses"
#: Brokers answer liveness probes here (the bridge's ``/ready`` asks it).
BROKER_PING = "llm.broker.ping"
#: The models brokers serve (OpenAI ``/v1/models`` list).
MODELS = "llm.models"
#: Cache purge: every broker purges its L1 and the shared L2 (no queue group).
CACHE_PURGE = "llm.admin.cache.purge"
#: Cancel a request (body: its request id; the cancel's reply subject must be the request's,
#: so only its caller can cancel it). Brokers and workers all listen (no queue group).
CANCEL = "llm.cancel"
#: Circuit breaker status and overrides: every broker applies them (no queue group).
BREAKER_ADMIN = "llm.admin.breaker"
#: The Batch API over NATS: ``llm.batch.create|submit|get|list|cancel`` (request/reply),
#: progress on ``llm.batch.events.<tenant>.<batch_id>``.
BATCH_PREFIX = "llm.batch"
#: A batch's progress: the batch object on ``llm.batch.events.<tenant>.<batch_id>`` at every
#: change. The tenant token lets the NATS server's permissions give each tenant's producers
#: its own events only (``llm.batch.events.acme.>``).
BATCH_EVENTS = f"{BATCH_PREFIX}.events"
#: A file's object (``{id}``), for the tenant that owns it (request/reply).
BATCH_FILE_GET = f"{BATCH_PREFIX}.file.get"
#: A piece of a file's bytes, ``{id, offset, length}``: a caller reads a file of any size
#: piece by piece, each piece one reply under the server's ``max_payload`` (request/reply).
BATCH_FILE_CONTENT = f"{BATCH_PREFIX}.file.content"
#: Admin commands (cache purge, breaker control) live under this prefix.
ADMIN_PREFIX = "llm.admin"
#: Every broker answers with its live state: identity, counters, deployments (breaker state,
#: latency, errors, in flight) and cache counters (no queue group: a scatter-gather).
ADMIN_STATUS = "llm.admin.status"
#: Every broker answers with its most recent request log records (never content), filtered by
#: ``{"tenant", "model", "status", "cache", "limit"}`` (no queue group).
ADMIN_REQUESTS = "llm.admin.requests"
#: Whether an ``Authorization`` header carries an admin key (``{"admin", "keys"}``; one broker).
ADMIN_AUTHORIZE = "llm.admin.authorize"
#: Tenants and run-time keys: ``{"action": "list|create|revoke", ...}`` (one broker).
ADMIN_KEYS = "llm.admin.keys"
#: Every broker re-reads the run-time keys from Redis now, then replies (no queue group): a
#: created key works, and a revoked one stops working, on every broker that replied.
ADMIN_KEYS_RELOAD = "llm.admin.keys.reload"
#: Spend per tenant and model in the current period, against budgets and limits (one broker).
ADMIN_SPEND = "llm.admin.spend"
#: Cancel any tenant's batch: ``{"id": batch_id}`` (one broker).
ADMIN_BATCH_CANCEL = "llm.admin.batch.cancel"
#: The shared L2's entries and bytes, measured when asked (one broker: they share it).
ADMIN_CACHE_SIZE = "llm.admin.cache.size"
#: Every broker publishes its deployments' statistics here once a second and every broker
#: listens (no queue group): latency, errors, load and learned rate limits, so routing and
#: admission see the whole mesh's traffic, not one broker's.
ADMISSION_STATS = "llm.admission.stats"
#: The bridge reports a console request it refused (no reply expected; one broker records it
#: in the audit trail): ``{"reason", "status", "method", "path"}``, with the caller's
#: ``Authorization`` and ``Llm-Admin-*`` headers.
ADMIN_AUDIT_REPORT = "llm.admin.audit.report"
#: Brokers forward cache misses to ``llm.provider.<provider>``.
PROVIDER_PREFIX = "llm.provider"
#: A worker running the first attempt of an idempotent stream takes joins of later attempts on
#: ``llm.once.<provider>.<unique>`` (request/reply, body: the joining attempt's reply
#: subject); the subject is named in the request's claim (``workers/once.py``).
ONCE_JOIN_PREFIX = "llm.once"

#: Queue groups: each message goes to one member of the group.
BROKER_QUEUE = "llm-edge-brokers"
WORKER_QUEUE = "llm-edge-workers"


def batch_events(tenant: str, batch_id: str) -> str:
    """Where a batch's progress events go: ``llm.batch.events.<tenant>.<batch_id>`` (``*`` for
    either makes a subscription's wildcard)."""
    return f"{BATCH_EVENTS}.{tenant}.{batch_id}"


def tenant_subject(tenant: str, api: str = "chat") -> str:
    """``llm.tenant.<tenant>.chat`` (or ``.messages``, ``.messages.count_tokens``,
    ``.embeddings``): where a tenant-bound producer publishes."""
    return f"{TENANT_PREFIX}.{tenant}.{api}"


def tenant_of(subject: str) -> str:
    """The tenant token of a tenant-bound subject (``""`` for any other subject)."""
    parts = subject.split(".")
    return parts[2] if len(parts) >= 4 and subject.startswith(TENANT_PREFIX + ".") else ""


def provider_subject(provider: str) -> str:
    """Return the subject a provider's workers consume.

    Args:
        provider: the provider name from the configuration (``openai``, ``mock`` ...).

    Returns:
        ``llm.provider.<provider>``.
    """
    return f"{PROVIDER_PREFIX}.{provider}"


def provider_embeddings_subject(provider: str) -> str:
    """Return the subject a provider's workers take embeddings calls on (only workers whose
    adapter computes embeddings subscribe to it).

    Args:
        provider: the provider name from the configuration.

    Returns:
        ``llm.provider.<provider>.embeddings``.
    """
    return f"{PROVIDER_PREFIX}.{provider}.embeddings"


def provider_batch_subject(provider: str) -> str:
    """Return the subject a provider's workers take native batch calls on (only workers whose
    adapter speaks the provider's Batch API subscribe to it; see :mod:`schemas.offload`).

    Args:
        provider: the provider name from the configuration.

    Returns:
        ``llm.provider.<provider>.batch``.
    """
    return f"{PROVIDER_PREFIX}.{provider}.batch"


def provider_responses_subject(provider: str) -> str:
    """Return the subject a provider's workers read and cancel the upstream's own background
    responses on (only workers whose upstream runs them subscribe; see
    :class:`~schemas.responses.UpstreamResponseCall`).

    Args:
        provider: the provider name from the configuration.

    Returns:
        ``llm.provider.<provider>.responses``.
    """
    return f"{PROVIDER_PREFIX}.{provider}.responses"


def response_events(response_id: str) -> str:
    """Where a streamed background response's events are kept:
    ``llm.responses.events.<id>``."""
    return f"{RESPONSES_EVENTS}.{response_id}"
