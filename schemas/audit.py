"""The audit trail's records: who did what to the mesh, when, from where, with what outcome.

Brokers append one :class:`AuditRecord` per admin action (and per refused console request) to
the :data:`~schemas.jetstream.AUDIT_STREAM` stream, one chain for the whole stream: each record
names the stream sequence it was written at (``seq``), the sequence of the record before it
(``prev_seq``) and the SHA-256 of that record's stored bytes (``prev``, :func:`link_hash`).
JetStream gives a message its sequence, and a writer publishes with
``Nats-Expected-Last-Sequence``, so a record lands exactly at ``seq`` or not at all. A record
removed, reordered, copied or altered then breaks a link a verifier checks
(``edge_runtime.audit.chain``).

Records hold hashes of keys (``sha256:…``), never keys, and never prompt content. No I/O here.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

__all__ = [
    "ACTIONS",
    "AUDIT_DROPPED",
    "BATCH_CANCEL",
    "BREAKER_CLOSE",
    "BREAKER_OPEN",
    "BREAKER_RESET",
    "CACHE_PURGE",
    "CHAIN_RESET",
    "CONFIG_LOADED",
    "CONSOLE_REFUSED",
    "KEYS_RELOAD",
    "KEY_CREATE",
    "KEY_REVOKE",
    "KEY_UPDATE",
    "Actor",
    "AuditRecord",
    "Origin",
    "decode_record",
    "encode_record",
    "link_hash",
    "outcome_of",
]

#: A run-time key was created (params: tenant, hash and its grant), its grant changed
#: (params: hash and the new grant: models, limits, budget) or revoked (params: hash).
KEY_CREATE = "key.create"
KEY_UPDATE = "key.update"
KEY_REVOKE = "key.revoke"
#: A broker was asked to re-read the run-time keys now.
KEYS_RELOAD = "keys.reload"
#: A deployment's breaker forced open or closed, or handed back to its statistics.
BREAKER_OPEN = "breaker.open"
BREAKER_CLOSE = "breaker.close"
BREAKER_RESET = "breaker.reset"
#: Cache entries purged (params: all, or namespace and tenant, or key).
CACHE_PURGE = "cache.purge"
#: An admin cancelled a tenant's batch (params: id, tenant).
BATCH_CANCEL = "batch.cancel"
#: A broker started with this configuration (params: tenants' budgets and admin flags, models,
#: replicas): budgets change only through the file, so consecutive records show each change.
CONFIG_LOADED = "config.loaded"
#: The console refused a request (params: reason, method, path; repeats of the same refusal
#: within a minute are counted in the next record's ``repeats``).
CONSOLE_REFUSED = "console.refused"
#: A writer found the stream behind what it had written itself (deleted and made again).
CHAIN_RESET = "audit.chain_reset"
#: Refusal records a broker could not keep while JetStream was unavailable (params: count).
AUDIT_DROPPED = "audit.dropped"
#: Every action, for the CLI's ``--action`` choices.
ACTIONS = (
    KEY_CREATE,
    KEY_UPDATE,
    KEY_REVOKE,
    KEYS_RELOAD,
    BREAKER_OPEN,
    BREAKER_CLOSE,
    BREAKER_RESET,
    CACHE_PURGE,
    BATCH_CANCEL,
    CONFIG_LOADED,
    CONSOLE_REFUSED,
    CHAIN_RESET,
    AUDIT_DROPPED,
)


class Actor(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who asked: the key presented, by hash, and what the brokers know it as.

    Attributes:
        key: ``sha256:<hex>`` of the key presented (``""``: none).
        tenant: the tenant the key belongs to (``""``: unknown, or none presented).
        role: ``admin`` (an admin tenant's key), ``console`` (a ``[console] keys`` key),
            ``tenant`` (another tenant's key), ``unknown`` (a key no broker knows) or
            ``anonymous`` (no key).
    """

    key: str = ""
    tenant: str = ""
    role: str = "anonymous"


class Origin(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the request came from, as its sender reported it (NATS carries no sender identity:
    its permissions decide who may publish ``llm.admin.>``).

    Attributes:
        via: ``console`` (the bridge, for an HTTP caller), ``cli`` (``llm-edge``) or ``nats``
            (any other NATS client).
        peer: the console caller's address, or the CLI's ``user@host``.
        client: the sender's NATS connection: name, client id and server.
    """

    via: str = "nats"
    peer: str = ""
    client: str = ""


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One entry of the audit trail.

    Attributes:
        seq: the stream sequence this record was written at.
        prev_seq: the sequence of the record before it (0: none could be read).
        prev: :func:`link_hash` of that record's stored bytes (``""`` with ``prev_seq`` 0).
        time: when the action was taken (UTC, ISO 8601, milliseconds).
        writer: the broker that wrote it (host, pid and its service id).
        action: what was done (:data:`ACTIONS`).
        outcome: ``ok``, ``invalid``, ``refused``, ``not_found``, ``unavailable`` or ``failed``.
        status: the HTTP-like status the action was answered with.
        actor: who asked.
        origin: from where.
        params: the action's parameters (names, hashes, ids; never keys or content).
        detail: the refusal or error message, if any.
    """

    seq: int
    prev_seq: int
    prev: str
    time: str
    writer: str
    action: str
    outcome: str
    status: int
    actor: Actor
    origin: Origin
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    detail: str = ""


_OUTCOMES = {400: "invalid", 401: "refused", 403: "refused", 404: "not_found", 503: "unavailable"}
_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder(AuditRecord)


def encode_record(record: AuditRecord) -> bytes:
    """The bytes stored for a record (keys sorted: the same record, the same bytes)."""
    return _encoder.encode(record)


def decode_record(data: bytes) -> AuditRecord:
    """A stored record.

    Raises:
        msgspec.DecodeError: not JSON.
        msgspec.ValidationError: not an audit record (a field missing, unknown or mistyped).
    """
    try:
        return _decoder.decode(data)
    except RecursionError:
        raise msgspec.DecodeError("JSON is nested too deeply") from None


def link_hash(stored: bytes) -> str:
    """The link to a record: SHA-256 (hex) of the bytes JetStream holds for it.

    The stored bytes, not a re-encoding, are hashed: a verifier needs no canonical form, and
    any change to a record, however small, breaks the next record's link.
    """
    return hashlib.sha256(stored).hexdigest()


def outcome_of(status: int) -> str:
    """The outcome word of an HTTP-like status."""
    if status < 300:
        return "ok"
    return _OUTCOMES.get(status, "refused" if status < 500 else "failed")
