"""The audit trail: a hash-chained JetStream stream of admin actions, written by brokers and
read by the CLI and the console."""

from edge_runtime.audit.chain import Break, ChainCheck
from edge_runtime.audit.origin import admin_headers, connection_label
from edge_runtime.audit.stream import (
    Stored,
    audit_stream_config,
    ensure_audit_stream,
    read_stored,
    stream_state,
    verify_trail,
)
from edge_runtime.audit.writer import DEFAULT_MAX_PENDING, AuditWriter, Entry, iso_time

__all__ = [
    "DEFAULT_MAX_PENDING",
    "AuditWriter",
    "Break",
    "ChainCheck",
    "Entry",
    "Stored",
    "admin_headers",
    "audit_stream_config",
    "connection_label",
    "ensure_audit_stream",
    "iso_time",
    "read_stored",
    "stream_state",
    "verify_trail",
]
