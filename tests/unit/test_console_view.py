"""What the console computes from the mesh's answers: rates, gone services, merged breakers,
latency percentiles, per-process cache counters, batch progress."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from broker.config import Config, ConfigError
from broker.status import BrokerStatus
from broker.tenancy.tenants import KeyRing, TenantConfig, hash_key
from edge_bridge.console.queues import admission_view
from edge_bridge.console.view import (
    GONE_AFTER_S,
    ServiceBook,
    batch_rows,
    cache_summary,
    deployment_rows,
)
from schemas.batch import BatchObject, BatchOffload, BatchRecord, BatchStatus, RequestCounts
from schemas.latency import LATENCY_BUCKETS_S, percentile
from schemas.offload import OffloadState, SubBatch


def stats(service_id: str, requests: int, role: str = "broker") -> dict[str, Any]:
    return {
        "id": service_id,
        "name": f"llm-edge-{role}",
        "version": "1.0",
        "started": "2030-01-01T00:00:00+00:00",
        "metadata": {"host": "h1", "pid": "7"},
        "endpoints": [{"data": {"in_flight": 1, "requests": requests, "errors": 0}}],
    }


def test_rates_come_from_two_polls() -> None:
    """Requests per second is the counter's difference over the time between polls."""
    book = ServiceBook()
    book.update([stats("a", 100)], now=1000.0)
    (row,) = book.update([stats("a", 150)], now=1002.0)
    assert (row["rate"], row["state"], row["host"]) == (25.0, "up", "h1")


def test_a_silent_service_is_shown_as_gone() -> None:
    """A service missing from the polls is kept, marked gone, once it is silent long enough."""
    book = ServiceBook()
    book.update([stats("a", 1), stats("b", 1)], now=1000.0)
    rows = book.update([stats("a", 2)], now=1000.0 + GONE_AFTER_S + 0.1)
    assert {r["id"]: r["state"] for r in rows} == {"a": "up", "b": "gone"}


def test_deployments_merge_across_brokers() -> None:
    """The worst breaker state shows, counts and loads add up, percentiles come from the
    summed buckets (not from each broker's percentiles)."""
    ten_ms, half_s = LATENCY_BUCKETS_S.index(0.01), LATENCY_BUCKETS_S.index(0.5)
    buckets_a = [0] * len(LATENCY_BUCKETS_S)
    buckets_b = [0] * len(LATENCY_BUCKETS_S)
    buckets_a[ten_ms] = 98  # (8 ms, 10 ms]
    buckets_b[half_s] = 2  # (400 ms, 500 ms]
    dep = {"provider": "p", "retry_after": 0.0, "in_flight": 1, "window_s": 60.0}
    rows = deployment_rows(
        [
            {
                "deployments": {
                    "d": {
                        **dep,
                        "state": "closed",
                        "answered": 98,
                        "errors": 0,
                        "rate": 1.5,
                        "mean_in_flight": 0.25,
                        "buckets": buckets_a,
                    }
                }
            },
            {
                "deployments": {
                    "d": {
                        **dep,
                        "state": "open",
                        "errors": 2,
                        "answered": 2,
                        "rate": 0.5,
                        "mean_in_flight": 0.5,
                        "buckets": buckets_b,
                        "retry_after": 4.5,
                    }
                }
            },
        ]
    )
    (row,) = rows
    assert row["state"] == "open"
    assert row["brokers"] == {"closed": 1, "open": 1}
    assert (row["answered"], row["in_flight"], row["error_rate"]) == (100, 2, 0.02)
    assert (row["rate"], row["mean_in_flight"], row["retry_after"]) == (2.0, 0.75, 4.5)
    assert 0.008 < row["p50_s"] <= 0.01  # broker a's bucket: 98 of the 100 answers
    assert 0.4 < row["p99_s"] <= 0.5  # the 99th answer is one of broker b's


def test_percentile_of_nothing_is_unknown() -> None:
    """No answers yet: no latency to show."""
    assert percentile([0] * len(LATENCY_BUCKETS_S), 0.5) is None


def test_cache_counters_count_once_per_process() -> None:
    """Two brokers in one process share its counters: the console counts them once."""
    cache = {
        "l1_hits": 3,
        "l1_misses": 1,
        "l2_hits": 0,
        "l2_misses": 1,
        "coalesced": 2,
        "saved_usd": 0.5,
        "l1_entries": 4,
        "l1_bytes": 40,
        "l2": True,
    }
    summary = cache_summary(
        [{"host": "h", "pid": 1, "cache": cache}, {"host": "h", "pid": 1, "cache": cache}]
    )
    assert summary is not None
    assert (summary["l1_hits"], summary["l1_ratio"], summary["l2_ratio"]) == (3, 0.75, 0.0)
    assert (summary["saved_usd"], summary["l1_entries"]) == (0.5, 4)


def test_batch_progress_rate_and_eta() -> None:
    """Half done in 10 s: 10 lines/s, 10 s to go."""
    batch = BatchObject(
        id="batch_1",
        endpoint="/v1/chat/completions",
        input_file_id="f",
        completion_window="24h",
        status=BatchStatus.IN_PROGRESS,
        created_at=0,
        in_progress_at=1000,
        request_counts=RequestCounts(total=200, completed=90, failed=10),
    )
    (row,) = batch_rows([BatchRecord(batch=batch, tenant="ops")], now=1010.0)
    assert (row["percent"], row["rate"], row["eta_s"], row["tenant"]) == (50, 10.0, 10, "ops")


def test_recent_requests_are_filtered_newest_first() -> None:
    """Filters by tenant, status class and cache result; the newest record comes first."""
    status = BrokerStatus(clock=lambda: 1.0)
    for i, (tenant, code, cache) in enumerate(
        [("a", 200, "MISS"), ("b", 503, "MISS"), ("a", 502, "BYPASS"), ("a", 200, "HIT-L1")]
    ):
        status.record(
            {"request_id": str(i), "tenant": tenant, "status": code, "cache": cache}, 0.01
        )
    assert [r["request_id"] for r in status.recent({"tenant": "a"})] == ["3", "2", "0"]
    assert [r["request_id"] for r in status.recent({"status": "5xx"})] == ["2", "1"]
    assert [r["request_id"] for r in status.recent({"cache": "HIT"})] == ["3"]


def test_admin_keys_open_the_console() -> None:
    """A console key or an admin tenant's key is an admin; another tenant's key is not."""
    ring = KeyRing(
        {
            "ops": TenantConfig(name="ops", keys=(hash_key("k-ops"),), admin=True),
            "team": TenantConfig(name="team", keys=(hash_key("k-team"),)),
        },
        console_keys=frozenset({hash_key("k-console")}),
    )
    verdicts = [ring.is_admin(f"Bearer {k}") for k in ("k-ops", "k-console", "k-team", "nope")]
    assert verdicts == [True, True, False, False]
    assert ring.is_admin(None) is False


@pytest.mark.parametrize("table", ['keys = ["plain-key"]', "keys = 3", 'other = "x"'])
def test_console_table_takes_only_key_hashes(table: str) -> None:
    """``[console] keys`` holds hashes, never keys; unknown knobs are named."""
    with pytest.raises(ConfigError, match="console"):
        Config.from_toml(f"[console]\n{table}\n")


def test_admission_view_adds_up_every_brokers_queues_and_shares() -> None:
    """Waiting requests and wait histograms add up across brokers (percentiles read off the
    summed buckets); shares of a limit add up to what the brokers hold; pauses show."""
    waits = [0] * len(LATENCY_BUCKETS_S)
    waits[LATENCY_BUCKETS_S.index(0.1)] = 4  # four waits of up to 100 ms
    one = {
        "admission": {
            "waiting": [{"gate": "d", "tenant": "a", "class": "background", "count": 3}],
            "waits": [
                {
                    "tenant": "a",
                    "class": "background",
                    "waited": 4,
                    "buckets": waits,
                    "refused": {"deployment": 1},
                },
            ],
            "shares": [{"deployment": "d", "pool": "calls", "held": 3, "limit": 8}],
            "paused": {"d": 2.5},
        }
    }
    two = {
        "admission": {
            "waiting": [
                {"gate": "broker", "tenant": "a", "class": "background", "count": 1},
                {"gate": "d", "tenant": "b", "class": "interactive", "count": 1},
            ],
            "waits": [],
            "shares": [{"deployment": "d", "pool": "calls", "held": 5, "limit": 8}],
            "paused": {},
        }
    }
    view = admission_view([one, two, {"admission": None}])
    assert view["brokers"] == 2
    assert [(r["class"], r["tenant"], r["waiting"]) for r in view["queues"]] == [
        ("interactive", "b", 1),
        ("background", "a", 4),
    ]
    background = view["queues"][1]
    assert background["where"] == {"d": 3, "broker": 1}
    assert background["waited"] == 4
    assert background["refused"] == 1
    assert 0.09 < background["p99_s"] <= 0.1
    assert view["shares"] == [
        {"deployment": "d", "pool": "calls", "limit": 8, "held": 8, "brokers": 2, "paused_s": 2.5}
    ]


def test_batch_row_says_where_its_lines_run() -> None:
    """330 lines, 300 in two OpenAI provider batches: one merged (194 succeeded, 6 given
    back), one running; each line counts once: 294 at OpenAI, 30 + 6 on the normal path.
    Cancelled with the second still pending, its 100 lines ran nowhere; a batch without
    offload runs on the normal path only."""
    batch = BatchObject(
        id="batch_2",
        endpoint="/v1/chat/completions",
        input_file_id="f",
        completion_window="24h",
        status=BatchStatus.IN_PROGRESS,
        created_at=0,
        request_counts=RequestCounts(total=330),
        offload=BatchOffload(providers={"openai": 300}, completed={"openai": 194}, fallback=6),
    )
    merged = SubBatch(
        index=0,
        provider="openai",
        deployment="d",
        model="m",
        upstream_model="u",
        lines=200,
        state=OffloadState.MERGED,
        provider_batch="batch_a",
        succeeded=194,
        fell_back=6,
    )
    running = msgspec.structs.replace(
        merged, index=1, lines=100, state=OffloadState.RUNNING, succeeded=0, fell_back=0
    )
    (row,) = batch_rows([BatchRecord(batch=batch, tenant="ops", offload=[merged, running])], 0.0)
    assert row["offload"] == "openai Batch API: 294 lines, 2 sub-batches; normal path: 36"
    dropped = msgspec.structs.replace(running, state=OffloadState.MERGED, provider_batch="")
    (row,) = batch_rows([BatchRecord(batch=batch, tenant="ops", offload=[merged, dropped])], 0.0)
    assert row["offload"] == (
        "openai Batch API: 194 lines, 1 sub-batch; normal path: 36; not run (cancelled): 100"
    )
    batch.offload = None
    (plain,) = batch_rows([BatchRecord(batch=batch, tenant="ops")], now=0.0)
    assert plain["offload"] is None
