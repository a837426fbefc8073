"""The console's admission panel: who waits for capacity, for how long, and the brokers'
shares of each deployment's limits (pure: computed from every broker's status reply).

Each broker reports the requests waiting at its gates now, the waits of the last minute per
tenant and class as histogram buckets (added up here; percentiles of different brokers are
never averaged), refusals, its shares of limits and the pauses providers asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from schemas.latency import LATENCY_BUCKETS_S, percentile

__all__ = ["admission_view"]

_CLASSES = ("interactive", "default", "background", "batch")


def admission_view(statuses: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"queues": rows by tenant and class, "shares": rows by deployment and pool}``."""
    reports = [s["admission"] for s in statuses if isinstance(s.get("admission"), dict)]
    return {"queues": _queues(reports), "shares": _shares(reports), "brokers": len(reports)}


def _queues(reports: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(tenant: str, klass: str) -> dict[str, Any]:
        found = rows.get((tenant, klass))
        if found is None:
            found = rows[tenant, klass] = {
                "tenant": tenant,
                "class": klass,
                "waiting": 0,
                "where": {},
                "waited": 0,
                "refused": 0,
                "buckets": [0] * len(LATENCY_BUCKETS_S),
            }
        return found

    for report in reports:
        for waiting in report.get("waiting") or []:
            found = row(str(waiting.get("tenant", "")), str(waiting.get("class", "")))
            count = int(waiting.get("count", 0))
            found["waiting"] += count
            gate = str(waiting.get("gate", ""))
            found["where"][gate] = found["where"].get(gate, 0) + count
        for waits in report.get("waits") or []:
            found = row(str(waits.get("tenant", "")), str(waits.get("class", "")))
            found["waited"] += int(waits.get("waited", 0))
            found["refused"] += sum(int(n) for n in (waits.get("refused") or {}).values())
            for i, count in enumerate(waits.get("buckets") or []):
                if i < len(found["buckets"]):
                    found["buckets"][i] += int(count)
    out = []
    for found in rows.values():
        buckets = found.pop("buckets")
        found["p50_s"] = _rounded(percentile(buckets, 0.5))
        found["p99_s"] = _rounded(percentile(buckets, 0.99))
        out.append(found)
    order = {name: i for i, name in enumerate(_CLASSES)}
    return sorted(out, key=lambda r: (order.get(r["class"], len(order)), r["tenant"]))


def _shares(reports: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    paused: dict[str, float] = {}
    for report in reports:
        for name, left in (report.get("paused") or {}).items():
            paused[name] = max(paused.get(name, 0.0), float(left))
        for share in report.get("shares") or []:
            key = (str(share.get("deployment", "")), str(share.get("pool", "")))
            found = rows.setdefault(
                key, {"deployment": key[0], "pool": key[1], "limit": 0, "held": 0, "brokers": 0}
            )
            found["limit"] = max(found["limit"], int(share.get("limit", 0)))
            found["held"] += int(share.get("held", 0))
            found["brokers"] += 1 if int(share.get("held", 0)) else 0
    for found in rows.values():
        found["paused_s"] = paused.get(found["deployment"], 0.0)
    for name, left in paused.items():  # paused deployments without limits of their own
        if not any(deployment == name for deployment, _ in rows):
            rows[name, ""] = {
                "deployment": name,
                "pool": "",
                "limit": None,
                "held": None,
                "brokers": 0,
                "paused_s": left,
            }
    return sorted(rows.values(), key=lambda r: (r["deployment"], r["pool"]))


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 5)
