"""What the console shows, computed from what the mesh answered (pure: no I/O).

Each poll brings ``$SRV.STATS`` replies (every process) and ``llm.admin.status`` replies
(every broker). Rates are differences between two polls; a service missing from the polls
for :data:`GONE_AFTER_S` is shown as gone, and forgotten after :data:`FORGET_AFTER_S`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.batch import BatchRecord
from schemas.latency import LATENCY_BUCKETS_S, percentile
from schemas.offload import OffloadState

__all__ = [
    "FORGET_AFTER_S",
    "GONE_AFTER_S",
    "ServiceBook",
    "batch_rows",
    "cache_summary",
    "deployment_rows",
    "offload_text",
]

#: A service not heard from for this long is shown as gone (two missed polls and more).
GONE_AFTER_S = 3.0
#: ... and dropped from the page after this long.
FORGET_AFTER_S = 300.0
_SEVERITY = {"closed": 0, "half-open": 1, "open": 2}


@dataclass(slots=True)
class _Seen:
    row: dict[str, Any]
    last_seen: float
    counters: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (time, requests, messages)


def _started(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


@dataclass
class ServiceBook:
    """Every service seen, with its rates; services that went silent are kept as gone."""

    _seen: dict[str, _Seen] = field(default_factory=dict)

    def update(self, stats: Iterable[Mapping[str, Any]], now: float) -> list[dict[str, Any]]:
        """Fold one poll's ``$SRV.STATS`` replies in; return the rows by role (bridges,
        brokers, workers), gone ones last."""
        for reply in stats:
            service_id = str(reply.get("id", ""))
            if not service_id:
                continue
            self._fold(service_id, reply, now)
        rows = []
        for service_id, seen in list(self._seen.items()):
            silent = now - seen.last_seen
            if silent > FORGET_AFTER_S:
                del self._seen[service_id]
                continue
            row = dict(seen.row)
            if silent > GONE_AFTER_S:
                row.update(state="gone", in_flight=None, rate=None)
            rows.append(row)
        return sorted(rows, key=lambda r: (r["state"] == "gone", r["role"], r["host"], r["id"]))

    def _fold(self, service_id: str, reply: Mapping[str, Any], now: float) -> None:
        metadata = reply.get("metadata") or {}
        data: dict[str, Any] = {}
        for endpoint in reply.get("endpoints") or []:
            if isinstance(endpoint.get("data"), dict):
                data = endpoint["data"]
        started = _started(reply.get("started"))
        requests = data.get("requests")
        counted = float(requests if isinstance(requests, int) else 0)
        messages = float(data.get("msgs_in", 0) or 0)
        previous = self._seen.get(service_id)
        rate: float | None = None
        if previous is not None and now > previous.counters[0]:
            elapsed = now - previous.counters[0]
            # brokers count answered requests; other roles only their connection's messages
            index, current = (1, counted) if isinstance(requests, int) else (2, messages)
            rate = max(0.0, (current - previous.counters[index]) / elapsed)
        name = str(reply.get("name", ""))
        row = {
            "id": service_id,
            "role": name.removeprefix("llm-edge-"),
            "host": str(metadata.get("host", "")),
            "pid": str(metadata.get("pid", "")),
            "version": str(reply.get("version", "")),
            "uptime_s": round(now - started) if started is not None else None,
            "in_flight": data.get("in_flight"),
            "requests": requests,
            "errors": data.get("errors"),
            "rate": round(rate, 2) if rate is not None else None,
            "rate_of": "requests" if isinstance(requests, int) else "messages",
            "state": "up",
        }
        self._seen[service_id] = _Seen(row, now, (now, counted, messages))


def deployment_rows(statuses: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per deployment, across brokers: the worst breaker state, and over each broker's last
    minute the latency (from the summed histograms), error rate, rate and mean load."""
    merged: dict[str, dict[str, Any]] = {}
    for status in statuses:
        for name, dep in (status.get("deployments") or {}).items():
            row = merged.setdefault(
                name,
                {
                    "deployment": name,
                    "provider": dep.get("provider", ""),
                    "states": [],
                    "forced": False,
                    "retry_after": 0.0,
                    "in_flight": 0,
                    "window_s": 0.0,
                    "answered": 0,
                    "errors": 0,
                    "rate": 0.0,
                    "mean_in_flight": 0.0,
                    "buckets": [0] * len(LATENCY_BUCKETS_S),
                },
            )
            row["states"].append(str(dep.get("state", "closed")))
            row["forced"] = row["forced"] or bool(dep.get("forced"))
            row["retry_after"] = max(row["retry_after"], float(dep.get("retry_after", 0.0)))
            row["window_s"] = max(row["window_s"], float(dep.get("window_s", 0.0)))
            for key in ("in_flight", "answered", "errors"):
                row[key] += int(dep.get(key, 0))
            for key in ("rate", "mean_in_flight"):  # brokers' loads add up
                row[key] += float(dep.get(key, 0.0))
            for i, count in enumerate(dep.get("buckets") or []):
                if i < len(row["buckets"]):
                    row["buckets"][i] += int(count)
    rows = []
    for row in merged.values():
        states = row.pop("states")
        buckets = row.pop("buckets")
        row["state"] = max(states, key=lambda s: _SEVERITY.get(s, 0))
        row["brokers"] = {s: states.count(s) for s in sorted(set(states))}
        row["p50_s"] = _rounded(percentile(buckets, 0.5))
        row["p99_s"] = _rounded(percentile(buckets, 0.99))
        row["error_rate"] = row["errors"] / row["answered"] if row["answered"] else 0.0
        row["rate"] = round(row["rate"], 3)
        row["mean_in_flight"] = round(row["mean_in_flight"], 3)
        rows.append(row)
    return sorted(rows, key=lambda r: r["deployment"])


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 5)


def cache_summary(
    statuses: Iterable[Mapping[str, Any]], l2: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """Cache counters summed over processes (each process once: brokers that share a process
    share its counters) with each tier's hit ratio, and the shared L2's size as one broker
    measured it (``llm.admin.cache.stats``: every broker would give the same numbers)."""
    per_process: dict[tuple[str, str], Mapping[str, Any]] = {}
    for status in statuses:
        cache = status.get("cache")
        if isinstance(cache, dict):
            per_process[(str(status.get("host")), str(status.get("pid")))] = cache
    if not per_process:
        return None
    keys = ("l1_hits", "l1_misses", "l2_hits", "l2_misses", "coalesced", "saved_usd")
    total = {k: sum(float(c.get(k, 0) or 0) for c in per_process.values()) for k in keys}
    out: dict[str, Any] = {k: round(v, 6) if k == "saved_usd" else int(v) for k, v in total.items()}
    out["l1_entries"] = sum(int(c.get("l1_entries", 0)) for c in per_process.values())
    out["l1_bytes"] = sum(int(c.get("l1_bytes", 0)) for c in per_process.values())
    out["l2"] = any(bool(c.get("l2")) for c in per_process.values())
    for tier in ("l1", "l2"):
        asked = total[f"{tier}_hits"] + total[f"{tier}_misses"]
        out[f"{tier}_ratio"] = total[f"{tier}_hits"] / asked if asked else None
    size = l2 or {}
    out["l2_backend"] = size.get("backend")
    out["l2_entries"] = size.get("entries")
    out["l2_bytes"] = size.get("bytes")
    out["l2_scope"] = size.get("scope")
    return out


def offload_text(record: BatchRecord) -> str | None:
    """Where a batch's lines run, each counted once, in one line: ``openai Batch API: 294
    lines, 2 sub-batches; normal path: 36``. A provider counts the lines that succeeded
    there and those of its sub-batches still running (or pending) there; the normal path
    the lines no provider batch took and those one gave back; ``not run (cancelled)`` the
    lines of sub-batches our cancel ended before they ran. ``None`` when every line runs on
    the normal path."""
    if record.batch.offload is None or not record.offload:
        return None
    lines: Counter[str] = Counter()
    subs: Counter[str] = Counter()
    normal = record.batch.request_counts.total
    dropped = 0
    for sub in record.offload:
        normal -= sub.lines
        if sub.state is not OffloadState.MERGED:
            lines[sub.provider] += sub.lines
            subs[sub.provider] += 1
            continue
        if sub.provider_batch:
            lines[sub.provider] += sub.succeeded
            subs[sub.provider] += 1
        normal += sub.fell_back
        dropped += sub.lines - sub.succeeded - sub.fell_back
    parts = [
        f"{provider} Batch API: {lines[provider]} lines, {subs[provider]} sub-batch"
        + ("es" if subs[provider] != 1 else "")
        for provider in sorted(lines)
    ]
    parts.append(f"normal path: {normal}")
    if dropped:
        parts.append(f"not run (cancelled): {dropped}")
    return "; ".join(parts)


def batch_rows(records: Iterable[BatchRecord], now: float) -> list[dict[str, Any]]:
    """Every batch, newest first, with progress, rate (lines/s since it started), ETA and
    where its lines run."""
    rows = []
    for record in records:
        batch = record.batch
        counts = batch.request_counts
        done = counts.completed + counts.failed
        rate = eta = None
        if batch.in_progress_at is not None and done:
            end = batch.completed_at or batch.cancelled_at or batch.failed_at or now
            rate = done / max(1.0, end - batch.in_progress_at)
            eta = (counts.total - done) / rate if counts.total > done else 0.0
        rows.append(
            {
                "id": batch.id,
                "tenant": record.tenant,
                "status": str(batch.status.value),
                "total": counts.total,
                "completed": counts.completed,
                "failed": counts.failed,
                "percent": round(100 * done / counts.total) if counts.total else 0,
                "rate": round(rate, 2) if rate is not None else None,
                "eta_s": round(eta) if eta is not None else None,
                "created_at": batch.created_at,
                "output_file_id": batch.output_file_id,
                "error_file_id": batch.error_file_id,
                "offload": offload_text(record),
            }
        )
    return sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)
